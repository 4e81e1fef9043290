"""Shared fixtures: a tiny local model (no hub), small datasets, an isolated environment."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

# one torch thread per process: tiny models gain nothing from more, and on a 2-core CI machine the
# default oversubscribes the cores (a 10-step run: 46 s instead of 5 s); subprocess tests inherit it
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
os.environ.setdefault("WANDB_SILENT", "true")
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"

from neurosym.testing.openai_server import OpenAIServer  # noqa: E402
from neurosym.model.tiny import build_tiny_model  # noqa: E402


@pytest.fixture
def openai_server():
    """A started scripted OpenAI-compatible server (key ``.api_key``, model ``.model``); stopped at teardown."""
    server = OpenAIServer().start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """A tiny random Llama + char tokenizer saved with save_pretrained (loaded like a hub model)."""
    return build_tiny_model(tmp_path_factory.mktemp("models") / "tiny-llama", preset="llama")


@pytest.fixture(autouse=True)
def _isolate_env(monkeypatch, tmp_path):
    """No test reads the developer's W&B or OpenAI settings, or writes to their home."""
    for var in ("WANDB_API_KEY", "WANDB_MODE", "WANDB_PROJECT", "WANDB_DIR", "OPENAI_API_KEY", "OPENAI_BASE_URL"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("WANDB_CONFIG_DIR", str(tmp_path / ".wandb-config"))
    monkeypatch.setenv("WANDB_CACHE_DIR", str(tmp_path / ".wandb-cache"))


@pytest.fixture
def keyed(openai_server, monkeypatch):
    """The scripted server with its key exported in $NEUROSYM_TEST_TEACHER_KEY (tests.support.hybrid.KEY_ENV)."""
    from tests.support.hybrid import KEY_ENV
    monkeypatch.setenv(KEY_ENV, openai_server.api_key)
    return openai_server

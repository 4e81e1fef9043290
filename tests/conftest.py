"""Shared fixtures: a tiny local model (no hub), small datasets, an isolated environment."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
os.environ.setdefault("WANDB_SILENT", "true")
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"

try:  # the scripted OpenAI-compatible server (tests/openai_server.py)
    from openai_server import openai_server  # noqa: F401
except ImportError:  # pragma: no cover - while the module is being written
    pass

from neurosym.tiny import build_tiny_model  # noqa: E402


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


def write_jsonl(path: Path, rows) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as f:
        for row in rows:
            f.write((row if isinstance(row, str) else json.dumps(row)) + "\n")
    return path

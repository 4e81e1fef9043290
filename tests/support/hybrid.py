"""Shared pieces for end-to-end tests of the hybrid job against the scripted teacher server."""
from __future__ import annotations

from neurosym.testing.scripted_teacher import Teacher  # noqa: F401  (re-exported for the tests)
from tests.support.jobs import write_config

KEY_ENV = "NEUROSYM_TEST_TEACHER_KEY"


def hybrid_config(tmp_path, model_dir, server, name="hybrid", router=None, teacher=None, **sections):
    teacher_cfg = {"provider": "openai", "model": server.model, "base_url": server.base_url, "api_key_env": KEY_ENV,
                   "timeout_s": 3.0, "max_retries": 1, "price_per_1k_tokens": {"input": 0.001, "output": 0.002}}
    teacher_cfg.update(teacher or {})
    sections.setdefault("symbolic", {}).setdefault("max_new_tokens", 4)
    sections["symbolic"].setdefault("max_rewrites_per_batch", 2)
    sections.setdefault("reward", {"kind": "numeric_match"})
    sections.setdefault("remake", {"mix_ratio": 0.25})
    return write_config(tmp_path, model_dir, name=name, router=router or {"kind": "alternate", "every": 2},
                        teacher=teacher_cfg, **sections)

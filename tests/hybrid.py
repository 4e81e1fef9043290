"""Shared pieces for end-to-end tests of the hybrid job against the scripted teacher server."""
from __future__ import annotations

import re

from neurosym.steps.symbolic import REWRITE_SYSTEM, REWRITE_TAGS
from openai_server import default_responder
from jobs import write_config

KEY_ENV = "NEUROSYM_TEST_TEACHER_KEY"


class Teacher:
    """TextGrad calls get the server's default answers; rewrite calls get a clearer prompt
    (or, with ``leak=True``, one that gives the answer away, which the guard must refuse)."""

    def __init__(self, leak: bool = False):
        self.leak = leak

    def __call__(self, messages):
        system = "\n".join(str(m.get("content")) for m in messages if m.get("role") == "system")
        user = "\n".join(str(m.get("content")) for m in messages if m.get("role") != "system")
        if system == REWRITE_SYSTEM:
            question = re.search(r"<QUESTION>(.*?)</QUESTION>", user, re.S).group(1).strip()
            hint = ""
            if self.leak:
                ref = re.search(r"<REFERENCE_ANSWER>(.*?)</REFERENCE_ANSWER>", user, re.S)
                nums = re.findall(r"\d+", ref.group(1) if ref else user)
                hint = f" (It is {nums[-1]}.)" if nums else ""
            return f"{REWRITE_TAGS[0]}Compute carefully: {question} Reply as 'The answer is N.'{hint}{REWRITE_TAGS[1]}"
        return default_responder(messages)


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

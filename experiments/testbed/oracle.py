"""The oracle router (an upper bound only): it reads the hidden error type of each training question
(``meta.kind`` in the task's train.jsonl), which no real router can see.

Symbolic while the batch holds format errors and the system prompt has not been changed yet (one edit
fixes them all); LoRA otherwise. Needs a router hook the loop does not have yet
(``router.kind: function`` with ``router.function: experiments.testbed.oracle:make_oracle``; see the
README section "Does routing pay?").
"""
from __future__ import annotations

import json
from pathlib import Path

from classifiers.base import BatchStats, Decision, Router


class OracleRouter(Router):
    kind = "oracle"

    def __init__(self, kinds: dict[str, str]):
        super().__init__()
        self.kinds = kinds  # question -> "knowledge" | "format"

    def _choose(self, signals, batch: BatchStats, index: int) -> Decision:
        kinds = [self.kinds.get(p, "unknown") for p in batch.prompts]
        if signals.prompt_version == 0 and "format" in kinds:
            return Decision("symbolic", reason="oracle: format errors, prompt not fixed yet", index=index,
                            router=self.kind)
        return Decision("lora", reason="oracle: knowledge errors or prompt already fixed", index=index,
                        router=self.kind)


TRAIN: Path | None = None  # the task's train.jsonl; compare.py sets it before the run (same process)


def make_oracle(cfg, seed: int) -> OracleRouter:
    """Factory for the hook (``fn(router_cfg, seed) -> Router``)."""
    if TRAIN is None:
        raise RuntimeError("set experiments.testbed.oracle.TRAIN to the task's train.jsonl first")
    rows = [json.loads(l) for l in TRAIN.read_text().splitlines() if l.strip()]
    return OracleRouter({r["prompt"]: r["meta"]["kind"] for r in rows})

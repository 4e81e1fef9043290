"""The oracle router (an upper bound only): it knows the hidden error type of each training question,
which no real router can see. It reads it from the world itself: a question about an entity the student
never saw in pretraining is a knowledge error, one about a known entity a format error.

Symbolic while the batch holds format errors and the system prompt has not been changed yet (one edit
fixes them all); LoRA otherwise. Plugged in through the loop's router hook:

    router: {kind: function, function: "experiments.testbed.oracle:make_oracle"}
"""
from __future__ import annotations

import re

from classifiers.base import BatchStats, Decision, Router

WORLD_SEED = 0  # the world the task was generated in (compare.py and world.py use 0)


class OracleRouter(Router):
    kind = "oracle"

    def __init__(self, new_entities: set[str], routes: tuple):
        super().__init__(routes)
        self.new = new_entities

    def error_kind(self, prompt: str) -> str:
        return "knowledge" if set(re.findall(r"[A-Z][a-z]+", prompt)) & self.new else "format"

    def _choose(self, signals, batch: BatchStats, index: int, available) -> Decision:
        kinds = {self.error_kind(p) for p in batch.prompts}
        if "symbolic" in available and signals.prompt_version == 0 and "format" in kinds:
            return Decision("symbolic", reason="oracle: format errors, prompt not fixed yet", index=index,
                            router=self.kind)
        return Decision(self.default_route, reason="oracle: knowledge errors or prompt already fixed",
                        index=index, router=self.kind)


def make_oracle(cfg, seed: int, routes: tuple) -> OracleRouter:
    """The factory ``router.function`` names: ``(router_cfg, seed, routes) -> Router``."""
    from experiments.testbed import world as W

    return OracleRouter({e.name for e in W.make_world(WORLD_SEED).new}, routes)

"""The oracle router (an upper bound only): it knows the hidden error type of each training question,
which no real router can see. It reads it from the world itself: a question about an entity the student
never saw in pretraining is a knowledge error, one about a known entity a format error.

Symbolic while the batch holds format errors and the system prompt has not been changed yet (one edit
fixes them all); LoRA otherwise. Plugged in through the loop's router hook:

    router: {kind: function, function: "experiments.testbed.oracle:make_oracle"}

In the ``shift`` world (worlds.py) the format target changes at decision :data:`SHIFT_AT`; the oracle,
the one router allowed to know the world's schedule, edits again once the data has shifted (until a
new prompt version lands, at most :data:`TRIES_AFTER_SHIFT` times: when phase B's format is already
the prompt's and what is left to undo is in the adapter, no edit can land), then goes back to LoRA.
compare.py sets ``SHIFT_AT`` for that world.
"""
from __future__ import annotations

import re

from classifiers.base import BatchStats, Decision, Router

WORLD_SEED = 0  # the world the task was generated in (compare.py and world.py use 0)
SHIFT_AT: int | None = None  # the decision index (0-based step) at which the shift world's data changes
TRIES_AFTER_SHIFT = 2


class OracleRouter(Router):
    kind = "oracle"

    def __init__(self, new_entities: set[str], routes: tuple, shift_at: int | None = None):
        super().__init__(routes)
        self.new = new_entities
        self.shift_at = shift_at
        self.version_at_shift: int | None = None  # the prompt version in force when the data shifted
        self.tries_after_shift = 0

    def error_kind(self, prompt: str) -> str:
        return "knowledge" if set(re.findall(r"[A-Z][a-z]+", prompt)) & self.new else "format"

    def _choose(self, signals, batch: BatchStats, index: int, available) -> Decision:
        kinds = {self.error_kind(p) for p in batch.prompts}
        fixed_at, shifted = 0, self.shift_at is not None and index >= self.shift_at
        if shifted:
            if self.version_at_shift is None:
                self.version_at_shift = signals.prompt_version
            fixed_at = self.version_at_shift
        if ("symbolic" in available and signals.prompt_version == fixed_at and "format" in kinds
                and not (shifted and self.tries_after_shift >= TRIES_AFTER_SHIFT)):
            self.tries_after_shift += shifted
            return Decision("symbolic", reason="oracle: format errors, prompt not fixed yet", index=index,
                            router=self.kind)
        return Decision(self.default_route, reason="oracle: knowledge errors or prompt already fixed",
                        index=index, router=self.kind)

    def _extra_state(self) -> dict:
        return {"version_at_shift": self.version_at_shift, "tries_after_shift": self.tries_after_shift}

    def _load_extra_state(self, state: dict) -> None:
        self.version_at_shift = state.get("version_at_shift")
        self.tries_after_shift = int(state.get("tries_after_shift", 0))


def make_oracle(cfg, seed: int, routes: tuple) -> OracleRouter:
    """The factory ``router.function`` names: ``(router_cfg, seed, routes) -> Router``."""
    from experiments.testbed import world as W

    return OracleRouter({e.name for e in W.make_world(WORLD_SEED).new}, routes, SHIFT_AT)

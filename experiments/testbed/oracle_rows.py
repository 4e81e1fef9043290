"""The per-row oracle (an upper bound only): it knows each training row's hidden error type, which no
real router can see, and routes as the issue's per-example prototype did: a row the student still gets
wrong that a prompt can fix (a format error) goes to a prompt edit, every other row to that step's LoRA
update; edits are repeated for as long as such rows come back wrong (the student's answers are the
orchestrator's per-row inspection). It takes ``error_kind(prompt)`` from :mod:`oracle`, so it knows what
that oracle knows, on every world.

    router: {kind: function, function: "experiments.testbed.oracle_rows:make_oracle_rows"}
"""
from __future__ import annotations

from classifiers.base import BatchStats, Decision, Router


class RowOracle(Router):
    kind = "oracle_rows"
    learns_from_gain = True  # the orchestrator then inspects each batch's rows (this router learns nothing)
    per_row = True

    def __init__(self, error_kind, routes: tuple):
        super().__init__(routes)
        self.error_kind = error_kind

    def _choose(self, signals, batch: BatchStats, index: int, available) -> Decision:
        other = next((r for r in available if r != self.default_route), None)
        parts = {r: [] for r in available[1:] + available[:1]}
        for i, prompt in enumerate(batch.prompts):
            wrong = i < len(batch.rows) and batch.rows[i].correct is False
            fixable = self.error_kind(prompt) == "format" and wrong and other is not None
            parts[other if fixable else self.default_route].append(i)
        parts = {r: ix for r, ix in parts.items() if ix}
        headline = next((r for r in parts if r != self.default_route), self.default_route)
        return Decision(headline, reason=f"oracle: {len(parts.get(other, []))} format rows still wrong -> {other}",
                        index=index, router=self.kind, parts=parts)


def make_oracle_rows(cfg, seed: int, routes: tuple) -> RowOracle:
    """The factory ``router.function`` names: ``(router_cfg, seed, routes) -> Router``."""
    from experiments.testbed.oracle import make_oracle

    return RowOracle(make_oracle(cfg, seed, routes).error_kind, routes)

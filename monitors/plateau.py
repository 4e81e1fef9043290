"""Plateau detector: on once the loss has been flat for ``patience`` consecutive steps."""
from __future__ import annotations

from typing import Any


class PlateauDetector:
    """Counts consecutive steps with ``|rel_slope| < threshold``; on when the count >= patience.

    A step whose slope is not yet meaningful (``rel_slope=None``: the window is not full) or not
    flat resets the count, so the plateau turns off as soon as the loss moves again.
    """

    def __init__(self, threshold: float, patience: int) -> None:
        if threshold <= 0:
            raise ValueError(f"threshold must be > 0 (got {threshold})")
        if patience < 1:
            raise ValueError(f"patience must be >= 1 (got {patience})")
        self.threshold = float(threshold)
        self.patience = int(patience)
        self._flat_steps = 0

    def update(self, rel_slope: float | None) -> bool:
        """Record one step's relative slope; returns whether the plateau is on."""
        if rel_slope is not None and abs(rel_slope) < self.threshold:
            self._flat_steps += 1
        else:
            self._flat_steps = 0
        return self.on

    @property
    def flat_steps(self) -> int:
        return self._flat_steps

    @property
    def on(self) -> bool:
        return self._flat_steps >= self.patience

    def state_dict(self) -> dict[str, Any]:
        return {"flat_steps": self._flat_steps}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._flat_steps = int(state["flat_steps"])

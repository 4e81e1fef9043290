"""Fixed-policy routers: always one route, alternate every N batches, on plateau, or at random."""
from __future__ import annotations

from typing import Any

import numpy as np

from classifiers.base import BatchStats, Decision, Router
from monitors.signals import Signals


class AlwaysLora(Router):
    """Every batch takes a LoRA step."""

    kind = "always_lora"

    def _choose(self, signals: Signals, batch: BatchStats, index: int) -> Decision:
        return Decision("lora", reason="always lora", index=index, router=self.kind)


class AlwaysSymbolic(Router):
    """Every batch takes a symbolic update (while one is available)."""

    kind = "always_symbolic"

    def _choose(self, signals: Signals, batch: BatchStats, index: int) -> Decision:
        return Decision("symbolic", reason="always symbolic", index=index, router=self.kind)


class Alternate(Router):
    """A symbolic update on every ``every``-th batch (batches every, 2*every, ... counting from 1)."""

    kind = "alternate"

    def __init__(self, every: int) -> None:
        super().__init__()
        if every < 1:
            raise ValueError(f"every must be >= 1 (got {every})")
        self.every = int(every)

    def _choose(self, signals: Signals, batch: BatchStats, index: int) -> Decision:
        if (index + 1) % self.every == 0:
            return Decision("symbolic", reason=f"batch {index + 1} is a multiple of {self.every}",
                            index=index, router=self.kind)
        return Decision("lora", reason=f"symbolic every {self.every} batches", index=index, router=self.kind)


class PlateauRouter(Router):
    """Symbolic while the plateau monitor is on, LoRA otherwise."""

    kind = "plateau"

    def _choose(self, signals: Signals, batch: BatchStats, index: int) -> Decision:
        if signals.plateau:
            return Decision("symbolic", reason="loss plateau", index=index, router=self.kind)
        return Decision("lora", reason="no plateau", index=index, router=self.kind)


class RandomRouter(Router):
    """Symbolic with probability ``p``, from its own seeded generator (saved in the state)."""

    kind = "random"

    def __init__(self, p: float, seed: int) -> None:
        super().__init__()
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"p must be in [0, 1] (got {p})")
        self.p = float(p)
        self.rng = np.random.default_rng(seed)

    def _choose(self, signals: Signals, batch: BatchStats, index: int) -> Decision:
        route = "symbolic" if self.rng.random() < self.p else "lora"
        return Decision(route, explored=True, reason=f"random (p_symbolic={self.p})", index=index,
                        router=self.kind)

    def _extra_state(self) -> dict[str, Any]:
        return {"rng": self.rng.bit_generator.state}

    def _load_extra_state(self, state: dict[str, Any]) -> None:
        self.rng.bit_generator.state = state["rng"]

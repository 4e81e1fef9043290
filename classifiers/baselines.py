"""Fixed-policy routers: always one route, alternate every N batches, on plateau, or at random."""
from __future__ import annotations

from typing import Any

import numpy as np

from classifiers.base import ROUTES, BatchStats, Decision, Router
from monitors.signals import Signals


class AlwaysLora(Router):
    """Every batch takes the default route (a LoRA step)."""

    kind = "always_lora"

    def _choose(self, signals: Signals, batch: BatchStats, index: int, available) -> Decision:
        return Decision(self.default_route, reason=f"always {self.default_route}", index=index, router=self.kind)


class AlwaysSymbolic(Router):
    """Every batch takes the first non-default route (the symbolic update) while one is available."""

    kind = "always_symbolic"

    def _choose(self, signals: Signals, batch: BatchStats, index: int, available) -> Decision:
        return Decision(available[1], reason=f"always {available[1]}", index=index, router=self.kind)


class Alternate(Router):
    """A non-default update on every ``every``-th batch (batches every, 2*every, ... counting from 1),
    cycling through the available non-default routes; the default route otherwise."""

    kind = "alternate"

    def __init__(self, every: int, routes=ROUTES) -> None:
        super().__init__(routes)
        if every < 1:
            raise ValueError(f"every must be >= 1 (got {every})")
        self.every = int(every)

    def _choose(self, signals: Signals, batch: BatchStats, index: int, available) -> Decision:
        if (index + 1) % self.every == 0:
            others = available[1:]
            route = others[((index + 1) // self.every - 1) % len(others)]
            return Decision(route, reason=f"batch {index + 1} is a multiple of {self.every}",
                            index=index, router=self.kind)
        return Decision(self.default_route, reason=f"{available[1]} every {self.every} batches",
                        index=index, router=self.kind)


class PlateauRouter(Router):
    """The first non-default route (symbolic) while the plateau monitor is on, the default otherwise."""

    kind = "plateau"

    def _choose(self, signals: Signals, batch: BatchStats, index: int, available) -> Decision:
        if signals.plateau:
            return Decision(available[1], reason="loss plateau", index=index, router=self.kind)
        return Decision(self.default_route, reason="no plateau", index=index, router=self.kind)


class RandomRouter(Router):
    """A non-default route with probability ``p`` (split evenly among the available ones), from its
    own seeded generator (saved in the state)."""

    kind = "random"

    def __init__(self, p: float, seed: int, routes=ROUTES) -> None:
        super().__init__(routes)
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"p must be in [0, 1] (got {p})")
        self.p = float(p)
        self.rng = np.random.default_rng(seed)

    def _choose(self, signals: Signals, batch: BatchStats, index: int, available) -> Decision:
        draw = self.rng.random()
        others = available[1:]
        route = others[min(int(draw / self.p * len(others)), len(others) - 1)] if draw < self.p else available[0]
        return Decision(route, explored=True, reason=f"random (p_non_default={self.p})", index=index,
                        router=self.kind)

    def _extra_state(self) -> dict[str, Any]:
        return {"rng": self.rng.bit_generator.state}

    def _load_extra_state(self, state: dict[str, Any]) -> None:
        self.rng.bit_generator.state = state["rng"]


class RandomRowRouter(RandomRouter):
    """The control for a per-row router: each row takes a non-default route with probability ``p``
    (set it to the learned router's share of rows), whatever the row is; the batch is partitioned as a
    per-row router partitions it. It reads nothing about the rows, so it costs no inspection."""

    kind = "random_rows"

    def _choose(self, signals: Signals, batch: BatchStats, index: int, available) -> Decision:
        n, others = max(len(batch.prompts), 1), available[1:]
        parts: dict[str, list[int]] = {r: [] for r in others + available[:1]}  # the default route last
        for i in range(n):
            draw = self.rng.random()
            route = others[min(int(draw / self.p * len(others)), len(others) - 1)] if draw < self.p else available[0]
            parts[route].append(i)
        parts = {r: ix for r, ix in parts.items() if ix}
        headline = next((r for r in parts if r != available[0]), available[0])
        return Decision(headline, explored=True, reason=f"random rows (p_non_default={self.p}): "
                        + ", ".join(f"{len(ix)} -> {r}" for r, ix in parts.items()),
                        index=index, router=self.kind, parts=parts)

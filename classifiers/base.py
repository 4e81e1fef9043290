"""The router interface: ``decide`` a route for a batch, ``learn`` from the gain it bought."""
from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, ClassVar, Mapping, Optional

import numpy as np

from monitors.signals import Signals

Route = str  # a name from the orchestrator's update registry
ROUTES: tuple[Route, ...] = ("lora", "symbolic")  # the default routes; routers take the registry's list

BATCH_FEATURE_NAMES: tuple[str, ...] = (
    "batch_has_loss", "batch_mean_loss", "batch_max_loss", "batch_has_reward", "batch_reward_before",
    "log1p_batch_size",
)


def _num(x: float | None) -> float:
    return 0.0 if x is None or not math.isfinite(x) else float(x)


@dataclass(frozen=True)
class BatchStats:
    """What the router knows about the batch it routes (computed before the update).

    ``mean_loss``/``max_loss``: mean and max per-example loss (None if not computed);
    ``reward_before``: the batch's mean reward under the current model and prompt (None if not
    measured); ``prompts``: the batch's prompt texts.
    """

    mean_loss: float | None = None
    max_loss: float | None = None
    reward_before: float | None = None
    prompts: tuple[str, ...] = ()

    def as_features(self) -> np.ndarray:
        """One float64 entry per name in ``BATCH_FEATURE_NAMES`` (missing values: 0.0 + indicator)."""
        return np.asarray((
            float(self.mean_loss is not None),
            _num(self.mean_loss),
            _num(self.max_loss),
            float(self.reward_before is not None),
            _num(self.reward_before),
            math.log1p(len(self.prompts)),
        ), dtype=np.float64)

    def as_dict(self) -> dict[str, Any]:
        """JSON-safe summary (the prompt texts are left out; their count is kept)."""
        return {"mean_loss": self.mean_loss, "max_loss": self.max_loss,
                "reward_before": self.reward_before, "n_prompts": len(self.prompts)}


@dataclass(frozen=True)
class Decision:
    """A routing decision, kept until its gain is known and passed back to ``Router.learn``.

    ``features``: the feature vector the router decided on (empty for baselines that use none);
    ``predicted``: predicted gain per route, or None; ``explored``: the route was chosen to explore
    (warm-up, epsilon, an untried route or a random baseline) rather than as the best guess;
    ``reason``: a short human-readable why; ``index``: the router's decision counter;
    ``router``: the router kind.
    """

    route: Route
    features: list[float] = field(default_factory=list)
    predicted: dict[str, float] | None = None
    explored: bool = False
    reason: str = ""
    index: int = 0
    router: str = ""

    def as_dict(self) -> dict[str, Any]:
        """JSON-safe dict for events.jsonl (features included as a list of floats)."""
        return {"route": self.route, "features": [float(x) for x in self.features],
                "predicted": None if self.predicted is None else {k: float(v) for k, v in self.predicted.items()},
                "explored": bool(self.explored), "reason": self.reason, "index": int(self.index),
                "router": self.router}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Decision":
        """Inverse of ``as_dict`` (e.g. a decision still awaiting its gain at a checkpoint)."""
        return cls(d["route"], [float(x) for x in d.get("features", [])],
                   None if d.get("predicted") is None else {k: float(v) for k, v in d["predicted"].items()},
                   bool(d.get("explored", False)), str(d.get("reason", "")), int(d.get("index", 0)),
                   str(d.get("router", "")))


class Router(ABC):
    """Base class: counts decisions and decides only among the routes that are available.

    ``routes``: the update kinds to choose from, the first being the default route, always available
    (the orchestrator passes its update registry's names). Subclasses implement ``_choose`` (called
    when at least two routes are available, with ``available`` in registry order) and may override
    ``learn``, ``_extra_state`` and ``_load_extra_state``. ``learns_from_gain`` declares that the
    router needs the gain of each update (measured by the orchestrator only for such routers).
    """

    kind: ClassVar[str] = ""
    learns_from_gain: ClassVar[bool] = False

    def __init__(self, routes: tuple[Route, ...] = ROUTES) -> None:
        if not routes:
            raise ValueError("a router needs at least one route")
        self.routes = tuple(routes)
        self.n_decisions = 0

    @property
    def needs_gain(self) -> bool:
        """The next decision must be learnt from, whatever the measuring schedule (e.g. a warm-up)."""
        return False

    @property
    def default_route(self) -> Route:
        return self.routes[0]

    def decide(self, signals: Signals, batch: BatchStats,
               unavailable: Optional[Mapping[Route, str]] = None) -> Decision:
        """Pick a route for ``batch`` among the routes not in ``unavailable`` (route -> why). Without
        ``unavailable``, the symbolic route's availability is read from ``signals``."""
        index = self.n_decisions
        self.n_decisions += 1
        if unavailable is None:
            unavailable = {}
            if not signals.symbolic_available and "symbolic" in self.routes:
                why = signals.symbolic_unavailable_reason
                if why is None:
                    left = signals.symbolic_budget_left
                    why = "budget spent" if left is not None and left <= 0 else "not available"
                unavailable = {"symbolic": why}
        available = tuple(r for r in self.routes if r == self.default_route or r not in unavailable)
        if len(available) == 1:
            why = "; ".join(f"{r} unavailable: {w}" for r, w in unavailable.items() if r in self.routes)
            return Decision(self.default_route, self._unavailable_features(signals, batch), None, False,
                            why or "only one route", index, self.kind)
        return self._choose(signals, batch, index, available)

    def _unavailable_features(self, signals: Signals, batch: BatchStats) -> list[float]:
        """Features recorded on a forced decision (so it can still be learnt from)."""
        return []

    @abstractmethod
    def _choose(self, signals: Signals, batch: BatchStats, index: int, available: tuple[Route, ...]) -> Decision:
        """Pick one of ``available`` (at least two routes)."""

    def learn(self, decision: Decision, gain: float, cost_usd: float) -> None:
        """Record the realised gain (and USD cost) of a decided update. Baselines ignore it."""

    def state_dict(self) -> dict[str, Any]:
        """Plain JSON data (no bytes, no pickle)."""
        return {"kind": self.kind, "n_decisions": self.n_decisions, **self._extra_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("kind") != self.kind:
            raise ValueError(f"router state is for kind {state.get('kind')!r}, this router is {self.kind!r}")
        self.n_decisions = int(state["n_decisions"])
        self._load_extra_state(state)

    def _extra_state(self) -> dict[str, Any]:
        return {}

    def _load_extra_state(self, state: dict[str, Any]) -> None:
        pass

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


ROW_KINDS: tuple[str, ...] = ("correct", "form", "content", "unknown")


@dataclass(frozen=True)
class RowStats:
    """What a per-row router knows about one row of the batch (computed before the update), all generic:

    ``loss``: the reference answer's mean token loss; ``correct``: the student's greedy answer earns the
    full reward; ``form_match``: it equals the reference once case, whitespace, punctuation and separators
    are normalised away (right in value, wrong in form); ``len_ratio``: answer length / reference length;
    ``verdict``: the teacher's last structured verdict on this row (``correct | form | content``), if any.
    None: not measured.
    """

    loss: float | None = None
    correct: bool | None = None
    form_match: bool | None = None
    len_ratio: float | None = None
    verdict: str | None = None

    @property
    def kind(self) -> str:
        """``correct``; else the teacher's verdict when it gave one; else ``form`` (right once normalised)
        or ``content``; ``unknown`` when no answer was generated."""
        if self.correct:
            return "correct"
        if self.verdict in ("form", "content"):
            return self.verdict
        if self.correct is None:
            return "unknown"
        return "form" if self.form_match else "content"

    def as_dict(self) -> dict[str, Any]:
        return {"loss": self.loss, "correct": self.correct, "form_match": self.form_match,
                "len_ratio": self.len_ratio, "verdict": self.verdict, "kind": self.kind}


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
    rows: tuple[RowStats, ...] = ()   # per-row statistics (per-row routers only)
    answers: tuple[str, ...] = ()     # the student's answers behind ``rows`` (reused by a symbolic update)

    def kinds(self) -> list[str]:
        return [r.kind for r in self.rows]

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
        d = {"mean_loss": self.mean_loss, "max_loss": self.max_loss,
             "reward_before": self.reward_before, "n_prompts": len(self.prompts)}
        if self.rows:
            d["kinds"] = {k: n for k in ROW_KINDS if (n := self.kinds().count(k))}
        return d


@dataclass(frozen=True)
class Decision:
    """A routing decision, kept until its gain is known and passed back to ``Router.learn``.

    ``features``: the feature vector the router decided on (empty for baselines that use none);
    ``predicted``: predicted gain per route, or None; ``explored``: the route was chosen to explore
    (warm-up, epsilon, an untried route or a random baseline) rather than as the best guess;
    ``reason``: a short human-readable why; ``index``: the router's decision counter;
    ``router``: the router kind; ``parts``: a per-row router's partition of the batch (route -> row
    indices, every row in exactly one part; None: the whole batch takes ``route``), ``route`` then
    being the non-default route if it has rows (the step's headline route).
    """

    route: Route
    features: list[float] = field(default_factory=list)
    predicted: dict[str, float] | None = None
    explored: bool = False
    reason: str = ""
    index: int = 0
    router: str = ""
    parts: dict[str, list[int]] | None = None
    answers: tuple[str, ...] | None = field(default=None, compare=False)  # the student's answers to the
    # rows of a part, under the current prompt, when the run already has them (not saved: recomputed)

    def partition(self, n: int) -> dict[str, list[int]]:
        """Route -> row indices for a batch of ``n`` rows, non-empty parts only, in the order they run
        (routers list the default route last: a prompt edit first, so the LoRA step trains under the
        prompt the run goes on with)."""
        if self.parts is None:
            return {self.route: list(range(n))}
        return {r: list(ix) for r, ix in self.parts.items() if ix}

    def as_dict(self) -> dict[str, Any]:
        """JSON-safe dict for events.jsonl (features included as a list of floats)."""
        return {"route": self.route, "features": [float(x) for x in self.features],
                "predicted": None if self.predicted is None else {k: float(v) for k, v in self.predicted.items()},
                "explored": bool(self.explored), "reason": self.reason, "index": int(self.index),
                "router": self.router,
                **({} if self.parts is None else {"parts": {r: [int(i) for i in ix] for r, ix in self.parts.items()}})}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Decision":
        """Inverse of ``as_dict`` (e.g. a decision still awaiting its gain at a checkpoint)."""
        return cls(d["route"], [float(x) for x in d.get("features", [])],
                   None if d.get("predicted") is None else {k: float(v) for k, v in d["predicted"].items()},
                   bool(d.get("explored", False)), str(d.get("reason", "")), int(d.get("index", 0)),
                   str(d.get("router", "")),
                   None if d.get("parts") is None else {r: [int(i) for i in ix] for r, ix in d["parts"].items()})


@dataclass(frozen=True)
class PartResult:
    """What one part of a step's partition bought, for ``Router.learn_parts``.

    ``gain``: the reward after minus before (None: not measured this step); ``gain_by_kind``: the same,
    per row kind, on the held-out probe rows of that kind; ``cost``: the part's cost in LoRA-step units
    (teacher calls weighted by the router's ``call_cost``); ``saturated``: why the update changed
    nothing it could have (``identical``, a refusal, ``no_form_errors``), or None; ``rows``: its size.
    """

    gain: float | None = None
    gain_by_kind: dict[str, float] = field(default_factory=dict)
    cost: float = 0.0
    saturated: str | None = None
    rows: int = 0
    cost_usd: float = 0.0
    calls: int = 0                  # teacher calls
    fixed: int | None = None        # probe rows not correct before, correct after (per-row measurement)
    compute: dict[str, int] = field(default_factory=dict)  # tokens through the model (train/forward/generated)
    wall_s: float = 0.0             # seconds the update itself took (its gain measurement excluded)

    def as_dict(self) -> dict[str, Any]:
        """JSON-safe, for events.jsonl (``parts``)."""
        d = {"rows": self.rows, "gain": self.gain, "cost": self.cost, "calls": self.calls, "cost_usd": self.cost_usd,
             "saturated": self.saturated, "compute": dict(self.compute), "wall_s": self.wall_s}
        if self.gain_by_kind:
            d.update(gain_by_kind=dict(self.gain_by_kind), fixed=self.fixed)
        return d


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
    per_row: ClassVar[bool] = False  # decides per row (needs BatchStats.rows) and learns per part

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
    def wants_rows(self) -> bool:
        """The next decision needs the batch's rows inspected (``BatchStats.rows``: a forward pass and a
        greedy answer per row). A per-row router may say no while its choice cannot depend on them."""
        return self.per_row

    @property
    def wants_row_loss(self) -> bool:
        """The inspected rows need their reference loss (one more forward pass over the batch)."""
        return True

    @property
    def default_route(self) -> Route:
        return self.routes[0]

    def unavailable(self, signals: Signals, unavailable: Optional[Mapping[Route, str]] = None) -> dict[Route, str]:
        """Route -> why it cannot be chosen now: ``unavailable`` as given, else read from ``signals``."""
        if unavailable is not None:
            return dict(unavailable)
        unavailable = {}
        if not signals.symbolic_available and "symbolic" in self.routes:
            why = signals.symbolic_unavailable_reason
            if why is None:
                left = signals.symbolic_budget_left
                why = "budget spent" if left is not None and left <= 0 else "not available"
            unavailable = {"symbolic": why}
        return unavailable

    def decide(self, signals: Signals, batch: BatchStats,
               unavailable: Optional[Mapping[Route, str]] = None) -> Decision:
        """Pick a route for ``batch`` among the routes not in ``unavailable`` (route -> why). Without
        ``unavailable``, the symbolic route's availability is read from ``signals``."""
        index = self.n_decisions
        self.n_decisions += 1
        unavailable = self.unavailable(signals, unavailable)
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

    def learn_parts(self, decision: Decision, results: Mapping[Route, PartResult]) -> None:
        """What each part of a decision bought. A per-batch router learns the one part's measured gain."""
        if len(results) == 1:
            (route, result), = results.items()
            if route == decision.route and result.gain is not None:
                self.learn(decision, result.gain, result.cost_usd)

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

"""BanditRouter: routes each row by what it needs, and stops a tool whose gains are spent.

The research this toolkit comes from routes by what each *input* needs: a fact the weights must
learn, or a form or constraint a prompt can state. So this router decides per row, on a few generic
row kinds (:class:`~classifiers.base.RowStats.kind`: ``correct``, ``form``, ``content``, ``unknown``),
and partitions the batch: one part per route, each part's update run in the same step.

**Value per (kind, route)**: discounted Thompson sampling with a Gaussian posterior (Raj & Kalyani,
"Taming non-stationary bandits: a Bayesian approach", 2017; the discounted statistics of
Garivier & Moulines' D-UCB, 2011): each arm keeps discounted sums of its gains (``n``, ``s``, ``q``;
every arm decays by ``discount`` at each learnt step), a draw from N(s/n, var/n) is its value (var:
the arm's own, floored by the pooled within-arm variance), and the route with the best value per
unit cost (a LoRA step = 1, a teacher call = ``call_cost``, the forward passes charged in LoRA-step
units) takes the kind's rows. The gains are measured on held-out probe rows of each kind, for both
routes on the same schedule (the orchestrator's business), and credited only to the kinds a part was
given. An arm never tried is tried first; ``correct`` rows always take the default route (nothing
to fix; the weights keep them).

**Saturation**: a prompt edit's value is a step function, large once, then zero until the task or
the student shifts. An update that changed nothing it could (the teacher proposed the identical
prompt, it was refused, the teacher's verdicts were all ``content``) closes its route for
``backoff * 2**(k-1)`` decisions after the k-th such result in a row (at most ``backoff_max``); a
result that changes something resets k.

**Change detection** reopens a closed route (and forgets its arms): the loss (the batch's mean
reference loss when measured, else the last step's training loss, so no forward pass is spent on it)
more than ``shift_z`` standard deviations above its discounted mean, or the share of a kind the
route served rising by more than 0.25 over its share when the route closed (e.g. the target format
changed and ``form`` rows are back).

**Rows cost nothing while no other route can take them**: the batch's rows are inspected (a greedy
answer each) only while a route besides the default is open and rows it could take were seen lately
(form rows, say, still in the recent batches), and at every ``ROW_CHECK_EVERY``-th decision otherwise,
enough to see a kind's share rise or the loss shift; the other batches go to the default route
uninspected.

**Exploration floor**: with probability ``epsilon_min`` a kind's rows take a random available route.
All randomness comes from one seeded generator; the state is plain JSON.
"""
from __future__ import annotations

import math
from typing import Any, Mapping

import numpy as np

from classifiers.base import ROUTES, ROW_KINDS, BatchStats, Decision, PartResult, Route, Router
from classifiers.config import RouterConfig
from monitors.signals import Signals

SHARE_RISE = 0.25  # a kind's share of the batch rising this much over its share at closing is a shift
ROW_CHECK_EVERY = 4  # while no other route can take the rows, they are inspected at every 4th decision only
ROWS_SEEN = 1 / 16  # a kind's (EMA) share of the inspected batches below which its rows are as good as gone


class BanditRouter(Router):
    """Per-row discounted Thompson sampling with saturation backoff (see the module docstring)."""

    kind = "bandit"
    learns_from_gain = True
    per_row = True

    def __init__(self, cfg: RouterConfig, seed: int, routes: tuple[Route, ...] = ROUTES) -> None:
        super().__init__(routes)
        self.cfg = cfg
        self.rng = np.random.default_rng(seed)
        # (kind, route) -> discounted [n, sum of gains, sum of squared gains]
        self.arms: dict[str, list[float]] = {f"{k}/{r}": [0.0, 0.0, 0.0] for k in ROW_KINDS for r in self.routes}
        self.cost = {r: [0.0, 0.0] for r in self.routes}  # discounted [n, sum of costs]
        self.closed: dict[str, dict[str, Any]] = {}       # route -> {until, level, why, shares}
        self.level = {r: 0 for r in self.routes}          # saturated results in a row
        self.loss_stats = [0.0, 0.0, 0.0]                 # discounted [n, sum, sum sq] of batch mean loss
        self.shares = {k: 0.0 for k in ROW_KINDS}         # EMA of each kind's share of the batch
        self._learns_now = False                          # the last decision tried an arm or explored

    @property
    def needs_gain(self) -> bool:
        """The decision just made must be measured, whatever the schedule: it tried an arm for the first
        time (a route on a kind of row it never served) or explored. The other decisions are measured on
        the orchestrator's schedule (``reward.gain_every``): an arm already tried needs no probe at every
        step, and a kind the batches stopped showing is no reason to measure."""
        return self._learns_now

    @property
    def wants_rows(self) -> bool:
        """Inspect the next batch's rows while they can change the route: a route besides the default is
        open and rows it could take were seen lately (a kind's share of the inspected batches at least
        ``ROWS_SEEN``, with that route untried on it or worth more than the default); else every
        ``ROW_CHECK_EVERY``-th decision (to watch for a shift). Uninspected rows take the default route."""
        if self.n_decisions % ROW_CHECK_EVERY == 0:
            return True
        others = [r for r in self.routes if r != self.default_route
                  and self.n_decisions >= self.closed.get(r, {}).get("until", 0)]
        return any(self.shares[k] >= ROWS_SEEN and (self.arms[f"{k}/{r}"][0] == 0.0 or self._pays(k, r))
                   for k in ("form", "content") for r in others)

    def _pays(self, kind: str, route: Route) -> bool:
        """The posterior mean of ``route`` on ``kind`` per unit cost beats the default route's."""
        def value(r):
            n, s, _ = self.arms[f"{kind}/{r}"]
            return (s / n if n else 0.0) / max(self._mean_cost(r), 1e-3)
        return value(route) > value(self.default_route)

    wants_row_loss = False  # a row's kind comes from its answer; the loss shift reads the last step's loss

    # ------------------------------------------------------------------ deciding
    def decide(self, signals: Signals, batch: BatchStats, unavailable=None) -> Decision:
        self._learns_now = False  # (set by _choose: a decision with one route available learns nothing new)
        unavailable = self.unavailable(signals, unavailable)
        self._watch_shift(batch, signals)
        for route, c in self.closed.items():
            if self.n_decisions < c["until"]:
                unavailable.setdefault(route, f"spent ({c['why']}): closed until decision {c['until']}")
        return super().decide(signals, batch, unavailable)

    def _choose(self, signals: Signals, batch: BatchStats, index: int, available: tuple[Route, ...]) -> Decision:
        if not batch.rows:  # not inspected (wants_rows said no): nothing to route on
            return Decision(self.default_route, predicted=self.values(available), index=index, router=self.kind,
                            reason="rows not inspected: no row another route could take was seen lately")
        kinds = batch.kinds()
        parts: dict[str, list[int]] = {r: [] for r in available[1:] + available[:1]}  # default route last
        why, explored = [], False
        for kind in dict.fromkeys(kinds):
            rows = [i for i, k in enumerate(kinds) if k == kind]
            route, how = self._route_for(kind, available)
            explored |= how in ("untried", "explore")
            parts[route].extend(rows)
            why.append(f"{len(rows)} {kind} -> {route} ({how})")
        headline = next((r for r in parts if r != self.default_route and parts[r]), self.default_route)
        parts = {r: sorted(ix) for r, ix in parts.items() if ix}  # each part in batch order
        self._learns_now = explored
        return Decision(headline, predicted=self.values(available), explored=explored, reason="; ".join(why),
                        index=index, router=self.kind, parts=parts)

    def _route_for(self, kind: str, available: tuple[Route, ...]) -> tuple[Route, str]:
        if kind == "correct":
            return self.default_route, "nothing to fix"
        if self.rng.random() < self.cfg.epsilon_min:
            return available[int(self.rng.integers(len(available)))], "explore"
        untried = [r for r in available if self.arms[f"{kind}/{r}"][0] == 0.0]
        if untried:
            return untried[-1], "untried"  # a non-default route first (the default is listed first)
        draws = {r: self._draw(kind, r) / max(self._mean_cost(r), 1e-3) for r in available}
        return max(available, key=lambda r: (draws[r], -available.index(r))), "value"

    def _draw(self, kind: str, route: Route) -> float:
        n, s, q = self.arms[f"{kind}/{route}"]
        mean = s / n
        var = max(q / n - mean * mean, 0.0) + self._prior_var()
        return float(self.rng.normal(mean, math.sqrt(var / max(n, 1e-9))))

    def _prior_var(self) -> float:
        """A floor on each arm's variance: the pooled within-arm variance of the gains seen (1e-6 before
        any). Within arms, not across: a prompt edit's one large gain is a difference between arms, and
        letting it widen every arm's posterior would make every draw noise."""
        n = sum(a[0] for a in self.arms.values())
        if n <= 0:
            return 1e-6
        within = sum(max(a[2] - a[1] * a[1] / a[0], 0.0) for a in self.arms.values() if a[0] > 0)
        return max(within / n, 1e-6)

    def _mean_cost(self, route: Route) -> float:
        n, s = self.cost[route]
        return s / n if n else 1.0

    def values(self, available=None) -> dict[str, float]:
        """The posterior mean gain per unit cost of each route, averaged over the kinds it was tried on."""
        out = {}
        for r in available or self.routes:
            arms = [self.arms[f"{k}/{r}"] for k in ROW_KINDS if self.arms[f"{k}/{r}"][0] > 0]
            mean = sum(a[1] for a in arms) / sum(a[0] for a in arms) if arms else 0.0
            out[r] = mean / max(self._mean_cost(r), 1e-3)
        return out

    # ------------------------------------------------------------------ learning
    def learn(self, decision: Decision, gain: float, cost_usd: float) -> None:
        """A per-batch gain (e.g. an asynchronous update that landed): credited to every kind of its rows."""

    def learn_parts(self, decision: Decision, results: Mapping[Route, PartResult]) -> None:
        measured = any(res.gain_by_kind for res in results.values())
        if measured:
            g = self.cfg.discount
            for arm in self.arms.values():
                arm[0], arm[1], arm[2] = g * arm[0], g * arm[1], g * arm[2]
            for c in self.cost.values():
                c[0], c[1] = g * c[0], g * c[1]
        for route, res in results.items():
            if route not in self.routes:
                continue
            for kind, gain in res.gain_by_kind.items():
                if math.isfinite(gain):
                    arm = self.arms[f"{kind}/{route}"]
                    arm[0], arm[1], arm[2] = arm[0] + 1.0, arm[1] + gain, arm[2] + gain * gain
            if res.cost > 0:
                c = self.cost[route]
                c[0], c[1] = c[0] + 1.0, c[1] + res.cost
            self._saturation(route, res)

    def _saturation(self, route: Route, res: PartResult) -> None:
        if route == self.default_route:
            return
        if res.saturated is None:
            self.level[route] = 0
            return
        self.level[route] += 1
        span = min(self.cfg.backoff * 2 ** (self.level[route] - 1), self.cfg.backoff_max)
        self.closed[route] = {"until": self.n_decisions + span, "level": self.level[route], "why": res.saturated,
                              "shares": dict(self.shares)}

    # ------------------------------------------------------------------ change detection
    def _watch_shift(self, batch: BatchStats, signals: Signals | None = None) -> None:
        shifted = []
        loss = batch.mean_loss if batch.mean_loss is not None else getattr(signals, "loss", None)
        if loss is not None and math.isfinite(loss):
            n, s, q = self.loss_stats
            if n >= 3:
                mean = s / n
                sd = math.sqrt(max(q / n - mean * mean, 1e-12))
                if loss > mean + self.cfg.shift_z * max(sd, 0.05 * abs(mean), 1e-6):
                    shifted.append(f"loss {loss:.3g} vs {mean:.3g}")
            g, x = self.cfg.discount, loss
            self.loss_stats = [g * n + 1, g * s + x, g * q + x * x]
        if batch.rows:
            kinds = batch.kinds()
            for k in ROW_KINDS:
                share = kinds.count(k) / len(kinds)
                for route, c in self.closed.items():
                    if share > c["shares"].get(k, 0.0) + SHARE_RISE and k not in ("correct",):
                        shifted.append(f"{k} rows {share:.2f} vs {c['shares'].get(k, 0.0):.2f}")
                self.shares[k] = 0.5 * self.shares[k] + 0.5 * share
        if shifted and self.closed:
            self.reopen("; ".join(dict.fromkeys(shifted)))

    def reopen(self, why: str) -> None:
        """A shift: closed routes open again and forget what they learnt in the old regime."""
        for route in list(self.closed):
            del self.closed[route]
            self.level[route] = 0
            for k in ROW_KINDS:
                self.arms[f"{k}/{route}"] = [0.0, 0.0, 0.0]
        self.last_shift = why

    # ------------------------------------------------------------------ state
    def _extra_state(self) -> dict[str, Any]:
        return {"rng": self.rng.bit_generator.state, "arms": self.arms, "cost": self.cost, "closed": self.closed,
                "level": self.level, "loss_stats": self.loss_stats, "shares": self.shares}

    def _load_extra_state(self, state: dict[str, Any]) -> None:
        self.rng.bit_generator.state = state["rng"]
        self.arms = {k: [float(x) for x in v] for k, v in state["arms"].items()}
        self.cost = {k: [float(x) for x in v] for k, v in state["cost"].items()}
        self.closed = {k: dict(v) for k, v in state["closed"].items()}
        self.level = {k: int(v) for k, v in state["level"].items()}
        self.loss_stats = [float(x) for x in state["loss_stats"]]
        self.shares = {k: float(v) for k, v in state["shares"].items()}

"""RewardRouter: learns, online, the gain each route buys in a given context and routes to the best.

Features = ``Signals.as_features()`` + ``BatchStats.as_features()`` + the batch prompts' hashed
bag of words (``HashingVectorizer``, no vocabulary to fit), averaged over the batch. A shared
``StandardScaler`` (``partial_fit``) normalises them (scaled values clipped to +-``clip``), and one
``SGDRegressor`` per route (``partial_fit``, one sample per learnt decision) predicts the route's
gain. Each route's utility is its predicted gain minus ``cost_weight`` times the running mean of
its observed costs (USD). It handles any number of routes (the orchestrator's update registry).
Exploration: during the first ``warmup`` decisions the least-tried available route is taken, then a
route never learnt from, then epsilon-greedy with ``epsilon_n = max(epsilon_min, epsilon *
epsilon_decay**n)`` (an exploring decision takes a random route other than the one the model would
pick). All randomness comes from one seeded numpy Generator.

The state is plain JSON: estimator arrays as lists, the generator's ``bit_generator.state``.
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np
from sklearn.feature_extraction.text import HashingVectorizer
from sklearn.linear_model import SGDRegressor
from sklearn.preprocessing import StandardScaler

from classifiers.base import BATCH_FEATURE_NAMES, ROUTES, BatchStats, Decision, Route, Router
from monitors.signals import FEATURE_NAMES, Signals
from classifiers.config import RouterConfig


class RewardRouter(Router):
    """Cost-aware contextual epsilon-greedy bandit over the routes (see module docstring)."""

    kind = "reward_classifier"
    learns_from_gain = True

    def __init__(self, cfg: RouterConfig, seed: int, routes: tuple[Route, ...] = ROUTES, *, eta0: float = 0.01,
                 alpha: float = 1e-4, clip: float = 5.0) -> None:
        super().__init__(routes)
        self.cfg = cfg
        self.seed = int(seed)
        self.eta0 = float(eta0)
        self.alpha = float(alpha)
        self.clip = float(clip)
        self.hasher = HashingVectorizer(n_features=cfg.hash_features, alternate_sign=True, norm="l2",
                                        dtype=np.float64)
        self.feature_names: tuple[str, ...] = (
            FEATURE_NAMES + BATCH_FEATURE_NAMES + tuple(f"text_hash_{i}" for i in range(cfg.hash_features)))
        self.rng = np.random.default_rng(seed)
        self.scaler = StandardScaler()
        self.regressors: dict[str, SGDRegressor] = {r: self._new_regressor() for r in self.routes}
        self.n_learned: dict[str, int] = {r: 0 for r in self.routes}
        self.n_tried: dict[str, int] = {r: 0 for r in self.routes}  # decisions that chose each route
        self.n_model_decisions = 0  # decisions made with at least two routes available
        self.n_skipped = 0  # learn() calls with a non-finite gain
        self.cost_n: dict[str, int] = {r: 0 for r in self.routes}
        self.cost_mean: dict[str, float] = {r: 0.0 for r in self.routes}
        self.gains: list[float] = []  # the first gains learnt (up to warm-up), to tell a flat signal

    # ------------------------------------------------------------------ features and predictions

    @property
    def n_features(self) -> int:
        return len(self.feature_names)

    def features(self, signals: Signals, batch: BatchStats) -> np.ndarray:
        """The raw (unscaled) feature vector, one entry per ``feature_names``."""
        if batch.prompts:
            text = np.asarray(self.hasher.transform(list(batch.prompts)).mean(axis=0)).ravel()
        else:
            text = np.zeros(self.cfg.hash_features)
        x = np.concatenate([signals.as_features(), batch.as_features(), text])
        return np.nan_to_num(x, nan=0.0, posinf=0.0, neginf=0.0)

    def _scale(self, x: np.ndarray) -> np.ndarray:
        return np.clip(self.scaler.transform(x.reshape(1, -1)), -self.clip, self.clip)

    def predict(self, features: np.ndarray | list[float]) -> dict[str, float] | None:
        """Predicted gain of each route for these raw features; None until every route was learnt."""
        if min(self.n_learned.values()) == 0:
            return None
        xs = self._scale(np.asarray(features, dtype=np.float64))
        return {r: float(self.regressors[r].predict(xs)[0]) for r in self.routes}

    def utilities(self, predicted: dict[str, float]) -> dict[str, float]:
        """Utility per route: predicted gain minus ``cost_weight`` times the route's expected cost."""
        return {r: g - self.cfg.cost_weight * self.cost_mean[r] for r, g in predicted.items()}

    def _best(self, predicted: dict[str, float], among: tuple[Route, ...] | None = None) -> Route:
        u = self.utilities(predicted)
        among = among or self.routes
        return max(among, key=lambda r: (u[r], -among.index(r)))  # ties go to the earlier (cheaper) route

    def greedy_route(self, features: np.ndarray | list[float]) -> Route | None:
        """The route the model would pick for these raw features, without exploring or counting
        a decision; None until every route was learnt."""
        predicted = self.predict(features)
        return None if predicted is None else self._best(predicted)

    @property
    def expected_cost(self) -> float:
        """Running mean of the observed USD cost of a symbolic update (0 before any)."""
        return self.cost_mean.get("symbolic", 0.0)

    @property
    def needs_gain(self) -> bool:
        """During warm-up, and until every route has been learnt from once."""
        return self.n_model_decisions < self.cfg.warmup or any(n == 0 for n in self.n_learned.values())

    @property
    def flat_gains(self) -> bool:
        """True when every gain learnt during warm-up was the same (no signal to learn from)."""
        return len(self.gains) >= max(self.cfg.warmup, 2) and max(self.gains) - min(self.gains) < 1e-12

    @property
    def epsilon(self) -> float:
        """The exploration rate of the next post-warm-up decision."""
        n = max(self.n_model_decisions - self.cfg.warmup, 0)
        return max(self.cfg.epsilon_min, self.cfg.epsilon * self.cfg.epsilon_decay ** n)

    # ------------------------------------------------------------------ deciding and learning

    def _unavailable_features(self, signals: Signals, batch: BatchStats) -> list[float]:
        return self.features(signals, batch).tolist()

    def _choose(self, signals: Signals, batch: BatchStats, index: int, available: tuple[Route, ...]) -> Decision:
        x = self.features(signals, batch)
        feats = x.tolist()
        eps = self.epsilon
        m = self.n_model_decisions
        self.n_model_decisions += 1
        draw = float(self.rng.random())  # drawn on every decision, so the stream never depends on the branch
        predicted = self.predict(x)

        def decision(route: Route, explored: bool, reason: str) -> Decision:
            self.n_tried[route] += 1
            return Decision(route, feats, predicted, explored, reason, index, self.kind)

        if m < self.cfg.warmup:
            route = min(available, key=lambda r: (self.n_tried[r], available.index(r)))
            return decision(route, True, f"warm-up {m + 1}/{self.cfg.warmup}: least-tried route")
        untried = [r for r in available if self.n_learned[r] == 0]
        if untried:
            return decision(untried[0], True, f"{untried[0]} never learnt from yet")
        assert predicted is not None
        best = self._best(predicted, available)
        summary = ", ".join(f"{r} {predicted[r]:.4g}" + (f" - cost {self.cfg.cost_weight * self.cost_mean[r]:.4g}"
                                                       if self.cost_mean[r] else "") for r in available)
        if draw < eps:
            others = [r for r in available if r != best]
            route = others[0] if len(others) == 1 else others[int(self.rng.integers(len(others)))]
            return decision(route, True, f"explore (epsilon={eps:.3g}); best was {best}: gain {summary}")
        return decision(best, False, f"best utility: gain {summary}")

    def learn(self, decision: Decision, gain: float, cost_usd: float) -> None:
        """Fit the decided route's regressor on (features, gain); track symbolic cost."""
        if len(decision.features) != self.n_features:
            raise ValueError(f"decision has {len(decision.features)} features, this router uses "
                             f"{self.n_features} (was it made by another router?)")
        route = decision.route
        if route not in self.regressors:
            raise ValueError(f"decision for route {route!r}; this router knows {', '.join(self.routes)}")
        cost = float(cost_usd)
        if math.isfinite(cost):
            self.cost_n[route] += 1
            self.cost_mean[route] += (cost - self.cost_mean[route]) / self.cost_n[route]
        gain = float(gain)
        if not math.isfinite(gain):
            self.n_skipped += 1
            return
        if len(self.gains) < max(self.cfg.warmup, 2):
            self.gains.append(gain)
        x = np.asarray(decision.features, dtype=np.float64).reshape(1, -1)
        self.scaler.partial_fit(x)
        self.regressors[decision.route].partial_fit(self._scale(x[0]), np.asarray([gain]))
        self.n_learned[decision.route] += 1

    # ------------------------------------------------------------------ state

    def _new_regressor(self) -> SGDRegressor:
        return SGDRegressor(loss="squared_error", penalty="l2", alpha=self.alpha,
                            learning_rate="invscaling", eta0=self.eta0, power_t=0.25, random_state=0)

    def _extra_state(self) -> dict[str, Any]:
        scaler = None
        if hasattr(self.scaler, "mean_"):
            scaler = {"mean": self.scaler.mean_.tolist(), "var": self.scaler.var_.tolist(),
                      "scale": self.scaler.scale_.tolist(),
                      "n_samples_seen": int(np.max(self.scaler.n_samples_seen_))}
        regs: dict[str, Any] = {}
        for route, reg in self.regressors.items():
            regs[route] = None if getattr(reg, "coef_", None) is None else {
                "coef": reg.coef_.tolist(), "intercept": reg.intercept_.tolist(),
                "t": float(reg.t_), "n_iter": int(reg.n_iter_)}
        return {"n_features": self.n_features, "routes": list(self.routes),
                "n_model_decisions": self.n_model_decisions, "n_learned": dict(self.n_learned),
                "n_tried": dict(self.n_tried), "n_skipped": self.n_skipped, "gains": list(self.gains),
                "cost": {"n": dict(self.cost_n), "mean": dict(self.cost_mean)},
                "rng": self.rng.bit_generator.state, "scaler": scaler, "regressors": regs}

    def _load_extra_state(self, state: dict[str, Any]) -> None:
        if int(state["n_features"]) != self.n_features:
            raise ValueError(f"router state has {state['n_features']} features, this router uses "
                             f"{self.n_features} (router.hash_features changed?)")
        if list(state.get("routes", ROUTES)) != list(self.routes):
            raise ValueError(f"router state is for routes {state.get('routes')}, this run has {list(self.routes)}")
        self.n_model_decisions = int(state["n_model_decisions"])
        self.n_learned = {r: int(state["n_learned"][r]) for r in self.routes}
        self.n_tried = {r: int(state["n_tried"][r]) for r in self.routes}
        self.n_skipped = int(state["n_skipped"])
        self.gains = [float(g) for g in state["gains"]]
        self.cost_n = {r: int(state["cost"]["n"][r]) for r in self.routes}
        self.cost_mean = {r: float(state["cost"]["mean"][r]) for r in self.routes}
        self.rng = np.random.default_rng()
        self.rng.bit_generator.state = state["rng"]
        self.scaler = StandardScaler()
        if state["scaler"] is not None:
            s = state["scaler"]
            self.scaler.mean_ = np.asarray(s["mean"], dtype=np.float64)
            self.scaler.var_ = np.asarray(s["var"], dtype=np.float64)
            self.scaler.scale_ = np.asarray(s["scale"], dtype=np.float64)
            self.scaler.n_samples_seen_ = np.int64(s["n_samples_seen"])
            self.scaler.n_features_in_ = self.n_features
        for route in self.routes:
            reg = self._new_regressor()
            r = state["regressors"][route]
            if r is not None:
                reg.coef_ = np.asarray(r["coef"], dtype=np.float64)
                reg.intercept_ = np.asarray(r["intercept"], dtype=np.float64)
                reg.t_ = float(r["t"])
                reg.n_iter_ = int(r["n_iter"])
                reg.n_features_in_ = self.n_features
            self.regressors[route] = reg

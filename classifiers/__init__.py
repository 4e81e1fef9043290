"""Routers that decide, batch by batch (or row by row: ``bandit``), between a LoRA step and a symbolic update.

The learned router (``reward_router``) imports scikit-learn; it is loaded when a job asks for it
(``router.kind: reward_classifier``) or when ``classifiers.RewardRouter`` is first read, so a config
load or a job with a baseline router never pays for scikit-learn.
"""
from __future__ import annotations

from typing import Callable, Optional

from classifiers.bandit import BanditRouter
from classifiers.base import BATCH_FEATURE_NAMES, ROUTES, BatchStats, Decision, PartResult, Route, Router, RowStats
from classifiers.baselines import Alternate, AlwaysLora, AlwaysSymbolic, PlateauRouter, RandomRouter, RandomRowRouter
from classifiers.config import RouterConfig


def _reward_router(cfg, seed, routes):
    from classifiers.reward_router import RewardRouter
    return RewardRouter(cfg, seed, routes)


def __getattr__(name: str):
    if name == "RewardRouter":
        from classifiers.reward_router import RewardRouter
        return RewardRouter
    raise AttributeError(f"module 'classifiers' has no attribute {name!r}")


# The router registry: cfg.kind -> factory(cfg, seed, routes). A new router is one module + one line here.
ROUTERS: dict[str, Callable[[RouterConfig, int, tuple], Router]] = {
    "always_lora": lambda cfg, seed, routes: AlwaysLora(routes),
    "always_symbolic": lambda cfg, seed, routes: AlwaysSymbolic(routes),
    "alternate": lambda cfg, seed, routes: Alternate(cfg.every, routes),
    "plateau": lambda cfg, seed, routes: PlateauRouter(routes),
    "random": lambda cfg, seed, routes: RandomRouter(cfg.random_p, seed, routes),
    "reward_classifier": _reward_router,
    "bandit": lambda cfg, seed, routes: BanditRouter(cfg, seed, routes),
    "random_rows": lambda cfg, seed, routes: RandomRowRouter(cfg.random_p, seed, routes),
}


def make_router(cfg: RouterConfig, seed: int, routes: tuple = ROUTES,
                function: Optional[Callable[[RouterConfig, int, tuple], Router]] = None) -> Router:
    """The router named by ``cfg.kind``, seeded with ``seed``, choosing among ``routes`` (the first is
    the default route). ``kind: function`` builds it with ``function``, the factory the caller imported
    from ``cfg.function`` (a router of the user's own, same signature as the registry's factories)."""
    if cfg.kind == "function":
        if function is None:
            raise ValueError(f"router.kind: function needs its factory imported from {cfg.function!r}")
        router = function(cfg, seed, tuple(routes))
        if not isinstance(router, Router):
            raise TypeError(f"router.function {cfg.function!r} returned {type(router).__name__}, not a "
                            f"classifiers.Router (subclass it and implement _choose)")
        return router
    try:
        factory = ROUTERS[cfg.kind]
    except KeyError:
        raise ValueError(f"unknown router.kind {cfg.kind!r}; choose one of {', '.join(ROUTERS)}") from None
    return factory(cfg, seed, tuple(routes))


__all__ = ["BATCH_FEATURE_NAMES", "ROUTERS", "ROUTES", "Alternate", "AlwaysLora", "AlwaysSymbolic", "BanditRouter",
           "BatchStats", "Decision", "PartResult", "PlateauRouter", "RandomRouter", "RandomRowRouter", "RewardRouter",
           "Route", "Router", "RowStats", "make_router"]

"""Routers that decide, batch by batch, between a LoRA step and a symbolic update."""
from __future__ import annotations

from typing import Callable

from classifiers.base import BATCH_FEATURE_NAMES, ROUTES, BatchStats, Decision, Route, Router
from classifiers.baselines import Alternate, AlwaysLora, AlwaysSymbolic, PlateauRouter, RandomRouter
from classifiers.reward_router import RewardRouter
from neurosym.config import RouterConfig

# cfg.kind -> factory(cfg, seed)
ROUTERS: dict[str, Callable[[RouterConfig, int], Router]] = {
    "always_lora": lambda cfg, seed: AlwaysLora(),
    "always_symbolic": lambda cfg, seed: AlwaysSymbolic(),
    "alternate": lambda cfg, seed: Alternate(cfg.every),
    "plateau": lambda cfg, seed: PlateauRouter(),
    "random": lambda cfg, seed: RandomRouter(cfg.random_p, seed),
    "reward_classifier": lambda cfg, seed: RewardRouter(cfg, seed),
}


def make_router(cfg: RouterConfig, seed: int) -> Router:
    """The router named by ``cfg.kind``, seeded with ``seed``."""
    try:
        factory = ROUTERS[cfg.kind]
    except KeyError:
        raise ValueError(f"unknown router.kind {cfg.kind!r}; choose one of {', '.join(ROUTERS)}") from None
    return factory(cfg, seed)


__all__ = ["BATCH_FEATURE_NAMES", "ROUTERS", "ROUTES", "Alternate", "AlwaysLora", "AlwaysSymbolic",
           "BatchStats", "Decision", "PlateauRouter", "RandomRouter", "RewardRouter", "Route", "Router",
           "make_router"]

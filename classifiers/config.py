"""The router's configuration (the `router:` section of a job config), owned here and composed by
``neurosym.config`` so that this package never imports the orchestrator."""
from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, field_validator


class RouterConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    kind: str = Field("always_lora", description="A name from classifiers.ROUTERS: always_lora, always_symbolic, "
                                                 "alternate, plateau, random, reward_classifier.")
    every: int = Field(4, gt=0, description="alternate: a symbolic update every N batches.")
    epsilon: float = Field(0.2, ge=0, le=1, description="Initial exploration rate.")
    epsilon_decay: float = Field(0.98, gt=0, le=1)
    epsilon_min: float = Field(0.02, ge=0, le=1)
    warmup: int = Field(4, ge=0, description="Decisions that try both routes before the model is trusted.")
    cost_weight: float = Field(1.0, ge=0, description="lambda in utility = gain - lambda * cost_usd.")
    random_p: float = Field(0.5, ge=0, le=1, description="random: probability of the symbolic route.")
    hash_features: int = Field(64, gt=0, description="Width of the hashed text features of batch prompts.")

    @field_validator("kind")
    @classmethod
    def _registered(cls, v: str) -> str:
        from classifiers import ROUTERS  # the registry (imported here: it imports this module)
        if v not in ROUTERS:
            raise ValueError(f"unknown router kind {v!r}; choose one of {', '.join(ROUTERS)}")
        return v

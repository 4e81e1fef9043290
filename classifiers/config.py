"""The router's configuration (the `router:` section of a job config), owned here and composed by
``neurosym.config.schema`` so that this package never imports the orchestrator."""
from __future__ import annotations

from typing import Optional

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator


class RouterConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    kind: str = Field("always_lora", description="A name from classifiers.ROUTERS: always_lora, always_symbolic, "
                                                 "alternate, plateau, random, reward_classifier, bandit (per row), "
                                                 "random_rows (per row, the bandit's control); or function.")
    function: Optional[str] = Field(None, description="kind=function: 'module:factory', a factory "
                                                      "(router_cfg, seed, routes) -> Router of your own.")
    every: int = Field(4, gt=0, description="alternate: a symbolic update every N batches.")
    epsilon: float = Field(0.2, ge=0, le=1, description="Initial exploration rate.")
    epsilon_decay: float = Field(0.98, gt=0, le=1)
    epsilon_min: float = Field(0.02, ge=0, le=1)
    warmup: int = Field(4, ge=0, description="Decisions that try both routes before the model is trusted.")
    cost_weight: float = Field(1.0, ge=0, description="lambda in utility = gain - lambda * cost_usd.")
    random_p: float = Field(0.5, ge=0, le=1, description="random: probability of the symbolic route (random_rows: "
                                                         "of each row).")
    hash_features: int = Field(64, gt=0, description="Width of the hashed text features of batch prompts.")
    # bandit (per-row routing): classifiers/bandit.py
    discount: float = Field(0.9, gt=0, le=1, description="bandit: every arm's statistics decay by this factor "
                                                         "per learnt step (gains that rot are forgotten).")
    call_cost: float = Field(1.0, ge=0, description="bandit: one teacher call's cost in LoRA steps (c).")
    backoff: int = Field(2, gt=0, description="bandit: decisions a spent route stays closed after its first "
                                              "saturated result (doubling with each one in a row).")
    backoff_max: int = Field(64, gt=0, description="bandit: the longest a spent route stays closed, in decisions.")
    shift_z: float = Field(3.0, gt=0, description="bandit: a batch loss this many standard deviations above its "
                                                  "discounted mean is a shift that reopens closed routes.")

    @field_validator("kind")
    @classmethod
    def _registered(cls, v: str) -> str:
        from classifiers import ROUTERS  # the registry (imported here: it imports this module)
        if v not in ROUTERS and v != "function":
            raise ValueError(f"unknown router kind {v!r}; choose one of {', '.join(ROUTERS)}, or function "
                             f"(with router.function: 'module:factory')")
        return v

    @model_validator(mode="after")
    def _function_named(self):
        if (self.kind == "function") != bool(self.function):
            raise ValueError("router.kind: function goes with router.function: 'module:factory' (a factory "
                             "(router_cfg, seed, routes) -> Router), and router.function with kind: function only")
        return self

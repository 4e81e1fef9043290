"""The monitors' configuration (the `monitors:` section of a job config), owned here and composed by
``neurosym.config.schema`` so that this package never imports the orchestrator."""
from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class MonitorsConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    window: int = Field(20, gt=1)
    ema: float = Field(0.9, gt=0, lt=1)
    plateau_threshold: float = Field(1e-3, gt=0, description="|relative slope| under this counts as flat.")
    patience: int = Field(10, gt=0)
    spike_z: float = Field(3.0, gt=0)

"""The per-step snapshot of every monitor, as a dict for logs and as a feature vector for routers."""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

# Columns of Signals.as_features(), in order. Unbounded counts enter as log1p; missing values as
# 0.0 with a has_* indicator; the z-score is clipped to +-Z_CLIP so one spike can't dominate.
FEATURE_NAMES: tuple[str, ...] = (
    "has_loss",
    "loss",
    "loss_ema",
    "slope",
    "rel_slope",
    "has_grad_norm",
    "grad_norm",
    "grad_norm_ema",
    "grad_norm_z",
    "spike",
    "plateau",
    "log1p_steps_since_symbolic",
    "log1p_prompt_version",
    "budget_unlimited",
    "log1p_budget_left",
    "symbolic_available",
)
Z_CLIP = 10.0


def _num(x: float | None) -> float:
    return 0.0 if x is None or not math.isfinite(x) else float(x)


@dataclass(frozen=True)
class Signals:
    """What the monitors say after ``step`` (the latest observed step), plus the symbolic state.

    ``loss``/``grad_norm`` are the latest observed values (``grad_norm`` from the latest LoRA
    step; ``None`` before any). ``slope`` is loss per step over the monitor window and
    ``rel_slope`` that slope over the window's mean loss. ``spike`` refers to the latest LoRA step.
    ``symbolic_budget_left`` is USD left (``None`` = unlimited); ``symbolic_unavailable_reason``
    says why ``symbolic_available`` is False, when the caller knows.
    """

    step: int
    loss: float | None
    loss_ema: float | None
    slope: float
    rel_slope: float
    grad_norm: float | None
    grad_norm_ema: float | None
    grad_norm_z: float
    spike: bool
    plateau: bool
    steps_since_symbolic: int
    prompt_version: int
    symbolic_budget_left: float | None
    symbolic_available: bool
    symbolic_unavailable_reason: str | None = None

    def as_dict(self, prefix: str = "") -> dict[str, Any]:
        """JSON-safe dict (``None`` for missing values); ``prefix="monitor/"`` gives W&B keys."""
        out = {}
        for key, value in asdict(self).items():
            if isinstance(value, float) and not math.isfinite(value):
                value = None
            out[f"{prefix}{key}"] = value
        return out

    def as_features(self) -> np.ndarray:
        """A float64 vector with one entry per name in ``FEATURE_NAMES``."""
        budget = self.symbolic_budget_left
        feats = (
            float(self.loss is not None),
            _num(self.loss),
            _num(self.loss_ema),
            _num(self.slope),
            _num(self.rel_slope),
            float(self.grad_norm is not None),
            _num(self.grad_norm),
            _num(self.grad_norm_ema),
            float(np.clip(_num(self.grad_norm_z), -Z_CLIP, Z_CLIP)),
            float(self.spike),
            float(self.plateau),
            math.log1p(max(self.steps_since_symbolic, 0)),
            math.log1p(max(self.prompt_version, 0)),
            float(budget is None),
            0.0 if budget is None else math.log1p(max(_num(budget), 0.0)),
            float(self.symbolic_available),
        )
        return np.asarray(feats, dtype=np.float64)

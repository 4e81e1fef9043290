"""Gradient-norm monitor: EMA, a z-score against exponentially weighted statistics, spikes.

The norm is computed by the caller (e.g. the value ``clip_grad_norm_`` returns); steps without a
gradient (symbolic updates) simply don't call :meth:`GradNormMonitor.update`.
"""
from __future__ import annotations

import math
from typing import Any


class GradNormMonitor:
    """Exponentially weighted mean and variance of the total gradient L2 norm.

    Each value is scored *before* it enters the statistics, so a spike cannot hide itself:
    ``z = (g - mean) / std`` with ``std = max(sqrt(var), rel_floor * |mean|, abs_floor)``.
    The z-score is 0.0 until ``min_count`` norms have been seen; ``spike`` is ``z > spike_z``.
    The statistics follow West's incremental exponentially weighted update with
    ``alpha = 1 - decay``: ``diff = g - mean; mean += alpha * diff;
    var = (1 - alpha) * (var + alpha * diff**2)``; the first norm starts ``mean`` with ``var = 0``.
    """

    def __init__(self, decay: float, spike_z: float, min_count: int = 5,
                 rel_floor: float = 1e-3, abs_floor: float = 1e-12) -> None:
        if not 0.0 < decay < 1.0:
            raise ValueError(f"decay must be in (0, 1) (got {decay})")
        self.decay = float(decay)
        self.spike_z = float(spike_z)
        self.min_count = int(min_count)
        self.rel_floor = float(rel_floor)
        self.abs_floor = float(abs_floor)
        self._count = 0
        self._mean = 0.0
        self._var = 0.0
        self._last: float | None = None
        self._z = 0.0

    def update(self, grad_norm: float) -> float:
        """Record one LoRA step's norm; returns its z-score."""
        g = float(grad_norm)
        if not math.isfinite(g) or g < 0:
            raise ValueError(f"grad_norm must be a finite non-negative float (got {grad_norm})")
        self._z = self.score(g)
        if self._count == 0:
            self._mean, self._var = g, 0.0
        else:
            alpha = 1.0 - self.decay
            diff = g - self._mean
            self._mean += alpha * diff
            self._var = (1.0 - alpha) * (self._var + alpha * diff * diff)
        self._count += 1
        self._last = g
        return self._z

    def score(self, grad_norm: float) -> float:
        """z-score of ``grad_norm`` against the current statistics (does not update them)."""
        if self._count < self.min_count:
            return 0.0
        std = max(math.sqrt(self._var), self.rel_floor * abs(self._mean), self.abs_floor)
        return (float(grad_norm) - self._mean) / std

    @property
    def count(self) -> int:
        return self._count

    @property
    def last(self) -> float | None:
        return self._last

    @property
    def ema(self) -> float | None:
        return self._mean if self._count else None

    @property
    def var(self) -> float:
        return self._var

    @property
    def z(self) -> float:
        """z-score of the last recorded norm."""
        return self._z

    @property
    def spike(self) -> bool:
        """True when the last recorded norm was a spike (z > spike_z)."""
        return self._z > self.spike_z

    def state_dict(self) -> dict[str, Any]:
        return {"count": self._count, "mean": self._mean, "var": self._var,
                "last": self._last, "z": self._z}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._count = int(state["count"])
        self._mean = float(state["mean"])
        self._var = float(state["var"])
        self._last = None if state["last"] is None else float(state["last"])
        self._z = float(state["z"])

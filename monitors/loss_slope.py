"""Least-squares slope of the training loss over a sliding window, and a loss EMA.

Memory is bounded: a ring buffer of ``window`` values, whatever the length of the run.
"""
from __future__ import annotations

import math
from typing import Any

# |mean| below this is treated as this, so the relative slope stays finite on a ~zero loss.
_MEAN_FLOOR = 1e-12


def least_squares_slope(values: list[float]) -> float:
    """Slope of the least-squares line through ``(t, values[t])`` for t = 0..n-1 (0.0 if n < 2)."""
    n = len(values)
    if n < 2:
        return 0.0
    t_mean = (n - 1) / 2.0
    y_mean = math.fsum(values) / n
    num = math.fsum((t - t_mean) * (y - y_mean) for t, y in enumerate(values))
    den = n * (n * n - 1) / 12.0  # sum of (t - t_mean)^2 for t = 0..n-1
    return num / den


class LossSlope:
    """Tracks the loss over the last ``window`` observations.

    ``slope`` is the least-squares slope (loss per observed step) over the window, ``rel_slope``
    that slope divided by the window's mean |loss|, ``ema`` an exponential moving average
    (``ema = decay * ema + (1 - decay) * loss``, started at the first loss). Each update is
    O(1); reading the slope is O(window).
    """

    def __init__(self, window: int, decay: float) -> None:
        if window < 2:
            raise ValueError(f"window must be >= 2 (got {window})")
        if not 0.0 < decay < 1.0:
            raise ValueError(f"decay must be in (0, 1) (got {decay})")
        self.window = int(window)
        self.decay = float(decay)
        self._buf: list[float] = [0.0] * self.window
        self._head = 0  # index of the slot the next value goes into
        self._count = 0  # values observed in total
        self._ema: float | None = None
        self._last: float | None = None

    def update(self, loss: float) -> None:
        """Record one loss value (a finite float)."""
        loss = float(loss)
        if not math.isfinite(loss):
            raise ValueError(f"loss must be finite (got {loss})")
        self._buf[self._head] = loss
        self._head = (self._head + 1) % self.window
        self._count += 1
        self._last = loss
        self._ema = loss if self._ema is None else self.decay * self._ema + (1.0 - self.decay) * loss

    def values(self) -> list[float]:
        """The values in the window, oldest first."""
        n = min(self._count, self.window)
        if self._count < self.window:
            return self._buf[:n]
        return self._buf[self._head:] + self._buf[: self._head]

    @property
    def count(self) -> int:
        return self._count

    @property
    def ready(self) -> bool:
        """True once the window is full (the slope then spans ``window`` steps)."""
        return self._count >= self.window

    @property
    def last(self) -> float | None:
        return self._last

    @property
    def ema(self) -> float | None:
        return self._ema

    @property
    def mean(self) -> float | None:
        vals = self.values()
        return math.fsum(vals) / len(vals) if vals else None

    @property
    def slope(self) -> float:
        return least_squares_slope(self.values())

    @property
    def rel_slope(self) -> float:
        vals = self.values()
        if len(vals) < 2:
            return 0.0
        mean = math.fsum(vals) / len(vals)
        return least_squares_slope(vals) / max(abs(mean), _MEAN_FLOOR)

    def state_dict(self) -> dict[str, Any]:
        return {"window": self.window, "decay": self.decay, "values": self.values(),
                "count": self._count, "ema": self._ema, "last": self._last}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if int(state["window"]) != self.window:
            raise ValueError(f"state has window={state['window']}, this monitor has window={self.window}")
        vals = [float(v) for v in state["values"]]
        self._buf = vals + [0.0] * (self.window - len(vals))
        self._head = len(vals) % self.window
        self._count = int(state["count"])
        self._ema = None if state["ema"] is None else float(state["ema"])
        self._last = None if state["last"] is None else float(state["last"])

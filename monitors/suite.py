"""MonitorSuite: the three monitors fed together, one call per training step."""
from __future__ import annotations

import math
from typing import Any

from monitors.grad_norm import GradNormMonitor
from monitors.loss_slope import LossSlope
from monitors.plateau import PlateauDetector
from monitors.signals import Signals
from monitors.config import MonitorsConfig


def _finite(x: float | None) -> float | None:
    if x is None:
        return None
    x = float(x)
    return x if math.isfinite(x) else None


class MonitorSuite:
    """Owns the loss-slope, grad-norm and plateau monitors and counts steps since a symbolic update.

    ``observe`` after every step; ``signals`` before the next routing decision. Non-finite or
    missing losses / grad norms are skipped (they don't enter any statistic). The plateau monitor
    advances only on steps with a loss and counts only once the slope window is full.
    ``steps_since_symbolic`` counts observed steps since the last symbolic one (since the start,
    before any).
    """

    def __init__(self, cfg: MonitorsConfig) -> None:
        self.cfg = cfg
        self.loss = LossSlope(cfg.window, cfg.ema)
        self.grad = GradNormMonitor(cfg.ema, cfg.spike_z)
        self.plateau = PlateauDetector(cfg.plateau_threshold, cfg.patience)
        self._step = -1
        self._steps_since_symbolic = 0

    def observe(self, step: int, loss: float | None, grad_norm: float | None, gradient_step: bool) -> None:
        """Record one finished step: its loss and total grad norm (None for an update that takes no
        gradient step, e.g. a symbolic one), and whether it was a gradient step (any other update
        resets ``steps_since_symbolic``). Route names are the orchestrator's business, not ours."""
        if not isinstance(gradient_step, bool):
            raise ValueError(f"gradient_step must be True or False (got {gradient_step!r})")
        loss = _finite(loss)
        if loss is not None:
            self.loss.update(loss)
            self.plateau.update(self.loss.rel_slope if self.loss.ready else None)
        grad_norm = _finite(grad_norm)
        if grad_norm is not None and gradient_step:  # only gradient steps feed the grad statistics
            self.grad.update(grad_norm)
        self._steps_since_symbolic = self._steps_since_symbolic + 1 if gradient_step else 0
        self._step = int(step)

    def signals(self, prompt_version: int, budget_left: float | None, symbolic_available: bool,
                unavailable_reason: str | None = None) -> Signals:
        """Snapshot of the monitors for the next routing decision."""
        if symbolic_available:
            unavailable_reason = None
        elif unavailable_reason is None and budget_left is not None and budget_left <= 0:
            unavailable_reason = "budget spent"
        return Signals(
            step=self._step,
            loss=self.loss.last,
            loss_ema=self.loss.ema,
            slope=self.loss.slope,
            rel_slope=self.loss.rel_slope,
            grad_norm=self.grad.last,
            grad_norm_ema=self.grad.ema,
            grad_norm_z=self.grad.z,
            spike=self.grad.spike,
            plateau=self.plateau.on,
            steps_since_symbolic=self._steps_since_symbolic,
            prompt_version=int(prompt_version),
            symbolic_budget_left=None if budget_left is None else float(budget_left),
            symbolic_available=bool(symbolic_available),
            symbolic_unavailable_reason=unavailable_reason,
        )

    def state_dict(self) -> dict[str, Any]:
        """Plain JSON data (dicts, lists, floats, ints, None); constant size over a run."""
        return {"loss": self.loss.state_dict(), "grad": self.grad.state_dict(),
                "plateau": self.plateau.state_dict(), "step": self._step,
                "steps_since_symbolic": self._steps_since_symbolic}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.loss.load_state_dict(state["loss"])
        self.grad.load_state_dict(state["grad"])
        self.plateau.load_state_dict(state["plateau"])
        self._step = int(state["step"])
        self._steps_since_symbolic = int(state["steps_since_symbolic"])

"""When the symbolic route may ask the teacher: the policy the loop applies after each update.

    avail = TeacherAvailability(cfg.symbolic)
    why = avail.unavailable_reason(step)        # None: the route may be taken
    outcome = avail.note(exc_or_None, step)     # after each symbolic update (exc: what it raised)
    if outcome.message: log.warning(outcome.message)   # loud, once per change of state
    if outcome.stop: ...save a checkpoint and stop the run (symbolic.on_teacher_down: stop)

* :class:`~.errors.BudgetExhausted`: closed for the rest of the run ("budget spent").
* a permanent failure (:class:`~.errors.TeacherDown`: 401/403/404 mid-run, or any
  ``TeacherConfigError``): closed for the rest of the run, said loudly; with
  ``symbolic.on_teacher_down: stop`` the outcome asks the loop to stop.
* any other :class:`~.errors.TeacherError` (timeouts, 5xx, malformed bodies, ...): after
  ``symbolic.down_after_failures`` in a row, paused for ``symbolic.down_for_steps`` steps.
* a call aborted by a stop (kind ``aborted``): no fault of the teacher's, counted nowhere.

Plain state (``state_dict``) so a checkpoint saves it and a resume carries on.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

from .errors import BudgetExhausted, TeacherConfigError, TeacherError


@dataclass(frozen=True)
class AvailabilityNote:
    """What the loop should do after an update: log ``message`` (if any) as a warning; stop if ``stop``."""
    message: Optional[str] = None
    stop: bool = False
    permanent: bool = False


class TeacherAvailability:
    """See the module docstring. ``cfg`` is the ``symbolic`` section."""

    def __init__(self, cfg: Any):
        self.on_teacher_down = getattr(cfg, "on_teacher_down", "continue")
        self.down_after_failures = int(getattr(cfg, "down_after_failures", 3))
        self.down_for_steps = int(getattr(cfg, "down_for_steps", 20))
        self.closed_reason: Optional[str] = None
        self.failures_in_row = 0
        self.paused_until = -1

    def unavailable_reason(self, step: int) -> Optional[str]:
        """Why the teacher may not be asked at ``step`` (None: it may)."""
        if self.closed_reason:
            return self.closed_reason
        if step < self.paused_until:
            return f"teacher down: paused until step {self.paused_until}"
        return None

    def note(self, error: Optional[BaseException], step: int) -> AvailabilityNote:
        """Record an update's outcome (``error``: the exception it raised, None on success)."""
        if error is None:
            self.failures_in_row = 0
            return AvailabilityNote()
        if isinstance(error, BudgetExhausted):
            if self.closed_reason:
                return AvailabilityNote()
            self.closed_reason = "budget spent"
            return AvailabilityNote(f"teacher budget spent: symbolic route closed for the rest of the run ({error})")
        if getattr(error, "permanent", False) or isinstance(error, TeacherConfigError):
            first = self.closed_reason is None
            self.closed_reason = f"teacher down for good: {str(error)[:300]}"
            stop = self.on_teacher_down == "stop"
            if not first and not stop:
                return AvailabilityNote(permanent=True)
            then = ("stopping the run (symbolic.on_teacher_down: stop)" if stop else
                    "continuing with LoRA steps only; set symbolic.on_teacher_down: stop to stop instead")
            return AvailabilityNote(f"TEACHER DOWN at step {step}: {error} - {then}", stop=stop, permanent=True)
        if getattr(error, "kind", None) == "aborted":  # our stop, not the teacher's failure
            return AvailabilityNote()
        if not isinstance(error, TeacherError):
            raise TypeError(f"not a teacher failure: {type(error).__name__}: {error}") from error
        self.failures_in_row += 1
        if self.failures_in_row < self.down_after_failures:
            return AvailabilityNote()
        self.paused_until = step + self.down_for_steps
        self.failures_in_row = 0
        return AvailabilityNote(f"teacher failed {self.down_after_failures} times in a row ({error}); symbolic route paused "
                       f"until step {self.paused_until} (symbolic.down_after_failures / symbolic.down_for_steps)")

    def state_dict(self) -> dict:
        return {"closed_reason": self.closed_reason, "failures_in_row": self.failures_in_row,
                "paused_until": self.paused_until}

    def load_state_dict(self, state: dict) -> None:
        self.closed_reason = state.get("closed_reason")
        self.failures_in_row = int(state.get("failures_in_row", 0))
        self.paused_until = int(state.get("paused_until", -1))


__all__ = ["TeacherAvailability", "AvailabilityNote"]

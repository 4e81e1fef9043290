"""The protocol every kind of update follows, and what an update reports back to the loop.

An update kind is one module with one class: ``apply(batch, decision, step) -> Outcome`` does the
update now (or submits it, ``Outcome.pending``, and hands it back later from ``land``). Whatever it
must keep across a restart is in its ``state_dict`` (plain JSON), which the run's checkpoint saves.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Optional

if TYPE_CHECKING:  # pragma: no cover
    from neurosym.run import Run


@dataclass
class Outcome:
    """What one update did. ``record`` holds the kind's own figures for events.jsonl (under its name)."""
    route: str
    loss: Optional[float] = None          # mean response-token loss (numerical updates)
    grad_norm: Optional[float] = None     # before clipping
    tokens: int = 0
    example_losses: list = field(default_factory=list)
    cost_usd: float = 0.0
    pending: bool = False                 # submitted; lands at a later step boundary via Update.land
    error: Optional[BaseException] = None  # the update failed (the batch then takes the default route)
    record: dict = field(default_factory=dict)
    fallback_from: Optional["Outcome"] = None  # the failed update whose batch this outcome trained on
    changed: bool = True                  # False: neither the weights nor the prompt changed (its gain is 0)
    update_s: float = 0.0                 # wall time of the update itself (the rest of a step is the loop's)

    @property
    def failed(self) -> bool:
        return self.error is not None

    def error_dict(self) -> dict:
        return {} if self.error is None else {"error_type": type(self.error).__name__,
                                              "error": str(self.error)[:300]}


@dataclass
class Landing:
    """An asynchronous update that finished: its batch, the decision that sent it, its outcome."""
    batch: list
    decision: Any
    outcome: Outcome
    submitted_step: int


class Update(ABC):
    name: ClassVar[str]
    main_only: ClassVar[bool] = False  # runs on the main process only (several processes: the others follow)

    def __init__(self, run: "Run"):
        self.run = run

    @classmethod
    def enabled(cls, cfg) -> bool:
        """Whether a job with this config uses this kind of update."""
        return True

    @classmethod
    def preflight(cls, cfg) -> None:
        """Cheap checks before the model loads (e.g. the teacher answers)."""

    def unavailable(self, step: int) -> Optional[str]:
        """Why this update cannot be chosen now, or None."""
        return None

    @abstractmethod
    def apply(self, batch: list, decision: Any, step: int) -> Outcome:
        """Do the update on ``batch`` as step ``step`` (or submit it and return a pending outcome)."""

    def land(self, step: int, wait: bool = False) -> list[Landing]:
        """Submitted updates that finished (``wait``: all of them), in submission order."""
        return []

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: Optional[dict]) -> None:
        """Restore from a checkpoint; ``None``: a start from step 0 (drop what a killed attempt left)."""

    def close(self) -> None:
        pass

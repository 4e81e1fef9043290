"""The protocol every kind of update follows, what it may see, and what it reports back to the loop.

An update kind is one module with one class, built with an :class:`UpdateContext` (the few things
an update may read or call: the model, its optimizer, the runtime, the renderer, the reward, the
current system prompt, the run directory's paths) and never the ``Run`` itself.
``apply(batch, decision, step) -> Outcome`` does the update now (or submits it,
``Outcome.pending``, and hands it back later from ``land``). What it proposes to change beyond the
weights (a new system prompt, refined examples) is returned in ``Outcome.changes``; the run
applies it, in one place (``Run.apply_changes``), between measuring the reward before and after.
Whatever an update must keep across a restart is in its ``state_dict`` (plain JSON), which the
run's checkpoint saves.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar, Optional


@dataclass(frozen=True)
class UpdateContext:
    """What an update may read or call. Values that change during a run are callables."""
    cfg: Any                                  # the job's config (read only)
    run_dir: Any                              # neurosym.persist.rundir.RunDir: the paths an update may write
    model: Any
    tokenizer: Any
    optimizer: Any
    runtime: Any
    renderer: Any                             # renders examples under the current system prompt
    reward: Any
    train_rows: list                          # the task's training examples
    total_steps: int
    prompt: Callable[[], Optional[str]]       # the current system prompt
    step_seconds: Callable[[], float]         # mean wall time of a recent step
    alert: Callable[[int, str], None]         # say something loudly (console, events, trackers)
    last_checkpoint: Callable[[], Optional[str]]
    lr: Callable[[], float]


@dataclass
class Changes:
    """What an update proposes beyond the weights; ``Run.apply_changes`` validates and applies it."""
    system_prompt: Optional[str] = None       # a new system prompt (None: keep the current one)
    unchanged_reason: Optional[str] = None    # why no new prompt was proposed
    rewrites: list = field(default_factory=list)  # refined examples (neurosym.updates.symbolic.textgrad_step.Rewrite)
    teacher_model: Optional[str] = None       # provenance of the rewrites


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
    changes: Optional[Changes] = None     # what the run applies once the update is done (or has landed)

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
    refines: ClassVar[bool] = False    # may propose refined examples (the run then keeps a remake store)
    gradient_step: ClassVar[bool] = False  # a gradient step on the weights (feeds the grad-norm monitor)

    def __init__(self, ctx: UpdateContext):
        self.ctx = ctx

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

    @property
    def budget_left(self) -> Optional[float]:
        """What is left of a spending budget this update draws on (None: none)."""
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

    def abort(self) -> None:
        """End work in flight at once (a stop was asked); what it was doing must be in the checkpoint
        and be submitted again on resume. Called from a signal handler: take no lock."""

    def close(self) -> None:
        pass

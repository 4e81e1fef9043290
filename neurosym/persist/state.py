"""The run's counters and the saved shape of ``state.json``.

A checkpoint's ``state.json`` is this object, whole: the counters below plus ``components``, the
JSON ``state_dict`` of every stateful part of the :class:`~neurosym.run.run.Run` (prompts, monitors,
router, batches, one entry per kind of update) and ``base``, the identity of the base model the
adapter was trained on (a resume onto another base is refused).
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Optional

from neurosym.persist.atomic import atomic_write_json

STATE_VERSION = 2  # fields added since load with their defaults (stop_reason)
EARLY_STOPPING_KEYS = ("train.early_stopping_patience", "train.early_stopping_metric", "train.early_stopping_min_delta")


@dataclass
class TrainState:
    step: int = 0                    # steps completed, whatever their route
    tokens: int = 0                  # tokens seen by numerical updates
    lr: float = 0.0                  # LR of the last step (checked on resume)
    total_steps: int = 0             # length of the LR schedule
    steps_by_route: dict = field(default_factory=dict)    # route -> steps that took it (landed async ones too)
    ok_by_route: dict = field(default_factory=dict)       # route -> updates that succeeded (landed)
    failed_by_route: dict = field(default_factory=dict)   # route -> updates that failed (batch fell back)
    best_eval: Optional[float] = None  # best value of the early-stopping metric
    evals_since_best: int = 0
    stop_reason: Optional[str] = None  # set when early stopping ended the run at `step` (absent in older files: not stopped)
    wandb_run_id: Optional[str] = None
    base: dict = field(default_factory=dict)          # base-model identity
    components: dict = field(default_factory=dict)    # name -> state_dict
    version: int = STATE_VERSION

    def count(self, table: str, route: str) -> None:
        d = getattr(self, table)
        d[route] = d.get(route, 0) + 1

    def early_stop_on_resume(self, changed_keys=()) -> Optional[str]:
        """What a resume of a run that early stopping ended says (None: it did not stop early).

        It stays stopped ("nothing to do"), unless the resume changes an early-stopping key with
        ``--set``: then the stop is lifted and training goes on under the new rule (a new metric
        starts its best value afresh; a new patience or min_delta keeps the count so far)."""
        if not self.stop_reason:
            return None
        changed = [k for k in EARLY_STOPPING_KEYS if k in set(changed_keys)]
        if not changed:
            return (f"run stopped early at step {self.step} ({self.stop_reason}); nothing to do. To train on, "
                    f"resume with --set train.early_stopping_patience=N (more evaluations, or 0 to turn early "
                    f"stopping off)")
        note = f"the early stop at step {self.step} ({self.stop_reason}) is lifted: {', '.join(changed)} changed"
        self.stop_reason = None
        if "train.early_stopping_metric" in changed:
            self.best_eval, self.evals_since_best = None, 0
        return note

    def save(self, path: Path) -> None:
        atomic_write_json(path, asdict(self))

    @classmethod
    def load(cls, path: Path) -> "TrainState":
        data = json.loads(Path(path).read_text())
        if not isinstance(data, dict) or data.get("version") != STATE_VERSION:
            got = data.get("version") if isinstance(data, dict) else type(data).__name__
            raise ValueError(f"{path}: state version {got} is not {STATE_VERSION}")
        return cls(**data)

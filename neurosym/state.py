"""Everything about a run that must survive a restart, in one object (saved as state.json).

The checkpoint saves this whole, next to the tensors (adapter, optimizer, RNG). Each component
(sampler, monitors, router, teacher accounting, prompt history, remake store position) keeps its
own JSON-safe ``state_dict``; this class only gathers them.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Optional

from neurosym.io import atomic_write_json

STATE_VERSION = 1


@dataclass
class TrainState:
    step: int = 0                    # optimizer/symbolic steps completed
    tokens: int = 0                  # tokens seen by LoRA steps
    lr: float = 0.0                  # learning rate after the last step (checked on resume)
    total_steps: int = 0             # length of the LR schedule the run was started with
    sampler: dict = field(default_factory=dict)
    lora_steps: int = 0
    symbolic_steps: int = 0
    best_eval_loss: Optional[float] = None
    wandb_run_id: Optional[str] = None
    components: dict = field(default_factory=dict)  # name -> state_dict of monitors, router, prompts, ...
    version: int = STATE_VERSION

    def save(self, path: Path) -> None:
        atomic_write_json(path, asdict(self))

    @classmethod
    def load(cls, path: Path) -> "TrainState":
        data = json.loads(Path(path).read_text())
        if data.get("version") != STATE_VERSION:
            raise ValueError(f"{path}: state version {data.get('version')} is not {STATE_VERSION}")
        return cls(**data)

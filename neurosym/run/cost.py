"""What an update cost, in LoRA-step units, so routes are compared on one scale.

A part's cost = (3 x train tokens + forward tokens + generated tokens) / (3 x the tokens of a LoRA
step on a full batch) + ``router.call_cost`` x its teacher calls. A LoRA step's forward counts once and
its backward twice (the usual 1:2 forward:backward cost); every other forward pass (a probe, a
validation, the student's answers inside a symbolic update, the prefill and each decoding step of a
generation) counts once per token (:mod:`neurosym.model.compute`). The unit is learnt from the run's
own LoRA steps (tokens per row, times the global batch); before the first one, a LoRA part costs its
share of a batch and the forward passes are not charged.
"""
from __future__ import annotations

from typing import Optional


class CostModel:
    def __init__(self, per_step: int, call_cost: float):
        self.per_step, self.call_cost = per_step, call_cost
        self.train_tokens, self.rows = 0, 0  # summed over the run's LoRA steps

    @property
    def unit(self) -> Optional[float]:
        """Token passes of one LoRA step on a full batch (3 x its tokens), or None before any."""
        return 3.0 * self.train_tokens / self.rows * self.per_step if self.rows else None

    def observe_lora(self, train_tokens: int, rows: int) -> None:
        if train_tokens > 0 and rows > 0:
            self.train_tokens += int(train_tokens)
            self.rows += int(rows)

    def cost(self, compute: dict, calls: int, rows: int, gradient_step: bool) -> float:
        unit = self.unit
        if unit is None:
            passes = rows / self.per_step if gradient_step else 0.0
        else:
            passes = (3 * compute.get("train_tokens", 0) + compute.get("forward_tokens", 0)
                      + compute.get("generated_tokens", 0)) / unit
        return passes + self.call_cost * calls

    def state_dict(self) -> dict:
        return {"train_tokens": self.train_tokens, "rows": self.rows}

    def load_state_dict(self, state: Optional[dict]) -> None:
        state = state or {}
        self.train_tokens, self.rows = int(state.get("train_tokens", 0)), int(state.get("rows", 0))

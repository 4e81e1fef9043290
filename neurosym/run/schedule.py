"""The learning rate as a function of the step (nanoGPT's ``get_lr``): no scheduler object, no state.

The loop sets the LR at the top of every step, whatever the route, so a symbolic step advances the
schedule exactly like a LoRA step and a resume recomputes the LR from the step (and from a new
``max_steps`` if the user changed it). The shapes are Hugging Face's ``get_scheduler`` ones
(constant_with_warmup, linear, cosine), so numbers match what users know from the Trainer.
"""
from __future__ import annotations

import math


def warmup_steps(train_cfg, total_steps: int) -> int:
    """``train.warmup`` steps, or ``ceil(train.warmup_ratio * total_steps)``."""
    if train_cfg.warmup:
        return int(train_cfg.warmup)
    return int(math.ceil(train_cfg.warmup_ratio * total_steps))


def lr_factor(kind: str, step: int, warmup: int, total: int) -> float:
    """Multiplier of the base LR for the step with 0-based index ``step``."""
    if step < warmup:
        return step / max(1, warmup)
    if kind == "constant":
        return 1.0
    progress = (step - warmup) / max(1, total - warmup)
    if kind == "linear":
        return max(0.0, 1.0 - progress)
    if kind == "cosine":
        return max(0.0, 0.5 * (1.0 + math.cos(math.pi * progress)))
    raise ValueError(f"unknown train.scheduler {kind!r}")


def lr_at(train_cfg, step: int, total_steps: int) -> float:
    """The LR of step number ``step`` (1-based: the first step of a run is step 1)."""
    warmup = warmup_steps(train_cfg, total_steps)
    return train_cfg.lr * lr_factor(train_cfg.scheduler, step - 1, warmup, total_steps)


def set_lr(optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr

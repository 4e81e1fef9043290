"""Where the numbers run: device, precision, backward, clipping, and the process group.

``LocalRuntime`` is one process on one device. The multi-process runtime (accelerate: DDP/FSDP)
implements the same methods, so the loop never knows how many processes there are: the main
process alone talks to the teacher and writes files, decisions are ``broadcast`` from it, and
figures the monitors see are ``mean``-reduced over processes.
"""
from __future__ import annotations

import contextlib
import math
from typing import Any

import torch


class LocalRuntime:
    world_size = 1
    rank = 0
    is_main = True

    def __init__(self, device: torch.device, dtype: torch.dtype):
        self.device, self.dtype = device, dtype
        self.scaler = None
        if device.type == "cuda" and dtype == torch.float16:
            # fp16 needs loss scaling (bf16 does not): the GradScaler skips steps whose grads overflow
            self.scaler = torch.amp.GradScaler("cuda")

    def autocast(self):
        """bf16/fp16 autocast on GPU; plain fp32 on CPU (CPU autocast is slow and changes numerics)."""
        if self.device.type == "cuda" and self.dtype in (torch.bfloat16, torch.float16):
            return torch.autocast("cuda", dtype=self.dtype)
        return contextlib.nullcontext()

    def to_device(self, batch: dict) -> dict:
        return {k: v.to(self.device) for k, v in batch.items()}

    def backward(self, loss: torch.Tensor) -> None:
        (self.scaler.scale(loss) if self.scaler else loss).backward()

    def clip_and_step(self, optimizer, params: list, max_norm: float | None) -> float:
        """Global grad norm before clipping; the optimizer step is skipped (grads zeroed) when it is
        not finite, so a diverging step never reaches the weights."""
        if self.scaler:
            self.scaler.unscale_(optimizer)
        norm = float(torch.nn.utils.clip_grad_norm_(params, max_norm if max_norm else float("inf")))
        if self.scaler:
            self.scaler.step(optimizer)  # skips the step itself on inf/nan grads
            self.scaler.update()
        elif math.isfinite(norm):
            optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return norm

    def mean(self, value: float) -> float:
        return value

    def broadcast(self, obj: Any) -> Any:
        return obj

    def barrier(self) -> None:
        pass


def make_runtime(device: torch.device, dtype: torch.dtype) -> LocalRuntime:
    return LocalRuntime(device, dtype)

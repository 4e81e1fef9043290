"""Where the numbers run: device, precision, backward, clipping, and the process group.

``LocalRuntime`` is one process on one device. The multi-process runtime
(:class:`neurosym.runtime.accelerate.AccelerateRuntime`, DDP or FSDP2 through Hugging Face accelerate) implements
the same methods, so the loop never knows how many processes there are: the main process alone
talks to the teacher and writes files, decisions are ``broadcast`` from it (``from_main``), each
process trains on its ``shard`` of the global batch, and the figures the monitors see are reduced
over processes (``sum``/``mean``). Forward passes outside the step go through
:mod:`neurosym.model.collective`, which with one process runs them here.
"""
from __future__ import annotations

import contextlib
import math
from typing import Any, Callable

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

    # ---- the model the gradient step runs through ---------------------------------------------------
    def prepare(self, model) -> None:
        """Called once the adapter is on the model (the multi-process runtime wraps it in DDP)."""

    def train_model(self, model):
        """The module a training forward goes through (DDP's wrapper when there is one)."""
        return model

    def accumulating(self, model, last: bool):
        """Context of one micro-batch's backward: gradients are synchronised on the ``last`` only."""
        return contextlib.nullcontext()

    def shard(self, batch: list) -> list:
        """This process's part of the global batch (contiguous, the global order kept)."""
        return batch

    def backward(self, loss: torch.Tensor) -> None:
        """``loss`` is this process's share of the global step loss (a sum over its tokens divided by
        the step's global number of target tokens)."""
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

    # ---- collectives (trivial with one process) -----------------------------------------------------
    def sum(self, value: float) -> float:
        return value

    def mean(self, value: float) -> float:
        return value

    def any(self, flag: bool) -> bool:
        return bool(flag)

    def broadcast(self, obj: Any) -> Any:
        """The main process's ``obj`` (JSON-able) on every process."""
        return obj

    def from_main(self, fn: Callable[[], Any], encode: Callable = None, decode: Callable = None) -> Any:
        """``fn()`` run on the main process only; its result on every process: the main process keeps
        its own object, the others get ``decode(encode(result))`` (``encode`` gives something JSON-able)."""
        return fn()

    def barrier(self) -> None:
        pass

    def exclusive(self, run_dir):
        """The run directory's lock, held by the main process for the whole run."""
        return run_dir

    def describe(self) -> str:
        return f"1 process on {self.device}"

    def close(self) -> None:
        pass

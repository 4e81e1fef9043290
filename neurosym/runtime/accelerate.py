"""Several processes (GPUs, nodes): data parallel through Hugging Face accelerate.

Started by ``accelerate launch -m neurosym train CONFIG``, ``torchrun -m neurosym train CONFIG`` or
``neurosym train CONFIG --nproc N``. Each process holds the whole model (one 4-bit base per rank
with QLoRA) and trains on its shard of every global batch; accelerate wraps the model in DDP, which
averages the gradients. Everything else of the job (the router's decision, the teacher, the remake
store, events, checkpoints, W&B) lives on the main process and reaches the others by ``broadcast``.

We write no distributed engine of our own: process-group set-up (any launcher accelerate knows:
torchrun, accelerate launch, SLURM, MPI), device choice and the DDP wrapper are accelerate's. What is
ours is the arithmetic that makes N processes take exactly the step one process would take on the
same global batch: each process's loss is its tokens' loss sum over the *global* number of target
tokens, times ``world_size`` (DDP averages), so the averaged gradient is the single-process gradient.

Objects cross processes as JSON (never pickle). Every collective has the run's
``run.collective_timeout_s``: a rank that died or a main process stuck past it ends the run with a
message instead of a hang; checkpoints are only ever written whole, so the last one stays usable.
"""
from __future__ import annotations

import contextlib
import ctypes
import datetime
import json
import os
import signal
import sys
from typing import Any, Callable

import torch

from neurosym.errors import RunDirError, UserError
from neurosym.runtime.local import LocalRuntime


class DistributedError(UserError, RuntimeError):
    """A setting that several processes cannot run (a batch too small to shard, FSDP): exit 2."""


class CollectiveFailed(DistributedError):
    """A collective call failed or timed out: another process died or the main process is stuck.
    Said as a message like a user error, but no error in the input: exit status 1 (a failed job), so
    a scheduler does not read a dead node as bad input."""

    exit_status = 1


def _die_with_parent() -> None:
    """If the launcher is killed (even with SIGKILL), its workers must not train on as orphans that
    hold the run directory: ask the kernel to kill this process with its parent (Linux)."""
    if not sys.platform.startswith("linux"):
        return
    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGKILL))  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _sharding_refused(kind: str, env) -> str | None:
    """Why neurosym refuses the sharding engine that accelerate was configured with (None: DDP, fine).

    FSDP and DeepSpeed ZeRO-3 shard the parameters, so every forward pass gathers them from all
    processes at once. Several of ours run on the main process alone (the evaluation's generations,
    the symbolic update's student answers, the learned router's gain probe) and would wait forever
    for the others. ZeRO-1/2 shard only the optimizer state, which for a LoRA adapter is a few MB.
    On CPU, accelerate runs an FSDP config as plain DDP (it shards only on GPUs); that silent swap
    is refused too, so a config means the same on every machine."""
    fsdp = kind == "FSDP" or env.get("ACCELERATE_USE_FSDP", "").lower() == "true"
    deepspeed = kind == "DEEPSPEED" or env.get("ACCELERATE_USE_DEEPSPEED", "").lower() == "true"
    if not (fsdp or deepspeed):
        return None
    instead = ("Train data-parallel instead (every process holds the whole base model; with "
               "model.quantization: 4bit, one 4-bit base per GPU): `neurosym train CONFIG --nproc N`, `torchrun "
               "--nproc_per_node N -m neurosym train CONFIG`, or `accelerate launch --config_file F -m neurosym train "
               "CONFIG` with a multi-GPU config F without FSDP or DeepSpeed.")
    if fsdp:
        return (f"your accelerate config asks for FSDP (fsdp_version {env.get('FSDP_VERSION', '1')}), which "
                f"neurosym does not support: FSDP shards the parameters, and the evaluation, symbolic updates and "
                f"the router's gain probe run forward passes on the main process alone, which would wait forever "
                f"for the other processes. {instead}")
    return ("your accelerate config asks for DeepSpeed, which neurosym does not support (deepspeed is not one of "
            "its dependencies, and it is untested): ZeRO-3 shards the parameters, which forward passes on the main "
            "process alone cannot use, and ZeRO-1/2 shard only the optimizer state, a few MB for a LoRA adapter. "
            f"{instead}")


class AccelerateRuntime(LocalRuntime):
    def __init__(self, cfg):
        from accelerate import Accelerator
        from accelerate.utils import InitProcessGroupKwargs

        from neurosym.model.load import resolve_dtype

        _die_with_parent()
        self.timeout_s = cfg.run.collective_timeout_s
        self.run_dir = cfg.run_dir
        self.acc = Accelerator(cpu=not torch.cuda.is_available(), kwargs_handlers=[
            InitProcessGroupKwargs(timeout=datetime.timedelta(seconds=self.timeout_s))])
        kind = self.acc.distributed_type
        refused = _sharding_refused(kind.value, os.environ)
        if refused:
            raise DistributedError(refused)
        device = self.acc.device
        super().__init__(device, resolve_dtype(cfg.model.dtype, device))
        self.world_size = self.acc.num_processes
        self.rank = self.acc.process_index
        self.is_main = self.acc.is_main_process
        self.kind = kind.value
        self.ddp = None
        import torch.distributed as dist
        self._dist = dist
        # collectives of small objects: on the GPU for NCCL, on the CPU for gloo
        self._comm_device = device if dist.get_backend() == "nccl" else torch.device("cpu")

    # ---- the model ---------------------------------------------------------------------------------
    def prepare(self, model) -> None:
        self.ddp = self.acc.prepare_model(model)

    def train_model(self, model):
        return self.ddp if self.ddp is not None else model

    def accumulating(self, model, last: bool):
        if last or self.ddp is None or not hasattr(self.ddp, "no_sync"):
            return contextlib.nullcontext()
        return self.ddp.no_sync()  # the all-reduce happens once, with the step's last micro-batch

    def shard(self, batch: list) -> list:
        n, w, r = len(batch), self.world_size, self.rank
        if n < w:
            raise DistributedError(f"a global batch of {n} examples cannot feed {w} processes: set "
                                   f"train.global_batch_size (or train.batch_size) to at least {w}")
        return batch[r * n // w:(r + 1) * n // w]

    def backward(self, loss: torch.Tensor) -> None:
        super().backward(loss * self.world_size)  # DDP averages over processes; the losses are shares of a sum

    # ---- collectives -------------------------------------------------------------------------------
    def _collective(self, what: str, fn: Callable[[], Any]) -> Any:
        try:
            return fn()
        except Exception as exc:  # DistBackendError, gloo/NCCL timeouts and connection resets
            raise CollectiveFailed(
                f"process {self.rank}/{self.world_size}: {what} failed ({type(exc).__name__}: "
                f"{str(exc).splitlines()[0][:200] if str(exc) else ''}). Another process died, or the main "
                f"process was busy for more than run.collective_timeout_s={self.timeout_s} s (a teacher call, "
                f"an evaluation). Checkpoints are only ever written whole: continue with "
                f"`neurosym resume {self.run_dir}` (on any number of processes).") from None

    def _reduce(self, value: float, op) -> float:
        t = torch.tensor([float(value)], dtype=torch.float64, device=self._comm_device)
        self._collective("an all-reduce", lambda: self._dist.all_reduce(t, op=op))
        return float(t.item())

    def sum(self, value: float) -> float:
        return self._reduce(value, self._dist.ReduceOp.SUM)

    def mean(self, value: float) -> float:
        return self.sum(value) / self.world_size

    def any(self, flag: bool) -> bool:
        return self._reduce(1.0 if flag else 0.0, self._dist.ReduceOp.MAX) > 0

    def broadcast(self, obj: Any) -> Any:
        """JSON over two tensor broadcasts (length, bytes): no pickle crosses processes."""
        dist, dev = self._dist, self._comm_device
        data = json.dumps(obj).encode() if self.is_main else b""
        n = torch.tensor([len(data)], dtype=torch.int64, device=dev)
        self._collective("a broadcast from the main process", lambda: dist.broadcast(n, src=0))
        buf = (torch.frombuffer(bytearray(data), dtype=torch.uint8).to(dev) if self.is_main
               else torch.empty(int(n.item()), dtype=torch.uint8, device=dev))
        if int(n.item()):
            self._collective("a broadcast from the main process", lambda: dist.broadcast(buf, src=0))
        return obj if self.is_main else json.loads(buf.cpu().numpy().tobytes().decode())

    def from_main(self, fn: Callable[[], Any], encode: Callable = None, decode: Callable = None) -> Any:
        value = fn() if self.is_main else None
        data = self.broadcast((encode(value) if encode else value) if self.is_main else None)
        return value if self.is_main else (decode(data) if decode else data)

    def barrier(self) -> None:
        self._collective("a barrier", self._dist.barrier)

    @contextlib.contextmanager
    def exclusive(self, run_dir):
        """The main process takes the run directory's lock; if it cannot, every process stops with
        the same message (rather than the others waiting for a main process that has left)."""
        error = None
        if self.is_main:
            try:
                run_dir.lock()
            except RunDirError as exc:
                error = str(exc)
        error = self.broadcast(error)
        if error:
            raise RunDirError(error)
        try:
            yield run_dir
        finally:
            if self.is_main:
                run_dir.unlock()

    def describe(self) -> str:
        return f"{self.world_size} processes ({self.kind}, {self._dist.get_backend()}), this one on {self.device}"

    def close(self) -> None:
        if self._dist.is_initialized():
            self._dist.destroy_process_group()

"""Several processes (GPUs, nodes) through Hugging Face accelerate: data parallel (DDP), or the frozen
base sharded (FSDP2).

Started by ``accelerate launch -m neurosym train CONFIG``, ``torchrun -m neurosym train CONFIG`` or
``neurosym train CONFIG --nproc N``. Each process trains on its shard of every global batch. Under
DDP each holds the whole model (one 4-bit base per rank with QLoRA) and accelerate's wrapper
averages the gradients. Under FSDP2 (an accelerate config with ``fsdp_version: 2``) accelerate's own
``fsdp2_prepare_model`` shards the frozen base across the processes, and the adapter stays whole
on every one of them, its gradients summed by one all-reduce per step: the adapter and its optimizer
state are then the same full tensors as under one process, so a checkpoint does not depend on the
engine or the number of processes. Everything else of the job (the router's decision, the teacher,
the remake store, events, checkpoints, W&B) lives on the main process and reaches the others by
``broadcast``.

We write no distributed engine of our own: process-group set-up (any launcher accelerate knows:
torchrun, accelerate launch, SLURM, MPI), device choice, the DDP wrapper and the FSDP2 sharding are
accelerate's. What is ours is the arithmetic that makes N processes take exactly the step one
process would take on the same global batch: each process's loss is its tokens' loss sum over the
*global* number of target tokens (times ``world_size`` under DDP, which averages), so the reduced
gradient is the single-process gradient.

Forward passes outside the step (evaluation, generation, the gain probe) are asked for by the main
process and run by all (:mod:`neurosym.model.collective`): every collective starts with a message
from the main process, and a process waiting for one serves the passes handed to it meanwhile.

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
import threading
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


def _engine(kind: str, env) -> str:
    """The engine that accelerate was configured with, as neurosym runs it: ``"ddp"`` or ``"fsdp"``
    (FSDP2); what it cannot run raises :class:`DistributedError`, saying why and what to use instead.

    accelerate reads an FSDP config as ``ACCELERATE_USE_FSDP`` / ``FSDP_*`` in the environment (set by
    ``accelerate launch --config_file``) and takes it on GPUs only: on CPU its distributed type stays
    ``MULTI_CPU``. neurosym reads the same variables on every device, so a config means the same
    everywhere, and shards through accelerate's own FSDP2 preparation (see :meth:`AccelerateRuntime.prepare`)."""
    fsdp = kind == "FSDP" or env.get("ACCELERATE_USE_FSDP", "").lower() == "true"
    deepspeed = kind == "DEEPSPEED" or env.get("ACCELERATE_USE_DEEPSPEED", "").lower() == "true"
    instead = ("Train with FSDP2 instead (`fsdp_version: 2` in the accelerate config: the frozen base sharded), or "
               "data-parallel (`neurosym train CONFIG --nproc N`, or an accelerate config without FSDP or DeepSpeed).")
    if deepspeed:
        raise DistributedError(
            "your accelerate config asks for DeepSpeed, which neurosym does not run: deepspeed is not one of its "
            "dependencies and its engine (ZeRO-3's parameter gathering, its own backward and optimizer step) has "
            f"not been exercised with neurosym's step. {instead}")
    if fsdp and env.get("FSDP_VERSION", "1") != "2":
        raise DistributedError(
            f"your accelerate config asks for FSDP version {env.get('FSDP_VERSION', '1')}; neurosym shards with "
            "FSDP2 (torch's fully_shard) only: set `fsdp_version: 2` in the accelerate config's fsdp_config "
            "(FSDP_VERSION=2), keeping the rest of it.")
    return "fsdp" if fsdp else "ddp"


def _fsdp_plugin():
    """accelerate's FSDP2 plugin as the environment configures it (FSDP_* variables: wrap policy,
    reshard_after_forward, cpu offload, mixed precision...)."""
    from accelerate.utils import FullyShardedDataParallelPlugin
    return FullyShardedDataParallelPlugin(fsdp_version=2)


def _trained_modules(model) -> list:
    """The modules that hold trainable parameters of their own (the LoRA A/B layers, PEFT's
    modules_to_save copies): FSDP leaves them whole on every process."""
    return [m for m in model.modules() if any(p.requires_grad for p in m.parameters(recurse=False))]


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
        self.engine = _engine(kind.value, os.environ)
        device = self.acc.device
        super().__init__(device, resolve_dtype(cfg.model.dtype, device))
        self.world_size = self.acc.num_processes
        self.rank = self.acc.process_index
        self.is_main = self.acc.is_main_process
        self.kind = "FSDP2" if self.engine == "fsdp" else kind.value
        self.ddp = None
        self.model = None  # the model of this process, once prepared (the one collective tasks run on)
        self._serving = False  # inside a collective task
        import torch.distributed as dist
        self._dist = dist
        # collectives of small objects: on the GPU for NCCL, on the CPU for gloo
        self._comm_device = device if dist.get_backend() == "nccl" else torch.device("cpu")

    # ---- the model ---------------------------------------------------------------------------------
    def prepare(self, model) -> None:
        """DDP: accelerate's wrapper. FSDP2: accelerate's ``fsdp2_prepare_model`` on the transformers
        model under the adapter (so that ``generate``, which calls that model, goes through the root
        FSDP module), the frozen base sharded and the adapter's modules left whole on every process
        (``ignored_modules``): its gradients are summed by one all-reduce per step
        (:meth:`clip_and_step`), and the adapter and its optimizer state are full tensors, saved and
        resumed as under one process or DDP, on any number of processes.
        Then forward passes outside the step run on every process (:mod:`neurosym.model.collective`)."""
        from neurosym.model.collective import bind

        if self.engine == "fsdp":
            from accelerate.utils.fsdp_utils import fsdp2_prepare_model

            plugin = getattr(self.acc.state, "fsdp_plugin", None) or _fsdp_plugin()
            plugin.ignored_modules = _trained_modules(model)
            self.acc.state.fsdp_plugin = plugin
            base = model.get_base_model() if hasattr(model, "get_base_model") else model
            fsdp2_prepare_model(self.acc, base)
            base.register_forward_pre_hook(self._refuse_lone_pass)
        else:
            self.ddp = self.acc.prepare_model(model)
        self.model = model
        bind(model, self)

    def _refuse_lone_pass(self, module, args) -> None:
        """FSDP2: a pass without grad (a measurement) that the main process runs alone would wait forever
        for the others: say so at once instead. Measurements go through :mod:`neurosym.model.collective`."""
        if self.is_main and not self._serving and not torch.is_grad_enabled():
            raise RuntimeError(
                "a forward pass of the sharded (FSDP2) model on the main process alone: the other processes "
                "hold the rest of its parameters and would never join. Run it through "
                "neurosym.model.collective (neurosym.model.losses.batch_losses, neurosym.model.generation's functions), "
                "which every process runs.")

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
        # DDP averages over processes and the losses are shares of a sum; under FSDP2 the adapter's
        # gradients are summed (clip_and_step)
        super().backward(loss * self.world_size if self.engine == "ddp" else loss)

    def clip_and_step(self, optimizer, params: list, max_norm: float | None) -> float:
        if self.engine == "fsdp":
            self._sum_grads(params)
        return super().clip_and_step(optimizer, params, max_norm)

    def _sum_grads(self, params: list) -> None:
        """The adapter's gradients summed over processes in one flat all-reduce (a parameter with no
        gradient here counts as zeros, so every process sends the same layout)."""
        if self.scaler is not None:
            raise DistributedError("fp16 with loss scaling under FSDP2 is not supported: use model.dtype: bfloat16")
        flat = torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1) for p in params])
        flat = flat.to(self._comm_device)
        self._sync()
        self._collective("an all-reduce of the adapter's gradients",
                         lambda: self._dist.all_reduce(flat, op=self._dist.ReduceOp.SUM))
        at = 0
        for p in params:
            n = p.numel()
            p.grad = flat[at:at + n].view_as(p).to(p.device, p.dtype if p.grad is None else p.grad.dtype)
            at += n

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
        self._sync()
        self._collective("an all-reduce", lambda: self._dist.all_reduce(t, op=op))
        return float(t.item())

    def sum(self, value: float) -> float:
        return self._reduce(value, self._dist.ReduceOp.SUM)

    def mean(self, value: float) -> float:
        return self.sum(value) / self.world_size

    def any(self, flag: bool) -> bool:
        return self._reduce(1.0 if flag else 0.0, self._dist.ReduceOp.MAX) > 0

    def _bcast_json(self, obj: Any) -> Any:
        """JSON over two tensor broadcasts (length, bytes) from the main process: no pickle crosses processes."""
        dist, dev = self._dist, self._comm_device
        data = json.dumps(obj).encode() if self.is_main else b""
        n = torch.tensor([len(data)], dtype=torch.int64, device=dev)
        self._collective("a broadcast from the main process", lambda: dist.broadcast(n, src=0))
        buf = (torch.frombuffer(bytearray(data), dtype=torch.uint8).to(dev) if self.is_main
               else torch.empty(int(n.item()), dtype=torch.uint8, device=dev))
        if int(n.item()):
            self._collective("a broadcast from the main process", lambda: dist.broadcast(buf, src=0))
        return obj if self.is_main else json.loads(buf.cpu().numpy().tobytes().decode())

    def _gather_json(self, obj: Any) -> list | None:
        """Every process's ``obj`` (JSON), in rank order, on the main process (None on the others)."""
        dist, dev = self._dist, self._comm_device
        data = json.dumps(obj).encode()
        n = torch.tensor([len(data)], dtype=torch.int64, device=dev)
        sizes = [torch.zeros_like(n) for _ in range(self.world_size)]
        self._collective("a gather to the main process", lambda: dist.all_gather(sizes, n))
        width = max(int(s.item()) for s in sizes)
        buf = torch.zeros(width, dtype=torch.uint8, device=dev)
        buf[:len(data)] = torch.frombuffer(bytearray(data), dtype=torch.uint8).to(dev) if data else buf[:0]
        bufs = [torch.zeros_like(buf) for _ in range(self.world_size)]
        self._collective("a gather to the main process", lambda: dist.all_gather(bufs, buf))
        if not self.is_main:
            return None
        return [json.loads(b[:int(s.item())].cpu().numpy().tobytes().decode()) for b, s in zip(bufs, sizes)]

    # ---- the main process's requests -----------------------------------------------------------------
    # Every collective starts with a message from the main process. While it runs code of its own
    # (the teacher, an evaluation), the others wait for that message, and serve any forward pass it
    # hands them meanwhile (``spread``): a sharded model's passes need every process.
    def _sync(self) -> None:
        """The start of a collective: the main process says go; the others serve its tasks until then."""
        if self.is_main:
            self._bcast_json({"go": True})
        else:
            self._await_main()

    def _await_main(self) -> dict:
        while True:
            msg = self._bcast_json(None)
            if "task" not in msg:
                return msg
            self._serve(msg)

    def spread(self, name: str, rows: list, params: dict) -> list:
        """Task ``name`` on ``rows`` by every process (main process only; see :mod:`neurosym.model.collective`)."""
        if not self.is_main:
            raise RuntimeError(f"process {self.rank}: a collective {name!r} asked for by a process other than the main "
                               f"one (they serve the main process's requests)")
        if threading.current_thread() is not threading.main_thread():
            raise RuntimeError(f"a collective {name!r} asked for from thread {threading.current_thread().name}: "
                               f"forward passes on a model shared by several processes run on the loop's thread")
        msg = {"task": name, "rows": rows, "params": {**params, "lockstep": self.engine == "fsdp"}}
        self._bcast_json(msg)
        return self._serve(msg)

    def _serve(self, msg: dict) -> list | None:
        """This process's share of a task; the main process gets every share back, in order."""
        import neurosym.model.generation  # noqa: F401 - they register their tasks
        import neurosym.model.losses  # noqa: F401
        from neurosym.model.collective import padded_part, run_task

        rows, real = padded_part(msg["rows"], self.world_size, self.rank)
        # a task that fails here ends this process: the others' passes would wait for this one's
        # collectives, so the job stops (they report the lost process) rather than run out of step
        self._serving = True
        try:
            out = run_task(self.model, msg["task"], rows, msg["params"])[:real]
        finally:
            self._serving = False
        self._reshard()
        replies = self._gather_json(out)
        return None if replies is None else [row for rep in replies for row in rep]

    def _reshard(self) -> None:
        """FSDP2: every group sharded again after a task. Groups that stay gathered after a forward (the
        root, the embeddings/head) would otherwise stay so on some processes only: a checkpoint, saved by
        the main process alone, reshards them there (``state_dict``), and the next pass would gather them
        on one process and not the others."""
        if self.engine != "fsdp":
            return
        from torch.distributed.fsdp import FSDPModule
        for module in self.model.modules():
            if isinstance(module, FSDPModule):
                module.reshard()

    def broadcast(self, obj: Any) -> Any:
        """The main process's ``obj`` (JSON) on every process; the others serve its tasks until it comes."""
        if self.is_main:
            self._bcast_json({"value": obj})
            return obj
        return self._await_main()["value"]

    def from_main(self, fn: Callable[[], Any], encode: Callable = None, decode: Callable = None) -> Any:
        value = fn() if self.is_main else None
        data = self.broadcast((encode(value) if encode else value) if self.is_main else None)
        return value if self.is_main else (decode(data) if decode else data)

    def barrier(self) -> None:
        self._sync()
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

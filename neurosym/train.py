"""The training recipe: for each batch, monitor -> route -> LoRA or symbolic step -> record.

Everything is built by small modules (config, data, model, steps, checkpoint, tracking); this file
only wires them together so the loop can be read top to bottom.
"""
from __future__ import annotations

import logging
import math
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import torch

from neurosym.checkpoint import latest_checkpoint, restore_checkpoint, save_checkpoint
from neurosym.config import Config, save_resolved
from neurosym.data import EpochSampler, Renderer, collate, load_examples
from neurosym.events import EventLog
from neurosym.model import autocast_for, load_for_training
from neurosym.progress import Progress
from neurosym.rng import seed_everything
from neurosym.state import TrainState
from neurosym.steps.lora import eval_loss, lora_step
from neurosym.tracking import Tracker

log = logging.getLogger(__name__)


class RunDirError(RuntimeError):
    pass


class ResumeMismatch(RuntimeError):
    pass


@dataclass
class Outcome:
    run_dir: Path
    state: TrainState
    interrupted: bool
    final_eval_loss: Optional[float]


class StopFlag:
    """SIGINT/SIGTERM ask the loop to stop at the next step boundary (after a checkpoint);
    a second Ctrl-C stops at once."""

    def __init__(self):
        self.requested = False
        self._old = {}

    def __enter__(self):
        for sig in (signal.SIGINT, signal.SIGTERM):
            self._old[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame):
        if self.requested and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.requested = True
        print("\nstopping after this step; saving a checkpoint (Ctrl-C again to abort now)",
              file=sys.stderr, flush=True)

    def __exit__(self, *exc):
        for sig, old in self._old.items():
            signal.signal(sig, old)


def total_steps(cfg: Config, n_train: int) -> int:
    if cfg.train.max_steps:
        return cfg.train.max_steps
    per_step = cfg.train.batch_size * cfg.train.grad_accum
    return max(1, math.ceil(cfg.train.epochs * n_train / per_step))


def make_optimizer(cfg: Config, model, steps: int):
    from transformers import get_scheduler

    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=cfg.train.lr, weight_decay=cfg.train.weight_decay)
    name = {"constant": "constant_with_warmup", "linear": "linear", "cosine": "cosine"}[cfg.train.scheduler]
    scheduler = get_scheduler(name, optimizer, num_warmup_steps=cfg.train.warmup, num_training_steps=steps)
    return optimizer, scheduler


def prepare_run_dir(cfg: Config, resume: bool) -> Path:
    run_dir = cfg.run_dir
    if run_dir.exists() and not resume and any(run_dir.glob("events.jsonl")):
        raise RunDirError(f"{run_dir} already holds a run. Continue it with `neurosym resume {run_dir}` "
                          f"(or --resume), or start a new one with --set run.name=<new name>.")
    run_dir.mkdir(parents=True, exist_ok=True)
    save_resolved(cfg, run_dir / "config.yaml")
    return run_dir


def micro_batches(examples, renderer: Renderer, cfg: Config, pad_id: int, device) -> list[dict]:
    bs = cfg.train.batch_size
    out = []
    for i in range(0, len(examples), bs):
        batch = collate([renderer.encode(ex) for ex in examples[i:i + bs]], pad_id)
        out.append({k: v.to(device) for k, v in batch.items()})
    return out


def scheduled_lr(scheduler) -> float:
    """The LR the schedule gives at its current step, computed afresh (not the restored _last_lr)."""
    return scheduler.base_lrs[0] * scheduler.lr_lambdas[0](scheduler.last_epoch)


def verify_restored(state: TrainState, ckpt: Path, scheduler, sampler: EpochSampler, steps: int) -> None:
    """Guard against the classic resume bugs: LR schedule reset, data order drift."""
    problems = []
    if ckpt.name != f"step-{state.step}":
        problems.append(f"state.json step {state.step} but folder {ckpt.name}")
    if scheduler.last_epoch != state.step:
        problems.append(f"scheduler at step {scheduler.last_epoch}, state at {state.step}")
    lr = scheduled_lr(scheduler)
    if steps != state.total_steps:  # the user asked for a longer/shorter run: the schedule changes here
        print(f"note: the LR schedule was built for {state.total_steps} steps and now spans {steps}; "
              f"lr at step {state.step} moves from {state.lr:.3g} to {lr:.3g}", file=sys.stderr)
        for group in scheduler.optimizer.param_groups:
            group["lr"] = lr
        scheduler._last_lr = [lr] * len(scheduler.optimizer.param_groups)
        state.total_steps, state.lr = steps, lr
    elif not math.isclose(lr, state.lr, rel_tol=1e-9, abs_tol=1e-12):
        problems.append(f"the schedule gives lr {lr} at step {state.step}, state.json says {state.lr}")
    if sampler.state_dict() != state.sampler:
        problems.append(f"sampler {sampler.state_dict()} != saved {state.sampler}")
    if problems:
        raise ResumeMismatch(f"{ckpt}: restored state disagrees with state.json: " + "; ".join(problems))


def train(cfg: Config, resume: bool = False, quiet: Optional[bool] = None) -> Outcome:
    # ---- set-up: data first (cheap, catches bad lines before a model loads), then the model
    run_dir = prepare_run_dir(cfg, resume)
    train_set, report = load_examples(cfg.data.train, cfg.data)
    eval_set = load_examples(cfg.data.eval, cfg.data)[0] if cfg.data.eval else []
    if report.skipped:
        log.warning("skipped %d bad lines in %s (first: %s)", report.skipped, report.path, report.errors[0])
    seed_everything(cfg.run.seed)
    model, tokenizer, device, dtype = load_for_training(cfg, run_dir.parent / ".models")
    autocast = autocast_for(device, dtype)
    renderer = Renderer(tokenizer, cfg.data.max_length, cfg.data.system_prompt)
    steps = total_steps(cfg, len(train_set))
    optimizer, scheduler = make_optimizer(cfg, model, steps)
    sampler = EpochSampler(len(train_set), cfg.run.seed)
    per_step = cfg.train.batch_size * cfg.train.grad_accum

    state = TrainState(lr=scheduler.get_last_lr()[0], total_steps=steps, sampler=sampler.state_dict())
    ckpt = latest_checkpoint(run_dir) if resume else None
    if ckpt is not None:
        state = restore_checkpoint(ckpt, model, optimizer, scheduler)
        sampler.load_state_dict(state.sampler)
        verify_restored(state, ckpt, scheduler, sampler, steps)
        print(f"resumed from {ckpt} (step {state.step}/{steps})", file=sys.stderr)
    elif resume:
        print(f"no complete checkpoint in {run_dir}; starting from step 0", file=sys.stderr)

    events = EventLog(run_dir / "events.jsonl", resume_step=state.step)
    tracker = Tracker(cfg, run_dir)
    state.wandb_run_id = tracker.run_id
    progress = Progress(steps, state.step, cfg.train.log_every, quiet)
    model.train()

    def evaluate() -> Optional[float]:
        if not eval_set:
            return None
        loss, _ = eval_loss(model, micro_batches(eval_set, renderer, cfg, tokenizer.pad_token_id, device), autocast)
        events.write({"kind": "eval", "step": state.step, "eval_loss": loss, "eval_ppl": math.exp(min(loss, 50))})
        tracker.log({"eval/loss": loss, "eval/ppl": math.exp(min(loss, 50))}, state.step)
        progress.write(f"step {state.step}: eval loss {loss:.4f}")
        return loss

    def save() -> Path:
        state.sampler = sampler.state_dict()
        return save_checkpoint(run_dir, model, optimizer, scheduler, state, cfg.train.keep_last_n)

    interrupted, last_saved, eval_loss_value = False, state.step, None
    try:
        with StopFlag() as stop:
            while state.step < steps and not stop.requested:
                t0 = time.perf_counter()
                batch = [train_set[i] for i in sampler.take(per_step)]
                # ---- numerical update
                result = lora_step(model, optimizer, scheduler,
                                   micro_batches(batch, renderer, cfg, tokenizer.pad_token_id, device),
                                   cfg.train.max_grad_norm, autocast)
                # ---- record
                state.step += 1
                state.lora_steps += 1
                state.tokens += result.tokens
                state.lr = scheduler.get_last_lr()[0]
                dt = time.perf_counter() - t0
                record = {"kind": "train", "step": state.step, "route": "lora", "loss": result.loss,
                          "grad_norm": result.grad_norm, "lr": state.lr, "tokens": result.tokens,
                          "tokens_per_s": result.tokens / dt, "wall_s": dt, "time": time.time()}
                events.write(record)
                tracker.log({"train/loss": result.loss, "train/grad_norm": result.grad_norm,
                             "train/lr": state.lr, "train/tokens_per_s": record["tokens_per_s"]}, state.step)
                progress.update(state.step, {"loss": result.loss, "gnorm": result.grad_norm, "lr": state.lr,
                                             "tok/s": int(record["tokens_per_s"])})
                if cfg.train.eval_every and state.step % cfg.train.eval_every == 0:
                    eval_loss_value = evaluate()
                if cfg.train.save_every and state.step % cfg.train.save_every == 0:
                    save()
                    last_saved = state.step
            interrupted = stop.requested and state.step < steps
        if state.step != last_saved or latest_checkpoint(run_dir) is None:
            save()
        if interrupted:
            progress.write(f"interrupted at step {state.step}; checkpoint saved. "
                           f"Continue with: neurosym resume {run_dir}")
        else:
            if not (cfg.train.eval_every and state.step % cfg.train.eval_every == 0):
                eval_loss_value = evaluate()
            final = latest_checkpoint(run_dir)
            tracker.log_artifact([final / "adapter_model.safetensors", final / "adapter_config.json"],
                                 f"{cfg.run.name}-adapter", "lora-adapter")
    finally:
        progress.close()
        events.close()
        sync = tracker.finish(exit_code=130 if interrupted else 0)
        if sync:
            print(f"W&B run saved offline; upload it with: {sync}", file=sys.stderr)
    return Outcome(run_dir, state, interrupted, eval_loss_value)

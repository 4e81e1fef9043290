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

from classifiers import make_router
from classifiers.base import BatchStats
from monitors.suite import MonitorSuite
from neurosym.batches import BatchSource
from neurosym.checkpoint import latest_checkpoint, restore_checkpoint, save_checkpoint
from neurosym.config import Config, save_resolved
from neurosym.data import EpochSampler, Renderer, load_examples, make_micro_batches
from neurosym.events import EventLog
from neurosym.gain import GainProbe
from neurosym.model import autocast_for, load_for_training
from neurosym.progress import Progress
from neurosym.prompts import PromptHistory
from neurosym.reward import make_reward
from neurosym.rng import seed_everything
from neurosym.state import TrainState
from neurosym.steps.lora import eval_loss, lora_step
from neurosym.symbolic_route import Job, SymbolicRoute
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
    encodings = [renderer.encode(ex) for ex in examples]
    batches = make_micro_batches(encodings, cfg.train.batch_size, pad_id, cfg.data.packing, cfg.data.max_length)
    return [{k: v.to(device) for k, v in b.items()} for b in batches]


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
    # ---- set-up: data and teacher first (cheap, fail fast), then the student model
    run_dir = prepare_run_dir(cfg, resume)
    train_set, report = load_examples(cfg.data.train, cfg.data)
    eval_set = load_examples(cfg.data.eval, cfg.data)[0] if cfg.data.eval else []
    if report.skipped:
        log.warning("skipped %d bad lines in %s (first: %s)", report.skipped, report.path, report.errors[0])
    uses_symbolic = cfg.router.kind != "always_lora"
    if uses_symbolic and cfg.teacher.provider == "openai":
        from neurosym.teacher import preflight
        preflight(cfg.teacher)
    reward = make_reward(cfg.reward)
    seed_everything(cfg.run.seed)
    model, tokenizer, device, dtype = load_for_training(cfg, run_dir.parent / ".models")
    autocast = autocast_for(device, dtype)
    renderer = Renderer(tokenizer, cfg.data.max_length, cfg.data.system_prompt, cfg.data.train_on)
    train_set, unrendered = renderer.check(train_set, cfg.data.on_error)  # before step 1, not at step 900
    eval_set = renderer.check(eval_set, cfg.data.on_error)[0] if eval_set else eval_set
    if unrendered:
        log.warning("skipped %d examples that cannot be rendered (first: %s)", len(unrendered), unrendered[0])
    steps = total_steps(cfg, len(train_set))
    optimizer, scheduler = make_optimizer(cfg, model, steps)
    per_step = cfg.train.batch_size * cfg.train.grad_accum
    pad_id = tokenizer.pad_token_id

    prompts = PromptHistory(cfg.data.system_prompt)
    batches = BatchSource(train_set, cfg.run.seed, per_step, cfg.remake.mix_ratio if uses_symbolic else 0.0)
    monitors = MonitorSuite(cfg.monitors)
    router = make_router(cfg.router, cfg.run.seed)
    symbolic = None
    if uses_symbolic:
        from neurosym.remake.guards import prompt_key
        seen = {prompt_key(ex.prompt) for ex in train_set}
        symbolic = SymbolicRoute(cfg, run_dir, model, tokenizer, reward, seen)
    probe = None
    if cfg.router.kind == "reward_classifier":
        probe_set = (load_examples(cfg.reward.probe, cfg.data)[0] if cfg.reward.probe else eval_set or train_set)
        probe = GainProbe(probe_set[: cfg.reward.probe_size], reward, renderer, pad_id, device, autocast,
                          generate=lambda ex: symbolic.student.answer(ex, prompts.current),
                          batch_size=cfg.train.batch_size)

    state = TrainState(lr=scheduler.get_last_lr()[0], total_steps=steps, sampler=batches.sampler.state_dict())
    resubmit: list[Job] = []
    ckpt = latest_checkpoint(run_dir) if resume else None
    if ckpt is not None:
        state = restore_checkpoint(ckpt, model, optimizer, scheduler)
        c = state.components
        prompts.load_state_dict(c["prompts"])
        monitors.load_state_dict(c["monitors"])
        router.load_state_dict(c["router"])
        refined = []
        if symbolic is not None and "symbolic" in c:
            resubmit = symbolic.load_state_dict(c["symbolic"])
            refined = symbolic.store.examples()
            symbolic.seen.update(prompt_key(ex.prompt) for ex in refined)
        batches.load_state_dict(c["batches"], refined)
        renderer.system_prompt = prompts.current
        verify_restored(state, ckpt, scheduler, batches.sampler, steps)
        print(f"resumed from {ckpt} (step {state.step}/{steps})", file=sys.stderr)
    elif resume:
        print(f"no complete checkpoint in {run_dir}; starting from step 0", file=sys.stderr)
    elif symbolic is not None:
        symbolic.store.truncate_after(0)  # a fresh run never inherits rows of a crashed first attempt

    events = EventLog(run_dir / "events.jsonl", resume_step=state.step)
    if state.step == 0:
        events.write({"kind": "prompt", "step": 0, "version": 0, "text": prompts.current})
    tracker = Tracker(cfg, run_dir)
    state.wandb_run_id = tracker.run_id
    progress = Progress(steps, state.step, cfg.train.log_every, quiet)
    fallbacks: list[tuple[list, str]] = []   # batches whose symbolic update failed: they get a LoRA step
    decisions_table: list = []
    model.train()
    if symbolic is not None:
        for job in resubmit:
            symbolic.submit(job)

    # ---- the pieces of one step
    def lora(batch):
        return lora_step(model, optimizer, scheduler, micro_batches(batch, renderer, cfg, pad_id, device),
                         cfg.train.max_grad_norm, autocast)

    def measure(batch):
        return probe.measure(model, batch) if probe is not None else None

    def apply_symbolic(landed, record: dict, at_step: int) -> None:
        """Land a finished symbolic update: new prompt version, refined examples, accounting."""
        symbolic.note_outcome(landed, at_step)
        usage = landed.usage
        info = {"calls": usage.get("calls", 0), "cost_usd": usage.get("cost_usd", 0.0),
                "tokens": usage.get("prompt_tokens", 0) + usage.get("completion_tokens", 0),
                "submitted_step": landed.job.submitted_step, "accepted": 0, "rejected": {}, "malformed": False}
        record["symbolic"] = info
        if landed.error is not None:
            info["error"] = landed.error[:300]
            return
        result = landed.result
        info.update(accepted=len(result.rewrites), rejected=dict(result.rejected), malformed=result.malformed)
        version = prompts.propose(result.new_system_prompt, at_step) if result.new_system_prompt else None
        if version is not None:
            renderer.system_prompt = prompts.current
            events.write({"kind": "prompt", "step": at_step, "version": version, "text": prompts.current})
            progress.write(f"step {at_step}: system prompt v{version}")
        batches.add_refined(symbolic.store_rewrites(result, at_step, prompts.version))

    def finish_symbolic(landed, at_step: int) -> dict:
        """Apply a landed update (as of step ``at_step``), measure what it bought, and hand a
        failure back to LoRA."""
        record = {"route": "symbolic"}
        before = measure(landed.job.batch)
        apply_symbolic(landed, record, at_step)
        if landed.error is not None:
            fallbacks.append((landed.job.batch, landed.error))
            return record
        if before is not None:
            record["gain"] = measure(landed.job.batch) - before
            if landed.job.decision is not None:
                router.learn(landed.job.decision, record["gain"], record["symbolic"]["cost_usd"])
        return record

    def evaluate() -> Optional[float]:
        if not eval_set:
            return None
        loss, _ = eval_loss(model, micro_batches(eval_set, renderer, cfg, pad_id, device), autocast)
        events.write({"kind": "eval", "step": state.step, "eval_loss": loss, "eval_ppl": math.exp(min(loss, 50)),
                      "prompt_version": prompts.version})
        tracker.log({"eval/loss": loss, "eval/ppl": math.exp(min(loss, 50))}, state.step)
        progress.write(f"step {state.step}: eval loss {loss:.4f}")
        return loss

    def save() -> Path:
        state.sampler = batches.sampler.state_dict()
        state.components = {"prompts": prompts.state_dict(), "monitors": monitors.state_dict(),
                            "router": router.state_dict(), "batches": batches.state_dict()}
        if symbolic is not None:
            state.components["symbolic"] = symbolic.state_dict()
        return save_checkpoint(run_dir, model, optimizer, scheduler, state, cfg.train.keep_last_n)

    interrupted, last_saved, eval_loss_value = False, state.step, None
    try:
        with StopFlag() as stop:
            while state.step < steps and not stop.requested:
                t0 = time.perf_counter()
                # ---- land finished asynchronous symbolic updates (at a step boundary)
                # (a landing belongs to the step about to run: a checkpoint taken before it still
                # lists the job as in flight, and resume submits it again; nothing twice, nothing lost)
                if symbolic is not None and symbolic.async_:
                    for landed in symbolic.collect():
                        landed_rec = finish_symbolic(landed, at_step=state.step + 1)
                        events.write({"kind": "symbolic", "step": state.step + 1, **landed_rec})
                # ---- monitor
                forced = fallbacks.pop(0) if fallbacks else None
                batch = forced[0] if forced else batches.next()
                reason = symbolic.unavailable_reason(state.step) if symbolic else "no teacher configured"
                signals = monitors.signals(prompts.version, symbolic.budget_left if symbolic else None,
                                           reason is None, reason)
                # ---- route
                before = measure(batch)
                stats = BatchStats(reward_before=before, prompts=tuple(ex.prompt for ex in batch))
                decision = None if forced else router.decide(signals, stats)
                record = {"route": "lora", "fallback": forced[1][:300] if forced else None}
                result = None
                # ---- symbolic update
                if decision is not None and decision.route == "symbolic":
                    job = Job(state.step + 1, batch, prompts.current, decision)
                    if symbolic.async_:
                        symbolic.submit(job)
                        record = {"route": "symbolic", "symbolic": {"submitted_step": state.step + 1}}
                    else:
                        record = finish_symbolic(symbolic.run(job), at_step=state.step + 1)
                        if record["symbolic"].get("error"):  # the same batch takes a LoRA step instead
                            fallbacks.pop()
                            record.update(route="lora", fallback=record["symbolic"]["error"])
                    if record["route"] == "symbolic":
                        scheduler.step()  # the LR schedule follows steps, whatever their route
                        state.symbolic_steps += 1
                # ---- numerical update
                if record["route"] == "lora":
                    result = lora(batch)
                    state.lora_steps += 1
                    state.tokens += result.tokens
                    if before is not None:
                        record["gain"] = measure(batch) - before
                        if decision is not None:
                            router.learn(decision, record["gain"], 0.0)
                # ---- record
                state.step += 1
                state.lr = scheduler.get_last_lr()[0]
                monitors.observe(state.step, result.loss if result else None,
                                 result.grad_norm if result else None, record["route"])
                dt = time.perf_counter() - t0
                record = {"kind": "train", "step": state.step, **record,
                          "loss": result.loss if result else None, "grad_norm": result.grad_norm if result else None,
                          "lr": state.lr, "tokens": result.tokens if result else 0, "wall_s": dt,
                          "tokens_per_s": (result.tokens / dt) if result else 0.0, "time": time.time(),
                          "prompt_version": prompts.version,
                          "refined_in_batch": sum(ex.source.startswith("remake:") for ex in batch)}
                if decision is not None and cfg.router.kind != "always_lora":
                    record["decision"] = decision.as_dict()  # features, predicted gains, route, explored
                    record["signals"] = signals.as_dict()
                    decisions_table.append([state.step, decision.route, decision.explored, decision.reason,
                                            record.get("gain")])
                events.write(record)
                metrics = {"train/lr": state.lr, "route/symbolic": int(record["route"] == "symbolic"),
                           "prompt/version": prompts.version}
                if result:
                    metrics.update({"train/loss": result.loss, "train/grad_norm": result.grad_norm,
                                    "train/tokens_per_s": record["tokens_per_s"]})
                if "signals" in record:
                    metrics.update({f"monitor/{k}": v for k, v in record["signals"].items()
                                    if isinstance(v, (int, float)) and not isinstance(v, bool)})
                    metrics["monitor/plateau"] = int(bool(record["signals"].get("plateau")))
                if symbolic is not None:
                    u = symbolic.teacher.usage
                    metrics.update({"symbolic/calls": u.calls, "symbolic/cost_usd": u.cost_usd,
                                    "symbolic/tokens": u.prompt_tokens + u.completion_tokens,
                                    "symbolic/accepted": symbolic.store.count()})
                    sym = record.get("symbolic") or {}
                    for why, n in (sym.get("rejected") or {}).items():
                        metrics[f"symbolic/rejected_{why}"] = n
                tracker.log(metrics, state.step)
                progress.update(state.step, {"loss": result.loss if result else float("nan"),
                                             "gnorm": result.grad_norm if result else float("nan"),
                                             "lr": state.lr, "route": record["route"][:3]})
                if cfg.train.eval_every and state.step % cfg.train.eval_every == 0:
                    eval_loss_value = evaluate()
                if cfg.train.save_every and state.step % cfg.train.save_every == 0:
                    save()
                    last_saved = state.step
            interrupted = stop.requested and state.step < steps
        if symbolic is not None and symbolic.async_ and not interrupted:
            for landed in symbolic.collect(wait=True):  # let the last updates land before the final save
                events.write({"kind": "symbolic", "step": state.step, **finish_symbolic(landed, state.step)})
        if state.step != last_saved or latest_checkpoint(run_dir) is None or (symbolic and symbolic.async_):
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
            tracker.log_table("router/decisions", ["step", "route", "explored", "reason", "gain"],
                              decisions_table, state.step)
            tracker.log_table("prompt/versions", ["version", "step", "text"],
                              [[v["version"], v["step"], v["text"]] for v in prompts.versions], state.step)
            if symbolic is not None:
                tracker.log_table("symbolic/rewrites", ["step", "parent_prompt", "prompt", "response", "feedback"],
                                  [[r["step"], r["parent_prompt"], r["prompt"], r["response"], r["feedback"][:500]]
                                   for r in symbolic.store.rows()[:100]], state.step)
    finally:
        progress.close()
        events.close()
        if symbolic is not None:
            symbolic.close()
        sync = tracker.finish(exit_code=130 if interrupted else 0)
        if sync:
            print(f"W&B run saved offline; upload it with: {sync}", file=sys.stderr)
    return Outcome(run_dir, state, interrupted, eval_loss_value)

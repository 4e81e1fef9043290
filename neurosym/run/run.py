"""A training job's parts and all of its state: the ``Run``.

Everything mutable that must survive a restart is an attribute listed in :attr:`Run.SAVED` (plus
one entry per kind of update, and the tensors: adapter, optimizer, RNG), and a checkpoint saves
exactly that. The loop (``neurosym.train``) only calls methods of this object.
"""
from __future__ import annotations

import collections
import dataclasses
import math
import sys
import time
from pathlib import Path
from typing import Optional

from classifiers import BatchStats, Decision, PartResult, make_router
from monitors import MonitorSuite
from neurosym.run.batches import BatchSource
from neurosym.persist.checkpoint import apply_checkpoint, latest_checkpoint, newest_intact_checkpoint, save_checkpoint
from neurosym.config.schema import ConfigError
from neurosym.data import Example, Renderer, load_examples, load_splits
from neurosym.errors import ResumeMismatch
from neurosym.model.compute import ComputeMeter
from neurosym.run.cost import CostModel
from neurosym.run.gain import GainProbe
from neurosym.run.inspect import Inspector, RowVerdicts, gain_by_kind
from neurosym.model.generation import answer_examples
from neurosym.plugins import load_object
from neurosym.model.load import base_identity, identity_mismatch, load_for_training
from neurosym.model.optim import make_optimizer
from neurosym.run.prompt_versions import PromptVersions
from neurosym.observe.recorder import QuietRecorder, Recorder
from neurosym.remake.store import RemakeStore
from neurosym.reward import make_reward
from neurosym.persist.rng import seed_everything
from neurosym.runtime import make_runtime
from neurosym.run.schedule import lr_at, set_lr
from neurosym.persist.state import TrainState
from neurosym.model.losses import encode_batches, eval_loss
from neurosym.updates import (DEFAULT_ROUTE, UPDATES, Follower, Outcome, UpdateContext, enabled_routes, outcome_as_dict,
                              outcome_from_dict)

SAMPLES = 8  # sample generations logged to W&B at each evaluation
SCHEDULE_KEYS = ("train.lr", "train.scheduler", "train.warmup", "train.warmup_ratio")


def examples_per_step(train_cfg, world_size: int = 1) -> int:
    """The global batch: ``train.global_batch_size``, else batch_size x grad_accum per process."""
    return train_cfg.global_batch_size or train_cfg.batch_size * train_cfg.grad_accum * world_size


def total_steps(cfg, n_train: int, world_size: int = 1) -> int:
    if cfg.train.max_steps:
        return cfg.train.max_steps
    return max(1, math.ceil(cfg.train.epochs * n_train / examples_per_step(cfg.train, world_size)))


class Run:
    SAVED = ("prompts", "monitors", "router", "batches", "verdicts", "costs")  # + each kind of update, by its name

    def __init__(self, cfg, run_dir, quiet: Optional[bool] = None, runtime=None):
        # data and teacher first (cheap, fail fast), then the student model
        self.cfg, self.dir, self.quiet = cfg, run_dir, quiet
        splits = load_splits(cfg.data)  # both splits read first: one error names every bad source
        self.train_set, report = splits["train"]
        self.eval_set = splits["eval"][0] if "eval" in splits else []
        if report.skipped:
            print(f"warning: skipped {report.skipped} bad lines in {report.path} (first: {report.errors[0]})",
                  file=sys.stderr)
        self.routes = enabled_routes(cfg)
        router_factory = (load_object(cfg.router.function, "router.function", ConfigError, cfg.run.python_path,
                                      example=" (a factory (router_cfg, seed, routes) -> classifiers.Router)")
                          if cfg.router.kind == "function" else None)
        for name in self.routes:
            if runtime is None or runtime.is_main or not UPDATES[name].main_only:  # the teacher: main process
                UPDATES[name].preflight(cfg)
        self.reward = make_reward(cfg.reward, cfg.run.python_path)
        seed_everything(cfg.run.seed)
        self.model, self.tokenizer, device, dtype = load_for_training(cfg, run_dir.models_cache)
        self.runtime = runtime or make_runtime(device, dtype)  # several processes: made before the model loads
        self.runtime.prepare(self.model)
        self.pad_id = self.tokenizer.pad_token_id
        self.renderer = Renderer(self.tokenizer, cfg.data.max_length, cfg.data.system_prompt, cfg.data.train_on)
        # every example rendered once before step 1: a template refusal or an example truncated to
        # nothing is refused (file:line) or skipped and counted now, not at step 900
        self.train_set, unrendered = self.renderer.check(self.train_set, cfg.data.on_error)
        self.eval_set = self.renderer.check(self.eval_set, cfg.data.on_error)[0] if self.eval_set else self.eval_set
        if unrendered:
            print(f"warning: skipped {len(unrendered)} examples that cannot be rendered (first: {unrendered[0]})",
                  file=sys.stderr)
        self.per_step = examples_per_step(cfg.train, self.runtime.world_size)
        self.total_steps = total_steps(cfg, len(self.train_set), self.runtime.world_size)
        self.optimizer = make_optimizer(cfg.train, self.model, device)
        self.state = TrainState(total_steps=self.total_steps, base=base_identity(self.model, cfg.model))
        self.prompts = PromptVersions(cfg.data.system_prompt)
        mix = cfg.remake.mix_ratio if len(self.routes) > 1 else 0.0
        self.batches = BatchSource(self.train_set, cfg.run.seed, self.per_step, mix,  # the global batch
                                   cfg.remake.placement)
        self.monitors = MonitorSuite(cfg.monitors)
        self.router = make_router(cfg.router, cfg.run.seed, self.routes, router_factory)
        self.recorder = None  # opened once the start point is known (events are cut back to it)
        main = self.runtime.is_main
        # refined examples (rows an update rewrote), with provenance: the main process writes them
        self.remake = (RemakeStore(run_dir.remake) if main and any(UPDATES[r].refines for r in self.routes)
                       else None)
        # updates that talk to the teacher or write files exist on the main process only; the others
        # follow (their outcome, the prompt and the refined examples are broadcast: share_state)
        self.ctx = self.context()
        self.updates = {name: UPDATES[name](self.ctx) if main or not UPDATES[name].main_only
                        else Follower(self.ctx, name) for name in self.routes}
        self._n_shared_refined = 0
        probe_set = (load_examples(cfg.reward.probe, cfg.data)[0] if cfg.reward.probe
                     else self.eval_set or self.train_set)[: cfg.reward.probe_size]
        # the probe measures the router's gains (main process); the validator, with symbolic.validate_prompt,
        # a new system prompt, by the reward itself (a rare measurement, so the faithful one)
        self.measures_gain = self.router.learns_from_gain and main
        self.probe = (GainProbe(probe_set, self.ctx, cfg.symbolic.max_new_tokens,
                                by_loss=cfg.reward.gain_from == "loss") if self.measures_gain else None)
        self.validates_prompt = cfg.symbolic.validate_prompt and self.remake is not None
        self.validators = ((GainProbe(probe_set, self.ctx, cfg.symbolic.max_new_tokens),
                            GainProbe(probe_set, self.ctx, cfg.symbolic.max_new_tokens, by_loss=True))
                           if self.validates_prompt else ())
        # a per-row router: each row's statistics before it decides, each part's gain per row kind
        self.verdicts = RowVerdicts()  # the teacher's last verdict on each row (correct | form | content)
        self.inspector = (Inspector(probe_set, self.ctx, self.probe.row_forward, cfg.symbolic.max_new_tokens,
                                    cfg.reward.gain_from == "loss", self.verdicts)
                          if self.router.per_row and self.measures_gain else None)
        self.meter = ComputeMeter(self.model)  # tokens through every forward pass, for the cost of each part
        self.costs = CostModel(self.per_step, cfg.router.call_cost)
        self.version = 0  # bumped whenever the weights or the prompt change (the probe's cache key)
        self.step_walls: collections.deque = collections.deque(maxlen=20)
        self.stop_reason: Optional[str] = None  # early stopping
        self.flat_gains_reported = False

    def context(self) -> UpdateContext:
        """The narrow view of this run that an update is given."""
        return UpdateContext(cfg=self.cfg, run_dir=self.dir, model=self.model, tokenizer=self.tokenizer,
                             optimizer=self.optimizer, runtime=self.runtime, renderer=self.renderer,
                             reward=self.reward, train_rows=self.train_set, total_steps=self.total_steps,
                             prompt=lambda: self.prompts.current, step_seconds=self.mean_step_s,
                             alert=lambda step, text: self.recorder.alert(step, text),
                             last_checkpoint=self.last_checkpoint_name, lr=lambda: self.lr)

    def _say(self, *args, **kw) -> None:
        """A message of the main process (several processes: one of each, not one per process)."""
        if self.runtime.is_main:
            print(*args, **kw)

    # ---- state ------------------------------------------------------------------------------------
    def state_dict(self) -> dict:
        remake = {"remake": {"position": self.remake.position()}} if self.remake is not None else {}
        return {**{name: getattr(self, name).state_dict() for name in self.SAVED}, **remake,
                **{name: u.state_dict() for name, u in self.updates.items()}}

    def load_state_dict(self, components: dict) -> None:
        self.prompts.load_state_dict(components["prompts"])
        self.verdicts.load_state_dict(components.get("verdicts"))  # (not in checkpoints before 0.3)
        self.costs.load_state_dict(components.get("costs"))
        self.renderer.system_prompt = self.prompts.current
        self.monitors.load_state_dict(components["monitors"])
        self.router.load_state_dict(components["router"])
        refined = []
        if self.remake is not None:  # rows written after the checkpoint go (checkpoints before 0.2 kept
            saved = components.get("remake") or {"position": components.get("symbolic", {}).get("store_position", 0)}
            self.remake.truncate_after(saved["position"])  # the position in the symbolic update's entry)
            refined = self.remake.examples()
        for name, update in self.updates.items():
            update.load_state_dict(components[name])
        refined = self.runtime.from_main(lambda: refined, lambda exs: [ex.to_state() for ex in exs],
                                         lambda states: [Example.from_state(e) for e in states])
        self.batches.load_state_dict(components["batches"], refined)
        self._n_shared_refined = len(refined)

    def restore(self, changed_keys=()) -> Optional[Path]:
        """Continue from the newest intact checkpoint (or start afresh when there is none)."""
        loaded = newest_intact_checkpoint(self.dir.path, str(self.runtime.device))
        if loaded is None:
            self._say(f"no usable checkpoint in {self.dir}; starting from step 0", file=sys.stderr)
            return self.start_fresh()
        saved = loaded.state
        why = identity_mismatch(saved.base, self.state.base)
        if why:
            raise ResumeMismatch(f"{loaded.path} was trained on another base model ({why}); this config loads "
                                 f"{self.cfg.model.name_or_path}. Point model.name_or_path at the base it was "
                                 f"trained on.")
        expected = lr_at(self.cfg.train, saved.step, saved.total_steps) if saved.step else 0.0
        if saved.step and not set(changed_keys) & set(SCHEDULE_KEYS) and not math.isclose(
                expected, saved.lr, rel_tol=1e-9, abs_tol=1e-12):
            raise ResumeMismatch(f"{loaded.path}: the schedule gives lr {expected} at step {saved.step}, "
                                 f"state.json says {saved.lr}")
        apply_checkpoint(loaded, self.model, self.optimizer)
        if saved.total_steps != self.total_steps:
            self._say(f"note: the LR schedule was built for {saved.total_steps} steps and now spans {self.total_steps}; "
                  f"lr at step {saved.step + 1} is {lr_at(self.cfg.train, saved.step + 1, self.total_steps):.3g}",
                  file=sys.stderr)
        self.state = TrainState(**{**vars(saved), "total_steps": self.total_steps, "base": self.state.base})
        self.load_state_dict(saved.components)
        self._say(f"resumed from {loaded.path} (step {saved.step}/{self.total_steps})", file=sys.stderr)
        return loaded.path

    def start_fresh(self) -> None:
        if self.remake is not None:
            self.remake.truncate_after(0)  # a start from step 0 never inherits rows of a killed attempt
        for update in self.updates.values():
            update.load_state_dict(None)

    def open_recorder(self) -> None:
        if not self.runtime.is_main:  # one set of outputs: the main process's
            self.recorder = QuietRecorder(self.runtime.rank)
            return
        self.recorder = Recorder(self.cfg, self.dir, self.routes, self.total_steps, self.state.step,
                                 keep_through=self.state.step if self.state.step else -1, quiet=self.quiet)
        self.state.wandb_run_id = self.recorder.wandb_run_id
        if self.runtime.world_size > 1 or self.cfg.train.global_batch_size:
            t = self.cfg.train
            self.recorder.message(f"{self.runtime.describe()}; global batch {self.per_step} examples per step "
                                  f"(about {self.per_step // self.runtime.world_size} per process, in micro-batches "
                                  f"of {t.batch_size})")
        if self.state.step == 0:
            self.recorder.prompt(0, 0, self.prompts.current)

    # ---- the pieces of a step -----------------------------------------------------------------------
    @property
    def lr(self) -> float:
        return self.optimizer.param_groups[0]["lr"]

    def set_lr(self, step: int) -> None:
        set_lr(self.optimizer, lr_at(self.cfg.train, step, self.total_steps))

    def signals(self, step: int):
        unavailable = {name: why for name, u in self.updates.items() if (why := u.unavailable(step))}
        others = [name for name in self.routes if name != DEFAULT_ROUTE]  # the routes besides the gradient step
        why = next((unavailable[n] for n in others if n in unavailable), None) if others else "no teacher configured"
        budget = next((u.budget_left for u in self.updates.values() if u.budget_left is not None), None)
        signals = self.monitors.signals(self.prompts.version, budget, why is None, why)
        return signals, unavailable

    def batch_stats(self, batch) -> BatchStats:
        """What a learning router sees of the batch: per-example losses and the reward before."""
        prompts = tuple(ex.prompt for ex in batch)
        if self.inspector is not None:  # a per-row router routes on the batch's rows, when it needs them
            return (self.inspector.batch(batch, with_losses=self.router.wants_row_loss) if self.router.wants_rows
                    else BatchStats(prompts=prompts))
        scheduled = self.state.step % self.cfg.reward.gain_every == 0  # every N steps, and whenever the router needs it
        if not self.measures_gain or not (scheduled or self.router.needs_gain):
            return BatchStats(prompts=prompts)
        m = self.probe.measure(batch, self.version, with_losses=True)
        return BatchStats(mean_loss=sum(m.batch_losses) / len(m.batch_losses), max_loss=max(m.batch_losses),
                          reward_before=m.reward, prompts=prompts)

    def decide(self, signals, stats: BatchStats, unavailable: dict, fallback: Optional[str]) -> Decision:
        if fallback is not None:  # a failed update's batch: the default route, not the router's call
            return Decision(DEFAULT_ROUTE, reason=f"fallback: {fallback[:200]}", router="fallback")
        # one decision per step: the main process's router decides for every process
        return self.runtime.from_main(lambda: self.router.decide(signals, stats, unavailable),
                                      Decision.as_dict, Decision.from_dict)

    def update(self, batch, decision: Decision, step: int, stats: BatchStats) -> tuple[dict, dict]:
        """Every part of the decision (route -> its rows; one part: the whole batch) updated in turn, a
        prompt edit before the LoRA step (which then trains under the prompt the run goes on with), each
        one's changes applied; a failed part's rows join the default route's part. Returns the outcome
        and the :class:`~classifiers.PartResult` (gain, cost, saturation) of each part, by route."""
        parts = list(decision.partition(len(batch)).items())
        measured = self.measures_gain and (self.state.step % self.cfg.reward.gain_every == 0 or self.router.needs_gain)
        outcomes, results, spill, failed = {}, {}, [], None
        while parts:
            route, ix = parts.pop(0)
            if route == DEFAULT_ROUTE and spill:
                ix, spill = sorted(ix + spill), []
            rows, t0 = [batch[i] for i in ix], time.perf_counter()
            outcome, result = self._part(route, rows, ix, decision, step, stats, measured)
            outcome.update_s = time.perf_counter() - t0
            if outcome.failed and not outcome.pending:  # its rows take the default route, in this step
                self.state.count("failed_by_route", route)
                spill = list(ix)
                if not any(r == DEFAULT_ROUTE for r, _ in parts):
                    parts.append((DEFAULT_ROUTE, []))
                failed = outcome
                continue
            if route == DEFAULT_ROUTE and failed is not None:
                outcome.fallback_from, failed = failed, None
            if not outcome.pending:
                self.state.count("ok_by_route", route)
            outcomes[route], results[route] = outcome, result
        return outcomes, results

    def _part(self, route: str, rows: list, ix: list, decision: Decision, step: int, stats: BatchStats,
              measured: bool) -> tuple[Outcome, PartResult]:
        """One part: its update (under the compute meter), its gain and its cost."""
        answers = (tuple(stats.answers[i] for i in ix) if stats.answers and route != DEFAULT_ROUTE else None)
        sub = decision if decision.parts is None else dataclasses.replace(decision, route=route, parts=None,
                                                                          answers=answers)
        per_row = decision.parts is not None and self.inspector is not None
        before = (self.inspector.probe_rows(self.version) if per_row and measured else
                  None if per_row else stats.reward_before)
        wall = [0.0]

        def timed() -> Outcome:
            t0 = time.perf_counter()
            try:
                return self._apply(route, rows, sub, step)
            finally:
                wall[0] = time.perf_counter() - t0

        with self.meter.part(training=UPDATES[route].gradient_step) as used:  # the part's own passes
            outcome, gain = self.measure_gain(rows, None if per_row else before, timed)
        verdicts = outcome.record.get("row_verdicts") if outcome.record else None
        if verdicts:
            self.verdicts.note([ex.prompt for ex in rows], verdicts)
        by_kind, fixed = {}, None
        given = {stats.rows[i].kind for i in ix if i < len(stats.rows)}  # the kinds of row this part was given
        if per_row and not outcome.changed and not outcome.pending and not outcome.failed:  # known: 0 for each
            by_kind = dict.fromkeys(given, 0.0)
        if per_row and before is not None and not outcome.pending and not outcome.failed:
            (kinds_rows, values) = before
            after_rows, after = self.inspector.probe_rows(self.version) if outcome.changed else before
            kinds = [r.kind for r in kinds_rows]
            # credited to the kinds it was given only: a prompt edit for form rows also moves the probe's
            # content rows, which says nothing about editing the prompt for content rows
            by_kind = {k: g for k, g in gain_by_kind(kinds, values, after).items() if k in given or not stats.rows}
            gain = sum(a - b for a, b in zip(after, values)) / max(len(values), 1)
            fixed = sum(1 for b, a in zip(kinds_rows, after_rows) if b.correct is False and a.correct)  # wrong -> right
        if UPDATES[route].gradient_step and not outcome.failed:
            self.costs.observe_lora(used["train_tokens"], len(rows))
        calls = int((outcome.record or {}).get("calls", 0))
        saturated = None
        if route != DEFAULT_ROUTE and not outcome.pending and not outcome.failed and not outcome.changed:
            saturated = (outcome.record or {}).get("unchanged_reason") or "identical"
        cost = self.costs.cost(used, calls, len(rows), UPDATES[route].gradient_step)
        return outcome, PartResult(gain=gain, gain_by_kind=by_kind, cost=cost, saturated=saturated, rows=len(rows),
                                   cost_usd=outcome.cost_usd, calls=calls, fixed=fixed, compute=dict(used),
                                   wall_s=wall[0])

    def _apply(self, name: str, batch, decision: Decision, step: int) -> Outcome:
        update = self.updates[name]
        if UPDATES[name].main_only:  # done on the main process: its outcome and what it changed, on every process
            outcome = self.runtime.from_main(lambda: self.apply_changes(update.apply(batch, decision, step), batch, step),
                                             outcome_as_dict, outcome_from_dict)
            self.share_state()
            return outcome
        return self.apply_changes(update.apply(batch, decision, step), batch, step)

    def measure_gain(self, batch, before, apply) -> tuple[Outcome, Optional[float]]:
        """The one gain path, for an update done now and for one that lands later: the reward
        ``before`` (measured before the update ran; a callable: measured now, before its changes
        apply; None: not measured), ``apply`` (the update and its changes), the reward after."""
        before = before() if callable(before) else before
        outcome = apply()
        if not self.measures_gain or outcome.pending or outcome.failed:
            return outcome, None
        if not outcome.changed:  # nothing the student answers with changed: 0, whatever the schedule
            return outcome, 0.0
        if before is None:  # not a measured step
            return outcome, None
        return outcome, self.probe.measure(batch, self.version).reward - before

    def apply_changes(self, outcome: Outcome, batch, step: int) -> Outcome:
        """What an update changed, applied in one place: the weights' version, a new system prompt
        (validated with symbolic.validate_prompt), refined examples (stored, then mixed into batches)."""
        changes = outcome.changes
        if outcome.pending or outcome.failed:
            return outcome
        if changes is not None:
            proposed, worse = changes.system_prompt, None
            if proposed and proposed != self.prompts.current and self.validates_prompt:
                keep, before, after = self.try_prompt(batch, proposed)
                outcome.record["validation"] = {"before": before, "after": after, "kept": keep}
                if not keep:
                    figures = " / ".join(f"{b:.4g} -> {a:.4g}" for b, a in zip(before, after))
                    proposed, worse = None, f"worse on batch + probe (reward / -loss: {figures}): kept the old prompt"
            version = self.prompts.propose(proposed, step) if proposed else None
            if version is not None:
                self.renderer.system_prompt = self.prompts.current
                self.recorder.prompt(step, version, self.prompts.current)
            else:  # why the prompt stayed (malformed, elided, too_long, answer_leak, identical)
                outcome.record["unchanged_reason"] = worse or changes.unchanged_reason or "identical"
                outcome.changed = False  # the student answers as before: the gain is 0, known without measuring
            rows = (self.remake.add(changes.rewrites, step=step, prompt_version=self.prompts.version,
                                    teacher_model=changes.teacher_model) if changes.rewrites else [])
            self.batches.add_refined(rows)
        self.version += outcome.changed
        return outcome

    def try_prompt(self, batch, text: str) -> tuple[bool, list, list]:
        """(keep, before, after): whether the student does no worse on ``batch`` + the probe set with
        ``text`` as the system prompt than with the current one (symbolic.validate_prompt): by the reward,
        and on a tie (e.g. exact match at 0 both ways) by the reference answers' loss."""
        before, after, current = [], [], self.renderer.system_prompt
        for validator in self.validators:
            before.append(validator.measure(batch, self.version).reward)
            self.renderer.system_prompt = text
            try:
                after.append(validator.measure(batch, ("candidate", self.version, text)).reward)
            finally:
                self.renderer.system_prompt = current
            if after[-1] != before[-1]:
                break
        return after >= before, before, after

    def learn(self, decision: Decision, results: dict) -> None:
        """The router learns what each part it chose bought (not a fallback's, not another router's)."""
        if decision.router != self.router.kind or not self.runtime.is_main:
            return
        self.router.learn_parts(decision, results)
        if getattr(self.router, "flat_gains", False) and not self.flat_gains_reported:
            self.flat_gains_reported = True
            self.recorder.alert(self.state.step, "every gain the router learnt from during its warm-up was the same: "
                                                 "it has no signal to route on (check reward.kind and the probe)")

    def land(self, step: int, wait: bool = False) -> None:
        """Asynchronous updates that finished belong to ``step``: the reward before (measured now, under
        the prompt they started from), their changes applied, the reward after; learn, record."""
        for name, update in self.updates.items():
            for landing in update.land(step, wait):
                out, batch = landing.outcome, landing.batch
                proposes = out.changes is not None and out.changes.system_prompt not in (None, self.prompts.current)
                per_row, by_kind = self.inspector is not None and proposes, {}
                rows_before = self.inspector.probe_rows(self.version) if per_row else None  # before it lands
                before = (lambda: self.probe.measure(batch, self.version).reward) \
                    if proposes and self.measures_gain and not per_row else None
                out, gain = self.measure_gain(batch, before, lambda: self.apply_changes(out, batch, step))
                if rows_before is not None and not out.failed:
                    kinds, values = [r.kind for r in rows_before[0]], rows_before[1]
                    after = self.inspector.probe_rows(self.version)[1] if out.changed else values
                    gain = sum(a - b for a, b in zip(after, values)) / max(len(values), 1)
                    by_kind = gain_by_kind(kinds, values, after)
                record = {"kind": name, "step": step, "route": name, name: out.record}
                if out.failed:
                    self.state.count("failed_by_route", name)
                    self.batches.push_fallback(batch, f"{type(out.error).__name__}: {out.error}")
                else:
                    self.state.count("ok_by_route", name)
                    saturated = None if out.changed else (out.record.get("unchanged_reason") or "identical")
                    if gain is not None or saturated:
                        record.update(gain=gain, **({"gain_by_kind": by_kind} if by_kind else {}))
                        if landing.decision is not None:
                            self.learn(landing.decision, {name: PartResult(
                                gain=gain, gain_by_kind=by_kind, saturated=saturated,
                                rows=len(batch), cost_usd=out.cost_usd)})
                self.recorder.landing(record)
        self.share_state()

    def share_state(self) -> None:
        """What main-only updates change, from the main process to the others, before the next batch
        is drawn: the prompt versions, new refined examples, failed updates' batches."""
        if self.runtime.world_size == 1:
            return

        def main_state():
            new = self.batches.refined[self._n_shared_refined:]
            return {"prompts": self.prompts.state_dict(), "refined": [ex.to_state() for ex in new],
                    "fallbacks": self.batches.state_dict()["fallbacks"], "version": self.version}

        shared = self.runtime.from_main(main_state)
        if not self.runtime.is_main:
            self.prompts.load_state_dict(shared["prompts"])
            self.renderer.system_prompt = self.prompts.current
            self.batches.add_refined([Example.from_state(e) for e in shared["refined"]])
            self.batches.fallbacks = [([Example.from_state(e) for e in f["batch"]], f["why"])
                                      for f in shared["fallbacks"]]
            self.version = shared["version"]
        self._n_shared_refined = len(self.batches.refined)

    def should_stop(self, requested: bool) -> bool:
        """A stop asked on any process (Ctrl-C, SIGTERM), or early stopping on the main one."""
        self.stop_reason = self.runtime.from_main(lambda: self.stop_reason)  # no-op with one process
        return self.runtime.any(requested) or bool(self.stop_reason)

    def record(self, step: int, batch, decision: Decision, signals, stats: BatchStats, outcomes: dict,
               results: dict, t0: float) -> None:
        wall = time.perf_counter() - t0
        self.step_walls.append(wall)
        self.state.step = step
        self.state.lr = self.lr
        lora = next((o for o in outcomes.values() if UPDATES[o.route].gradient_step and not o.pending), None)
        head = outcomes.get(decision.route) or lora or next(iter(outcomes.values()))
        route = decision.route if head.pending or decision.parts is not None else head.route
        tokens = sum(o.tokens for o in outcomes.values())
        self.state.tokens += tokens
        self.state.count("steps_by_route", route)
        main = lora or head
        self.monitors.observe(step, main.loss, main.grad_norm, lora is not None)
        record = {"kind": "train", "step": step, "route": route, "loss": main.loss,
                  "grad_norm": main.grad_norm, "lr": self.state.lr, "tokens": tokens, "wall_s": wall,
                  "update_s": sum(o.update_s for o in outcomes.values()),
                  "tokens_per_s": tokens / wall if wall else 0.0, "time": time.time(),
                  "prompt_version": self.prompts.version, "gain": results.get(route, PartResult()).gain,
                  "refined_in_batch": sum(ex.source.startswith("remake:") for ex in batch),
                  "fallback": decision.reason[10:] if decision.router == "fallback" else None,
                  "compute": self.meter.take()}
        for outcome in outcomes.values():
            if outcome.record:
                record[outcome.route] = outcome.record
            if outcome.fallback_from is not None:
                failed = outcome.fallback_from
                record[failed.route] = failed.record
                record["fallback"] = f"{failed.route} failed: {type(failed.error).__name__}: {failed.error}"[:300]
        record["parts"] = {r: res.as_dict() for r, res in results.items()}  # what each part cost and bought
        if len(self.routes) > 1 and decision.router != "fallback":
            record.update(decision=decision.as_dict(), signals=signals.as_dict(), batch=stats.as_dict())
        self.recorder.step(record)

    def mean_step_s(self) -> float:
        return sum(self.step_walls) / len(self.step_walls) if self.step_walls else 0.0

    # ---- evaluation and checkpoints -----------------------------------------------------------------
    def evaluate(self) -> dict:
        with self.meter.paused():  # measuring the run is not part of what its steps cost
            return self._evaluate()

    def _evaluate(self) -> dict:
        figures: dict = {}
        if self.eval_set and self.runtime.is_main:
            micro = encode_batches(self.eval_set, self.renderer, self.cfg.train.batch_size, self.pad_id, self.runtime,
                                   self.cfg.data.packing, self.cfg.data.max_length)
            loss, _ = eval_loss(self.model, micro, self.runtime)
            figures.update(eval_loss=loss, eval_ppl=math.exp(min(loss, 50)))
            # generations: all of the split for a generation reward, else a few for the W&B samples table
            shown = self.eval_set if self.reward.needs_generation else self.eval_set[:SAMPLES]
            answers = answer_examples(self.model, self.tokenizer, self.renderer, shown,
                                      self.cfg.symbolic.max_new_tokens, self.cfg.train.batch_size * 4) \
                if (self.reward.needs_generation or self.recorder.tracker.run) else []
            rewards = [self.reward(a, ex.response) for a, ex in zip(answers, shown)] \
                if self.reward.needs_generation else [None] * len(answers)
            if self.reward.needs_generation:
                figures["eval_reward"] = sum(rewards) / len(rewards)
            figures["prompt_version"] = self.prompts.version
            samples = [[self.state.step, ex.prompt, a, ex.response, r]
                       for ex, a, r in list(zip(shown, answers, rewards))[:SAMPLES]]
            self.recorder.eval(self.state.step, figures, samples)
            self._early_stopping(figures)
        return figures

    def _early_stopping(self, figures: dict) -> None:
        t = self.cfg.train
        value = figures.get(t.early_stopping_metric)
        if not t.early_stopping_patience or value is None:
            return
        sign = -1.0 if t.early_stopping_metric == "eval_loss" else 1.0
        if self.state.best_eval is None or sign * (value - self.state.best_eval) > t.early_stopping_min_delta:
            self.state.best_eval, self.state.evals_since_best = value, 0
        else:
            self.state.evals_since_best += 1
            if self.state.evals_since_best >= t.early_stopping_patience:
                self.state.stop_reason = self.stop_reason = (  # saved: a resume stays stopped
                    f"early stopping: {t.early_stopping_metric} has not improved on "
                    f"{self.state.best_eval:.4g} for {t.early_stopping_patience} evaluations")

    def after_step(self) -> None:
        step, t = self.state.step, self.cfg.train
        if t.eval_every and step % t.eval_every == 0:
            self.evaluate()
        if t.save_every and step % t.save_every == 0:
            self.save()

    def save(self) -> Optional[Path]:
        if not self.runtime.is_main:  # the same weights and state on every process: one writer
            return None
        self.state.components = self.state_dict()
        return save_checkpoint(self.dir.path, self.model, self.optimizer, self.state, self.cfg.train.keep_last_n,
                               model_card(self.cfg, self.prompts.current, self.state.step, self.train_set),
                               self.prompts.current)

    def last_checkpoint_name(self) -> Optional[str]:
        ckpt = latest_checkpoint(self.dir.path)
        return ckpt.name if ckpt else None

    def abort(self) -> None:
        """A stop was asked: updates end their work in flight at once (a landing wait too); it stays in
        flight, is saved with the checkpoint and submitted again on resume. Safe in a signal handler."""
        for update in self.updates.values():
            update.abort()

    def close(self) -> None:
        self.meter.close()
        for update in self.updates.values():
            update.close()
        if self.remake is not None:
            self.remake.close()
        self.runtime.close()


def model_card(cfg, system_prompt: Optional[str], step: int, examples=None) -> str:
    """The checkpoint's PEFT model card: what base, what data, the learned system prompt and the system
    messages the training rows carried (``examples``)."""
    from neurosym.observe.prompt_history import data_system_summary, learned_prompt_card

    data = Path(cfg.data.train).name if isinstance(cfg.data.train, str) else "several datasets"
    return (f"---\nbase_model: {cfg.model.name_or_path}\nlibrary_name: peft\ntags: [neurosym]\n---\n\n"
            f"# {cfg.run.name}, step {step}\n\nAdapter trained by neurosym on `{data}` "
            f"(router `{cfg.router.kind}`).\n\n"
            + learned_prompt_card(system_prompt, data_system_summary(examples) if examples is not None else None))

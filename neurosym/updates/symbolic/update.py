"""The symbolic update: TextGrad rewrites the task's system prompt (and the batch's example prompts)
with the teacher's feedback; accepted rewrites become a new prompt version and refined examples.

The student's answers are the router's (``decision.answers``, aligned with the batch) when it
measured them, else one batched generation (``StudentEngine.answer_batch``); the update then takes
at most three teacher calls (``textgrad_step``). Its record has the teacher's verdict per row
(``row_verdicts``: ``correct | form | content | unknown``) and their counts (``verdicts``).

With ``symbolic.async: false`` the update runs inline (and resume stays exact). With ``async: true``
the student's answers are computed on the loop's thread (the training model is never touched from
another thread) and the teacher's part runs on a worker pool while the loop keeps taking steps;
results land at the next step boundary (``land``), or, with ``symbolic.land_after_steps: N``, at
exactly N steps after they were submitted (the loop waits for a slower teacher): then when an
update lands, and so every route and prompt version, does not depend on timing, and the run is the
same on any machine and any number of processes. Work in flight at a checkpoint is saved with it
and submitted again on resume, so nothing is lost and nothing lands twice. Near the end of the run,
no job is submitted that could not land before the last step.

Failures are classified by exception type (``neurosym.teacher.availability``): a spent budget closes
the route; a teacher that refuses for good (401/403/404) closes it loudly, or stops the run with
``symbolic.on_teacher_down: stop``; other teacher faults pause the route after
``symbolic.down_after_failures`` in a row, for ``symbolic.down_for_steps`` steps.
"""
from __future__ import annotations

import logging
import time
from collections import Counter
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Optional

from neurosym.data import Example
from neurosym.errors import TeacherDownStop
from neurosym.teacher.availability import TeacherAvailability
from neurosym.updates.base import Changes, Landing, Outcome, Update

log = logging.getLogger(__name__)


@dataclass
class Job:
    """One symbolic update: the batch, the prompt it started from, and the router's decision."""
    submitted_step: int
    batch: list[Example]
    system_prompt: Optional[str]
    decision: Any = None
    answers: Optional[list] = None  # the student's answers to batch under system_prompt, in order (None: not yet)


@dataclass
class Landed:
    """A finished job: either a result or the exception that made it fail."""
    job: Job
    result: Any = None          # neurosym.updates.symbolic.textgrad_step.SymbolicResult
    error: Optional[BaseException] = None
    usage: dict = field(default_factory=dict)
    wall_s: float = 0.0


class SymbolicUpdate(Update):
    name = "symbolic"
    main_only = True  # the teacher and its cache: one process
    refines = True

    @classmethod
    def enabled(cls, cfg) -> bool:
        return cfg.router.kind != "always_lora"

    @classmethod
    def preflight(cls, cfg) -> None:
        """Before the model loads: an OpenAI-compatible teacher answers, a python teacher imports."""
        if cfg.teacher.provider == "openai":
            from neurosym.teacher import preflight
            preflight(cfg.teacher)
        elif cfg.teacher.provider == "python":
            from neurosym.teacher.python import load_callable
            load_callable(cfg.teacher.callable, tuple(cfg.run.python_path))

    def __init__(self, ctx):
        super().__init__(ctx)
        from neurosym.remake.guards import prompt_key
        from neurosym.updates.symbolic.student import make_student_engine
        from neurosym.teacher import make_teacher, route_textgrad_log

        cfg = ctx.cfg
        self.cfg = cfg.symbolic
        self.teacher = make_teacher(cfg.teacher, ctx.run_dir.path, **({"search_paths": tuple(cfg.run.python_path)}
                                                                        if cfg.teacher.provider == "python" else {}))
        route_textgrad_log(ctx.run_dir.path)
        self.student = make_student_engine(ctx.model, ctx.tokenizer, max_length=cfg.data.max_length,
                                           max_new_tokens=cfg.symbolic.max_new_tokens)
        self.seen = {prompt_key(ex.prompt) for ex in ctx.train_rows}
        self.async_ = cfg.symbolic.async_
        self.pool = ThreadPoolExecutor(cfg.symbolic.max_inflight, thread_name_prefix="symbolic") if self.async_ else None
        self.inflight: list[tuple[Job, Future]] = []
        self.availability = TeacherAvailability(cfg.symbolic)  # budget, down for good, paused after failures
        self.mean_wall_s = 0.0   # of the teacher's part, to know what can still land before the end
        self.n_landed = 0

    # ---- availability -------------------------------------------------------------------------------
    @property
    def budget_left(self) -> Optional[float]:
        return self.teacher.budget_left

    def unavailable(self, step: int) -> Optional[str]:
        why = self.availability.unavailable_reason(step)
        if why:
            return why
        if self.async_:
            if len(self.inflight) >= self.cfg.max_inflight:
                return "all symbolic workers busy"
            left = self.ctx.total_steps - step
            if self.cfg.land_after_steps:
                if self.cfg.land_after_steps > left:
                    return "too close to the end for an update to land"
                return None
            step_s = self.ctx.step_seconds()
            if self.n_landed and step_s > 0 and self.mean_wall_s > left * step_s:
                return "too close to the end for an update to land"
        return None

    # ---- running updates ------------------------------------------------------------------------
    def apply(self, batch: list, decision, step: int) -> Outcome:
        answers = getattr(decision, "answers", None)  # the router's measurement of this batch, if any
        job = Job(step, batch, self.ctx.prompt(), decision, list(answers) if answers is not None else None)
        if not self.async_:
            return self._land(self._work(job, self.student), step)
        self._submit(job)
        return Outcome(self.name, pending=True, record={"submitted_step": step})

    def _submit(self, job: Job) -> None:
        """Answer on this thread (the model is never used from a worker), teacher's part to the pool."""
        if job.answers is None:
            job.answers = self.student.answer_batch(job.batch, job.system_prompt, max_new_tokens=self.cfg.max_new_tokens)
        self.inflight.append((job, self.pool.submit(self._work, job, self.student)))

    def land(self, step: int, wait: bool = False) -> list[Landing]:
        lag = self.cfg.land_after_steps

        def due(job: Job, fut: Future) -> bool:  # (jobs land in the order they were submitted)
            return wait or (step >= job.submitted_step + lag if lag else fut.done())

        done = []
        while self.inflight and due(*self.inflight[0]):
            job, fut = self.inflight[0]
            landed = fut.result()
            if getattr(landed.error, "kind", None) == "aborted":  # a stop ended its calls: it stays in flight,
                break                                              # saved with the checkpoint, submitted on resume
            self.inflight.pop(0)
            done.append(Landing(job.batch, job.decision, self._land(landed, step), job.submitted_step))
        return done

    def _work(self, job: Job, student) -> Landed:
        """The update itself (on a worker in async mode: then ``job.answers`` are set and ``student``
        is not run)."""
        from neurosym.updates.symbolic.textgrad_step import symbolic_update
        from neurosym.teacher import TeacherError

        t0 = time.perf_counter()
        with self.teacher.meter() as meter:
            try:
                result = symbolic_update(job.system_prompt, job.batch, student, self.teacher, self.ctx.reward,
                                         self.cfg, self.seen, answers=job.answers)
                return Landed(job, result=result, usage=meter.as_dict(), wall_s=time.perf_counter() - t0)
            except TeacherError as exc:
                return Landed(job, error=exc, usage=meter.as_dict(), wall_s=time.perf_counter() - t0)

    def _land(self, landed: Landed, step: int) -> Outcome:
        """A finished update as of ``step``: its accounting, and the prompt and refined examples it
        proposes (``Outcome.changes``, which the run validates and applies)."""
        self._note(landed, step)
        usage = landed.usage
        record = {"calls": usage.get("calls", 0), "cost_usd": usage.get("cost_usd", 0.0),
                  "tokens": usage.get("prompt_tokens", 0) + usage.get("completion_tokens", 0),
                  "submitted_step": landed.job.submitted_step, "wall_s": landed.wall_s,
                  "accepted": 0, "rejected": {}, "malformed": False,
                  "verdicts": {}, "row_verdicts": ["unknown"] * len(landed.job.batch)}
        outcome = Outcome(self.name, cost_usd=record["cost_usd"], error=landed.error, record=record)
        if landed.error is not None:
            record.update(outcome.error_dict())
            return outcome
        result = landed.result
        record.update(accepted=len(result.rewrites), rejected=dict(result.rejected), malformed=result.malformed,
                      verdicts=dict(Counter(result.verdicts)), row_verdicts=list(result.verdicts))
        outcome.changes = Changes(system_prompt=result.new_system_prompt, unchanged_reason=result.unchanged_reason,
                                  rewrites=result.rewrites, teacher_model=self.ctx.cfg.teacher.model)
        return outcome

    def _note(self, landed: Landed, step: int) -> None:
        """Update availability from an outcome; say loudly what changed; stop if the user asked to."""
        self.n_landed += 1
        self.mean_wall_s += (landed.wall_s - self.mean_wall_s) / self.n_landed
        outcome = self.availability.note(landed.error, step)
        if outcome.message:
            self.ctx.alert(step, outcome.message)
        if outcome.stop:
            raise TeacherDownStop(f"{outcome.message}\n  Fix the teacher settings, then `neurosym resume {self.ctx.run_dir}` "
                                  f"(--set teacher.* is allowed on resume).")

    # ---- checkpoint -----------------------------------------------------------------------------
    def state_dict(self) -> dict:
        return {
            "teacher_usage": self.teacher.usage.state_dict(),
            **self.availability.state_dict(), "mean_wall_s": self.mean_wall_s, "n_landed": self.n_landed,
            "inflight": [{"submitted_step": j.submitted_step, "system_prompt": j.system_prompt,
                          "batch": [ex.to_state() for ex in j.batch], "answers": j.answers,
                          "decision": j.decision.as_dict() if j.decision is not None else None}
                         for j, _ in self.inflight],
        }

    def load_state_dict(self, state: Optional[dict]) -> None:
        """Restore counters, resubmit jobs in flight."""
        if state is None:
            return
        self.teacher.usage.load_state_dict(state["teacher_usage"])
        self.availability.load_state_dict(state)
        self.mean_wall_s, self.n_landed = state["mean_wall_s"], state["n_landed"]
        from classifiers.base import Decision
        for j in state["inflight"]:
            self._submit(Job(j["submitted_step"], [Example.from_state(e) for e in j["batch"]], j["system_prompt"],
                             Decision.from_dict(j["decision"]) if j["decision"] else None,
                             j.get("answers")))  # older checkpoints: answered again on resume

    def abort(self) -> None:
        abort = getattr(self.teacher, "abort", None)  # teacher calls in flight end now (their jobs stay in
        if abort is not None:                         # flight: in the checkpoint, submitted again on resume)
            abort()

    def close(self) -> None:
        self.abort()
        if self.pool is not None:
            self.pool.shutdown(wait=False, cancel_futures=True)


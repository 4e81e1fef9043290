"""The symbolic route as the loop sees it: submit a batch, collect what landed, know if it is open.

It owns the teacher, the student engine and the remake store. With ``symbolic.async: false`` an
update runs inline (and resume stays exact). With ``async: true`` the student's answers are computed
on the calling thread (the training model is never touched from another thread) and the teacher's
part runs on a worker pool while the loop keeps taking LoRA steps; results land at the next step
boundary. Work still in flight at a checkpoint is saved with it and submitted again on resume.
"""
from __future__ import annotations

import logging
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from neurosym.data import Example

log = logging.getLogger(__name__)
DOWN_AFTER_FAILURES = 3   # consecutive teacher failures before the route pauses
DOWN_FOR_STEPS = 20       # steps the route stays paused before it is tried again


@dataclass
class Job:
    """One symbolic update: the batch, the prompt it started from, and the router's decision."""
    submitted_step: int
    batch: list[Example]
    system_prompt: Optional[str]
    decision: Any = None
    answers: dict = field(default_factory=dict)  # (system, prompt) -> student answer (async mode)


@dataclass
class Landed:
    """A finished job: either a result or the error that made it fall back to a LoRA step."""
    job: Job
    result: Any = None          # neurosym.steps.symbolic.SymbolicResult
    error: Optional[str] = None
    usage: dict = field(default_factory=dict)


class SymbolicRoute:
    def __init__(self, cfg, run_dir: Path, model, tokenizer, reward, seen_prompts: set):
        from neurosym.remake.store import RemakeStore
        from neurosym.student import make_student_engine
        from neurosym.teacher import make_teacher, route_textgrad_log

        self.cfg = cfg
        self.teacher = make_teacher(cfg.teacher, run_dir)
        route_textgrad_log(run_dir)
        self.student = make_student_engine(model, tokenizer, max_length=cfg.data.max_length,
                                           max_new_tokens=cfg.symbolic.max_new_tokens)
        self.reward = reward
        self.store = RemakeStore(Path(run_dir) / "remake.sqlite")
        self.seen = seen_prompts
        self.async_ = cfg.symbolic.async_
        self.pool = ThreadPoolExecutor(cfg.symbolic.max_inflight, thread_name_prefix="symbolic") if self.async_ else None
        self.inflight: list[tuple[Job, Future]] = []
        self.closed_reason: Optional[str] = None
        self.failures_in_row = 0
        self.paused_until = -1

    # ---- availability ---------------------------------------------------------------------------
    @property
    def budget_left(self) -> Optional[float]:
        return self.teacher.budget_left

    def unavailable_reason(self, step: int) -> Optional[str]:
        if self.closed_reason:
            return self.closed_reason
        if step < self.paused_until:
            return f"teacher down: paused until step {self.paused_until}"
        if self.async_ and len(self.inflight) >= self.cfg.symbolic.max_inflight:
            return "all symbolic workers busy"
        return None

    # ---- running updates ------------------------------------------------------------------------
    def run(self, job: Job) -> Landed:
        """Sequential mode: the whole update now, on this thread."""
        return self._work(job, self.student)

    def submit(self, job: Job) -> None:
        """Async mode: answer on this thread, send the teacher's part to the pool."""
        with self.student.session(job.batch, self.cfg.symbolic.max_new_tokens):
            for ex in job.batch:
                job.answers[(job.system_prompt, ex.prompt)] = self.student.answer(ex, job.system_prompt)
        replay = _replaying(self.student, job.answers)
        self.inflight.append((job, self.pool.submit(self._work, job, replay)))

    def collect(self, wait: bool = False) -> list[Landed]:
        """Finished async jobs, in submission order (``wait``: block for all of them)."""
        done = []
        while self.inflight and (wait or self.inflight[0][1].done()):
            job, fut = self.inflight.pop(0)
            done.append(fut.result())
        return done

    def _work(self, job: Job, student) -> Landed:
        from neurosym.steps.symbolic import symbolic_update
        from neurosym.teacher import BudgetExhausted, TeacherConfigError, TeacherError

        with self.teacher.meter() as meter:
            try:
                result = symbolic_update(job.system_prompt, job.batch, student, self.teacher, self.reward,
                                         self.cfg.symbolic, self.seen)
                return Landed(job, result=result, usage=meter.as_dict())
            except BudgetExhausted as exc:
                return Landed(job, error=f"budget: {exc}", usage=meter.as_dict())
            except TeacherConfigError as exc:
                return Landed(job, error=f"config: {exc}", usage=meter.as_dict())
            except TeacherError as exc:
                return Landed(job, error=f"teacher: {exc}", usage=meter.as_dict())

    def note_outcome(self, landed: Landed, step: int) -> None:
        """Update availability from an outcome: budget spent or bad config close the route."""
        if landed.error is None:
            self.failures_in_row = 0
            return
        kind = landed.error.split(":", 1)[0]
        if kind == "budget" and not self.closed_reason:
            self.closed_reason = "budget spent"
            log.warning("teacher budget spent (%.4f USD): symbolic route closed for the rest of the run",
                        self.teacher.usage.cost_usd)
        elif kind == "config":
            self.closed_reason = f"teacher misconfigured: {landed.error[8:][:200]}"
        else:
            self.failures_in_row += 1
            if self.failures_in_row >= DOWN_AFTER_FAILURES:
                self.paused_until = step + DOWN_FOR_STEPS
                self.failures_in_row = 0

    def store_rewrites(self, result, step: int, prompt_version: int) -> list[Example]:
        if not result.rewrites:
            return []
        return self.store.add(result.rewrites, step=step, prompt_version=prompt_version,
                              teacher_model=self.cfg.teacher.model)

    # ---- checkpoint -----------------------------------------------------------------------------
    def state_dict(self) -> dict:
        return {
            "teacher_usage": self.teacher.usage.state_dict(),
            "store_position": self.store.position(),
            "closed_reason": self.closed_reason, "failures_in_row": self.failures_in_row,
            "paused_until": self.paused_until,
            "inflight": [{"submitted_step": j.submitted_step, "system_prompt": j.system_prompt,
                          "batch": [_example_state(ex) for ex in j.batch],
                          "decision": j.decision.as_dict() if j.decision is not None else None}
                         for j, _ in self.inflight],
        }

    def load_state_dict(self, state: dict) -> list[Job]:
        """Restore counters, drop store rows written after the checkpoint; return jobs to resubmit."""
        self.teacher.usage.load_state_dict(state["teacher_usage"])
        self.store.truncate_after(state["store_position"])
        self.closed_reason = state["closed_reason"]
        self.failures_in_row = state["failures_in_row"]
        self.paused_until = state["paused_until"]
        from classifiers.base import Decision
        return [Job(j["submitted_step"], [_example_from_state(e) for e in j["batch"]], j["system_prompt"],
                    Decision.from_dict(j["decision"]) if j["decision"] else None)
                for j in state["inflight"]]

    def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown(wait=False, cancel_futures=True)
        self.store.close()


def _replaying(student, answers: dict):
    """A copy of the student engine that returns precomputed answers (for worker threads)."""
    replay = student.__class__.__new__(student.__class__)
    replay.__dict__.update(student.__dict__)

    def answer(example, system_prompt=None, max_new_tokens=None):
        key = (system_prompt, example.prompt)
        if key not in answers:
            raise RuntimeError(f"no precomputed student answer for prompt {example.prompt[:60]!r}")
        return answers[key]

    replay.answer = answer
    return replay


def _example_state(ex: Example) -> dict:
    return {"messages": [list(m) for m in ex.messages], "response": ex.response, "source": ex.source}


def _example_from_state(d: dict) -> Example:
    return Example(tuple(tuple(m) for m in d["messages"]), d["response"], d["source"])

"""The training recipe: for each batch, signals -> decide -> update -> learn -> record.

Every part is built by :class:`~neurosym.run.run.Run`, which owns all the run's state; this file is the
algorithm, top to bottom.
"""
from __future__ import annotations

import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from neurosym.config.schema import Config, save_resolved
from neurosym.errors import RunDirError, TeacherDownStop
from neurosym.run.run import Run
from neurosym.persist.rundir import RunDir
from neurosym.runtime import start_runtime
from neurosym.persist.state import TrainState
from neurosym.observe.tracking import check_tracking


@dataclass
class TrainResult:
    """What a finished (or stopped) ``train`` call reports."""
    run_dir: Path
    state: TrainState
    interrupted: bool
    final_eval: dict
    stop_reason: Optional[str] = None
    main: bool = True  # the main process (the one that reports; several processes: the others stay quiet)


def train_step(run: Run) -> None:
    """One step of the algorithm."""
    t0 = time.perf_counter()
    step = run.state.step + 1
    run.set_lr(step)                                        # the LR is a function of the step, whatever the route
    run.land(step)                                          # asynchronous updates that finished belong to this step
    batch, fallback = run.batches.next()                    # a failed update's batch comes back first
    signals, unavailable = run.signals(step)                # loss slope, grad norm, plateau, budget; closed routes
    stats = run.batch_stats(batch)                          # losses and reward before (learning routers only)
    decision = run.decide(signals, stats, unavailable, fallback)
    outcomes, results = run.update(batch, decision, step, stats)  # each part: a LoRA step or a symbolic update
                                                            # (maybe submitted), its changes applied, its gain and cost
    run.learn(decision, results)
    run.record(step, batch, decision, signals, stats, outcomes, results, t0)


def train(cfg: Config, resume: bool = False, quiet: Optional[bool] = None, changed_keys=()) -> TrainResult:
    run_dir = RunDir(cfg.run_dir)
    runtime = start_runtime(cfg)                            # several processes: the process group, first
    with (runtime.exclusive(run_dir) if runtime else run_dir):  # one job per run directory
        if run_dir.has_run() and not resume:
            raise RunDirError(f"{run_dir} already holds a run. Continue it with `neurosym resume {run_dir}` "
                              f"(or --resume), or start a new one with --set run.name=<new name>.")
        check_tracking(cfg)                                 # before any model loads
        run = Run(cfg, run_dir, quiet, runtime)
        interrupted, final = False, {}
        try:
            run.restore(changed_keys) if resume else run.start_fresh()
            if run.runtime.is_main:
                save_resolved(cfg, run_dir.config)          # only once the start or the resume is accepted
            run.open_recorder()
            if run.state.step >= run.total_steps:
                run.recorder.message(f"run already finished at step {run.state.step}; nothing to do")
                return TrainResult(run_dir.path, run.state, False, {}, "finished")
            stopped = run.state.early_stop_on_resume(changed_keys)  # saved in the checkpoint it stopped at
            if stopped:
                run.recorder.message(stopped)
                if run.state.stop_reason:  # not lifted by --set train.early_stopping_*
                    return TrainResult(run_dir.path, run.state, False, {}, run.state.stop_reason)
            if run.state.step == 0 and run.eval_set:
                run.evaluate()                              # the "before" of the before -> after
            # the handlers stay through the final save: a launcher passes a stop on to its processes
            # (SIGTERM) after they got it from the terminal, and that copy must not kill the save
            with StopFlag(launched=run.runtime.world_size > 1, speaks=run.runtime.is_main,
                          on_stop=run.abort) as stop:
                while run.state.step < run.total_steps and not run.should_stop(stop.requested):
                    train_step(run)
                    run.after_step()                        # evaluate and save on their schedules
                interrupted = run.runtime.any(stop.requested) and run.state.step < run.total_steps
                if not interrupted:
                    run.land(run.state.step, wait=True)     # let the last asynchronous updates land
                run.save()
                if not interrupted:
                    final = finish(run)
                run.runtime.barrier()                       # every process leaves together: one that left early
                                                            # tore the group down under the main one's final eval
        except TeacherDownStop:
            run.save()                                      # the user asked to stop: resumable as it is
            raise
        finally:
            run.close()
            if run.recorder is not None:
                sync = run.recorder.close(interrupted)
                if sync:
                    print(f"W&B run saved offline; upload it with: {sync}", file=sys.stderr)
        if interrupted and run.runtime.is_main:
            print(f"interrupted at step {run.state.step}; checkpoint saved. Continue with: neurosym resume {run_dir}",
                  file=sys.stderr)
        return TrainResult(run_dir.path, run.state, interrupted, final, run.stop_reason, run.runtime.is_main)


def finish(run: Run) -> dict:
    """Final evaluation, summary tables, the adapter artifact (the main process's business)."""
    if not run.runtime.is_main:
        return {}
    final = run.evaluate() if not (run.cfg.train.eval_every and run.state.step % run.cfg.train.eval_every == 0) \
        else last_eval(run)
    rewrites = [[r["step"], r["parent_prompt"], r["prompt"], r["response"], r["feedback"][:500]]
                for r in run.remake.rows()[:100]] if run.remake is not None else []
    run.recorder.finish_tables(run.state.step, len(run.routes) > 1, rewrites)
    ckpt = Path(run.dir.checkpoints) / f"step-{run.state.step}"
    run.recorder.artifact([ckpt / "adapter_model.safetensors", ckpt / "adapter_config.json", ckpt / "README.md",
                           ckpt / "system_prompt.txt"],
                          f"{run.cfg.run.name}-adapter", "lora-adapter", {"system_prompt": run.prompts.current})
    return final


def last_eval(run: Run) -> dict:
    from neurosym.observe.events import read_events
    evals = [e for e in read_events(run.dir.events) if e.get("kind") == "eval"]
    return evals[-1] if evals else {}


class StopFlag:
    """SIGINT/SIGTERM ask the loop to stop at the next step boundary (after a checkpoint);
    a second Ctrl-C stops at once.

    Under a launcher (torchrun, accelerate launch, ``--nproc``) a Ctrl-C reaches this process twice:
    from the terminal, and passed on by the launcher (SIGINT, or SIGTERM from ``--nproc``) some
    milliseconds later, maybe once this process has left the loop. That copy is no second Ctrl-C: it
    changes nothing, until the process exits (the handlers stay). A real second Ctrl-C makes the
    launcher stop waiting and exit, and this process dies with it (PR_SET_PDEATHSIG,
    neurosym.runtime.accelerate)."""

    def __init__(self, launched: bool = False, speaks: bool = True, on_stop=None):
        self.requested = False
        self._old = {}
        self._launched, self._speaks = launched, speaks  # speaks: the process that tells the user
        self._on_stop = on_stop  # called once, in the handler, at the first stop (must take no lock)

    def __enter__(self):
        for sig in (signal.SIGINT, signal.SIGTERM):
            self._old[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame):
        if self.requested:
            if signum == signal.SIGINT and not self._launched:
                raise KeyboardInterrupt
            return
        self.requested = True
        if self._on_stop is not None:
            self._on_stop()
        if self._speaks:  # one message for the job
            print("\nstopping after this step; saving a checkpoint (Ctrl-C again to abort now)",
                  file=sys.stderr, flush=True)

    def __exit__(self, *exc):
        if self._launched and self.requested:
            return  # the launcher's copy of the stop may still come while this process closes: ignored
        for sig, old in self._old.items():
            signal.signal(sig, old)

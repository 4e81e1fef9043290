"""A teacher never ends a run silently nor holds a stop: a ``provider: python`` callable that exits,
raises KeyboardInterrupt or never returns is a teacher fault with a message, bounded by
``teacher.timeout_s``; SIGTERM while a call hangs (a python callable, or an HTTP call during a landing
wait) stops the run at once with a checkpoint that holds the update in flight, and the resume
submits it again. Every wait here is on an event (the call has started, the server saw the request),
never on the clock: the hung calls' deadlines are far longer than any test may take."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from neurosym.persist.checkpoint import latest_checkpoint
from neurosym.config.schema import TeacherConfig
from neurosym.observe.events import read_events
from neurosym.teacher import TeacherUnavailable, make_teacher
from tests.support.jobs import write_config

HUNG_S = 600.0  # a hung call's deadline: longer than any test here waits for a process
STOP_WAIT_S = float(os.environ.get("NEUROSYM_TEST_STOP_WAIT_S", 240))  # what a stop may take at most


def _python_teacher(tmp_path, fn, **kw):
    cfg = TeacherConfig(provider="python", callable="x:y", model="m", **kw)
    return make_teacher(cfg, tmp_path / "run", fn=fn)


# ---- the python provider, in process -------------------------------------------------------------

@pytest.mark.parametrize("exc,shown", [(SystemExit(3), "raised SystemExit(3)"),
                                       (KeyboardInterrupt(), "raised KeyboardInterrupt"),
                                       (GeneratorExit("odd"), "raised GeneratorExit: odd")])
def test_a_callable_that_exits_is_a_teacher_fault_with_a_message(tmp_path, exc, shown):
    def fn(messages, **kw):
        raise exc

    t = _python_teacher(tmp_path, fn)
    with pytest.raises(TeacherUnavailable) as err:
        t("hi")
    assert err.value.kind == "callable_error" and shown in str(err.value) and "teacher.callable x:y" in str(err.value)
    assert t.usage.failures == {"callable_error": 1}


def test_a_callable_that_never_returns_is_bounded_by_timeout_s(tmp_path):
    release = threading.Event()
    t = _python_teacher(tmp_path, lambda messages, **kw: release.wait() and "late", timeout_s=0.2)
    try:
        with pytest.raises(TeacherUnavailable, match=r"did not return within teacher.timeout_s=0.2s") as err:
            t("hi")
        assert err.value.kind == "timeout" and t.usage.failures == {"timeout": 1} and len(t.cache) == 0
    finally:
        release.set()


def test_abort_ends_a_hung_callable_at_once(tmp_path):
    entered, release = threading.Event(), threading.Event()

    def fn(messages, **kw):
        entered.set()
        release.wait()
        return "late"

    t = _python_teacher(tmp_path, fn, timeout_s=HUNG_S)
    box = {}

    def call():
        try:
            t("hi")
        except TeacherUnavailable as exc:
            box["exc"] = exc

    caller = threading.Thread(target=call, daemon=True)
    caller.start()
    try:
        assert entered.wait(60)
        t.abort()
        caller.join(60)  # ends long before HUNG_S, or not at all
        assert not caller.is_alive() and box["exc"].kind == "aborted"
        with pytest.raises(TeacherUnavailable, match="aborted"):
            t("another")
    finally:
        release.set()


def test_abort_from_a_signal_handler_takes_no_lock(tmp_path):
    """The stop's handler runs on the thread it interrupts, which may hold the lock an Event takes:
    the abort flag must not need one (set here while the waiting thread is inside wait())."""
    from neurosym.teacher.base import AbortFlag

    flag, old = AbortFlag(), signal.getsignal(signal.SIGUSR1)
    signal.signal(signal.SIGUSR1, lambda *_: flag.set())
    try:
        threading.Timer(0.05, os.kill, (os.getpid(), signal.SIGUSR1)).start()
        assert flag.wait(HUNG_S)
    finally:
        signal.signal(signal.SIGUSR1, old)


def test_an_aborted_call_is_no_teacher_failure():
    from neurosym.config.schema import SymbolicConfig
    from neurosym.teacher import TeacherAvailability

    avail = TeacherAvailability(SymbolicConfig(down_after_failures=1))
    assert avail.note(TeacherUnavailable("stop", kind="aborted"), 3).message is None
    assert avail.unavailable_reason(4) is None and avail.failures_in_row == 0


# ---- whole runs, stopped while a teacher call hangs ----------------------------------------------

def _env(**extra):
    env = dict(os.environ)
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONUNBUFFERED="1", **extra)
    return env


HANG_MODULE = """
import os, threading, time
from neurosym.testing.scripted_teacher import Teacher

_script = Teacher()

def teach(messages, **kw):
    mark = os.environ.get("HANG_MARK")
    if mark and not os.path.exists(mark) and os.environ.get("HANG_NOW") == "1":
        open(mark, "w").close()          # the test waits for this file, then sends SIGTERM
        threading.Event().wait()         # never returns
    return _script(messages)
"""


def _python_job(tmp_path, tiny_model_dir, **symbolic):
    (tmp_path / "hang_teacher.py").write_text(textwrap.dedent(HANG_MODULE))
    return write_config(tmp_path, tiny_model_dir, name="hang", n_train=20,
                        router={"kind": "alternate", "every": 3}, data={"eval": None},
                        teacher={"provider": "python", "callable": "hang_teacher:teach", "model": "sim",
                                 "timeout_s": HUNG_S},
                        symbolic={"max_new_tokens": 4, "max_rewrites_per_batch": 1, **symbolic},
                        reward={"kind": "numeric_match"},
                        train={"max_steps": 6, "batch_size": 4, "save_every": 0, "eval_every": 0, "lr": 5e-3})


def _stop_when(marker_seen, proc, timeout=300):
    """SIGTERM once ``marker_seen()`` (the call hangs now); the process must end by itself after."""
    deadline = time.monotonic() + timeout
    while not marker_seen():
        assert proc.poll() is None, proc.communicate()[1][-3000:]
        assert time.monotonic() < deadline, "the teacher call never started"
        time.sleep(0.02)
    proc.send_signal(signal.SIGTERM)
    t0 = time.monotonic()
    # only the abort can end the hung call: its deadline (HUNG_S) is past this wait
    _, err = proc.communicate(timeout=STOP_WAIT_S)
    print(f"exited {time.monotonic() - t0:.1f}s after SIGTERM (the hung call's deadline: {HUNG_S:g}s)")
    return err


def _train_steps(run: Path) -> list:
    return [e["step"] for e in read_events(run / "events.jsonl") if e["kind"] == "train"]


def _inflight(run: Path) -> list:
    state = json.loads((latest_checkpoint(run) / "state.json").read_text())
    return state["components"]["symbolic"]["inflight"]


@pytest.mark.slow
@pytest.mark.parametrize("async_", [False, True])
def test_sigterm_while_a_python_callable_hangs_stops_with_a_checkpoint(tmp_path, tiny_model_dir, async_):
    """Sync: the main thread waited inside the callable, SIGTERM was ignored. Async (landing wait):
    the loop waited for the worker, and at exit the interpreter waited for it forever. (The resume
    of a job saved in flight: the HTTP test below.)"""
    symbolic = {"async": True, "max_inflight": 1, "land_after_steps": 1} if async_ else {}
    cfg = _python_job(tmp_path, tiny_model_dir, **symbolic)
    run, mark = tmp_path / "runs" / "hang", tmp_path / "hung"
    env = _env(HANG_MARK=str(mark), HANG_NOW="1", PYTHONPATH=os.pathsep.join([str(tmp_path), os.environ.get(
        "PYTHONPATH", "")]))
    proc = subprocess.Popen([sys.executable, "-m", "neurosym", "train", str(cfg), "--quiet"], cwd=tmp_path, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        err = _stop_when(mark.exists, proc)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err[-3000:]
    assert "checkpoint saved" in err and "Traceback" not in err, err[-3000:]
    stopped = _train_steps(run)[-1]
    assert latest_checkpoint(run).name == f"step-{stopped}" and stopped < 6
    if async_:  # the job whose call hung is in the checkpoint, to be submitted again on resume
        assert [j["submitted_step"] for j in _inflight(run)] == [3]


@pytest.mark.slow
def test_sigterm_during_a_landing_wait_aborts_the_http_call(tmp_path, tiny_model_dir, openai_server):
    """The update submitted at step 3 must land at step 4 (land_after_steps: 1); its teacher call
    hangs on the server. SIGTERM ends the run at once (not after teacher.timeout_s), the checkpoint
    holds the job, and the resume submits it again: it lands once, every step is taken once."""
    from tests.support.hybrid import KEY_ENV, Teacher, hybrid_config

    seen, release, script, calls = threading.Event(), threading.Event(), Teacher(), []

    def responder(messages):
        calls.append(1)
        if len(calls) == 2:  # the first update's first call (the first one is the preflight)
            seen.set()
            release.wait()
        return script(messages)

    openai_server.set_responder(responder)
    cfg = hybrid_config(tmp_path, tiny_model_dir, openai_server, name="landing", data={"eval": None},
                        router={"kind": "alternate", "every": 3},
                        symbolic={"async": True, "max_inflight": 1, "land_after_steps": 1},
                        teacher={"timeout_s": HUNG_S, "max_retries": 0},
                        train={"max_steps": 6, "batch_size": 4, "save_every": 0, "eval_every": 0})
    run = tmp_path / "runs" / "landing"
    env = _env(**{KEY_ENV: openai_server.api_key})
    proc = subprocess.Popen([sys.executable, "-m", "neurosym", "train", str(cfg), "--quiet"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        err = _stop_when(seen.is_set, proc)
    finally:
        release.set()
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err[-3000:]
    assert "checkpoint saved" in err and "Traceback" not in err, err[-3000:]
    assert [j["submitted_step"] for j in _inflight(run)] == [3]
    openai_server.set_responder(Teacher())
    resumed = subprocess.run([sys.executable, "-m", "neurosym", "resume", str(run), "--quiet"], env=env,
                             capture_output=True, text=True, timeout=400)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert _train_steps(run) == list(range(1, 7))
    landed = [e["symbolic"]["submitted_step"] for e in read_events(run / "events.jsonl") if e["kind"] == "symbolic"]
    assert landed.count(3) == 1

"""Helpers for tests that run the CLI in real subprocesses (kill/resume, several processes)."""
from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

from neurosym.observe.events import read_events


def wait_for_step(events: Path, proc, step: int, timeout: float = 300.0) -> int:
    """Block until ``events`` records a train step >= ``step`` (the process must still be running)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if events.exists():
            done = [e["step"] for e in read_events(events) if e.get("kind") == "train"]
            if done and done[-1] >= step:
                return done[-1]
        assert proc.poll() is None, proc.stderr.read()[-3000:]
        time.sleep(0.01)
    raise AssertionError(f"step {step} never reached")


def kill_launcher_at(argv: list, run: Path, step: int, env: dict) -> None:
    """Start the ``--nproc`` launcher ``argv`` (its own session), SIGKILL the launcher alone once ``run``
    logged ``step``, and check that its processes die with it (and free the run directory)."""
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        wait_for_step(run / "events.jsonl", proc, step)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
        deadline = time.monotonic() + 30  # the workers go with their parent (PR_SET_PDEATHSIG)
        while time.monotonic() < deadline and alive_in_group(proc.pid):
            time.sleep(0.1)
        assert not alive_in_group(proc.pid), "workers outlived the killed launcher"
    finally:
        if alive_in_group(proc.pid):
            os.killpg(proc.pid, signal.SIGKILL)


def alive_in_group(pgid: int) -> bool:
    """Whether any process of the process group ``pgid`` is alive."""
    try:
        os.killpg(pgid, 0)
        return True
    except ProcessLookupError:
        return False

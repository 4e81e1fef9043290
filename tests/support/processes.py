"""Helpers for tests that run the CLI in real subprocesses (kill/resume, several processes)."""
from __future__ import annotations

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

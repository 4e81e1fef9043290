"""Shared bits of the experiment scripts: a local scripted teacher, and reading a run's events.

The teacher is the library's test double (``neurosym.testing``: ``OpenAIServer`` + ``Teacher``): a real
OpenAI-compatible HTTP server on 127.0.0.1, so the product talks to it as to any remote teacher.
Product code never imports it; only these scripts do.
"""
from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

KEY_ENV = "NEUROSYM_LOCAL_TEACHER_KEY"


@contextmanager
def local_teacher(latency_s: float = 0.0) -> Iterator[list[str]]:
    """Start the scripted teacher; yield the ``--set`` overrides that point a config at it.

    The API key is put in ``$NEUROSYM_LOCAL_TEACHER_KEY`` of this process (the config names the
    variable, never the key)."""
    from neurosym.testing.openai_server import OpenAIServer
    from neurosym.testing.scripted_teacher import Teacher

    server = OpenAIServer(latency_s=latency_s, responder=Teacher()).start()
    old = os.environ.get(KEY_ENV)
    os.environ[KEY_ENV] = server.api_key
    try:
        yield [f"teacher.provider=openai", f"teacher.base_url={server.base_url}",
               f"teacher.model={server.model}", f"teacher.api_key_env={KEY_ENV}"]
    finally:
        server.stop()
        if old is None:
            os.environ.pop(KEY_ENV, None)
        else:
            os.environ[KEY_ENV] = old


def warm_imports() -> None:
    """Import TextGrad (~6 s) up front, so the first symbolic update of a timed run doesn't pay for it."""
    from neurosym.updates.symbolic.student import student_engine_class
    student_engine_class()


# ---- reading events.jsonl ----------------------------------------------------------------------

def loop_wall_s(run_dir: Path) -> float:
    """The training loop's wall time: from the start of step 1 to the last event written (the
    last async landing included; model load excluded). The end is the events file's mtime: every
    write is flushed, and nothing else touches the file after the last event."""
    from neurosym.observe.events import read_events

    path = Path(run_dir) / "events.jsonl"
    first = next(e for e in read_events(path) if e["kind"] == "train")
    return os.stat(path).st_mtime - (first["time"] - first["wall_s"])


def symbolic_records(events: list[dict]) -> list[dict]:
    """The ``symbolic`` accounting of every finished update (inline ones on train events, async
    ones on their landing events); async submissions carry only ``submitted_step`` and are skipped."""
    return [e["symbolic"] for e in events if isinstance(e.get("symbolic"), dict) and "calls" in e["symbolic"]]


def summarize(run_dir: Path) -> dict:
    """Counts and teacher spend of a finished run."""
    from neurosym.observe.events import read_events

    events = read_events(Path(run_dir) / "events.jsonl")
    train = [e for e in events if e["kind"] == "train"]
    evals = [e for e in events if e["kind"] == "eval"]
    updates = symbolic_records(events)
    return {
        "steps": len(train),
        "lora_steps": sum(e["route"] == "lora" for e in train),
        "symbolic_ok": sum(not u.get("error") for u in updates),
        "symbolic_failed": sum(bool(u.get("error")) for u in updates),
        "teacher_calls": sum(u.get("calls", 0) for u in updates),
        "teacher_tokens": sum(u.get("tokens", 0) for u in updates),
        "teacher_cost_usd": sum(u.get("cost_usd", 0.0) for u in updates),
        "final_eval_loss": evals[-1]["eval_loss"] if evals else None,
        "eval_reward": evals[-1].get("eval_reward") if evals else None,  # measured by the run (generation rewards)
        "final_prompt": next((e["text"] for e in reversed(events) if e["kind"] == "prompt"), None),
        "wall_s": loop_wall_s(run_dir),
    }

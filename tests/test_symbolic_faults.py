"""A hybrid run survives a teacher that sends bodies which are not chat completions, in sequential and
async mode: each failed update falls back to a LoRA step, the run ends normally with its checkpoints
(issue 8: the malformed body used to stop the run with no checkpoint)."""
from __future__ import annotations

import pytest

from neurosym.config.schema import load_config
from neurosym.observe.events import read_events
from neurosym.train import train
from tests.support.hybrid import KEY_ENV, Teacher, hybrid_config


@pytest.fixture
def teacher(openai_server, monkeypatch):
    monkeypatch.setenv(KEY_ENV, openai_server.api_key)
    openai_server.set_responder(Teacher())
    return openai_server


@pytest.mark.parametrize("async_", [False, True], ids=["sync", "async"])
def test_malformed_bodies_are_teacher_faults_in_a_run(tmp_path, tiny_model_dir, teacher, async_):
    # after the preflight request: invalid JSON, no choices, wrong types (each retried once, then a fault)
    teacher.inject("none")
    for fault in ("bad_json", "no_choices", "wrong_types") * 4:
        teacher.inject(fault)
    cfg = load_config(hybrid_config(tmp_path, tiny_model_dir, teacher, router={"kind": "always_symbolic"},
                                    teacher={"timeout_s": 2.0, "max_retries": 1},
                                    symbolic={"async": async_, "max_inflight": 1},
                                    train={"max_steps": 4, "save_every": 2}))
    run = train(cfg, quiet=True).run_dir
    events = [e for e in read_events(run / "events.jsonl") if e["kind"] == "train"]
    assert [e["step"] for e in events] == [1, 2, 3, 4]
    # sequential: the failed update's batch gets a LoRA step (its "fallback"); async: the failure lands
    # later as a "symbolic" event with its error, while LoRA steps went on
    every = read_events(run / "events.jsonl")
    errors = [e["fallback"] for e in events if e.get("fallback")]
    errors += [e["symbolic"]["error"] for e in every if e["kind"] == "symbolic" and e["symbolic"].get("error")]
    assert errors and all("teacher" in err for err in errors)
    bodies = ("not JSON", "without choices", "content of type int")
    assert all(any(b in err for b in bodies) for err in errors), errors
    assert (run / "checkpoints").is_dir() and any((run / "checkpoints").iterdir())
    met = [r["fault"] for r in teacher.chat_requests if r["fault"] not in (None, "none")]
    assert len(met) >= 2 and set(met) <= {"bad_json", "no_choices", "wrong_types"}

"""The hybrid job end to end: LoRA steps and symbolic updates through a real HTTP teacher."""
import json
import os

import pytest

from neurosym.cli import main
from neurosym.config.schema import load_config
from neurosym.data import load_examples
from neurosym.observe.events import read_events
from neurosym.remake.store import RemakeStore
from neurosym.train import train
from tests.support.hybrid import KEY_ENV, Teacher, hybrid_config


@pytest.fixture
def teacher(openai_server, monkeypatch):
    monkeypatch.setenv(KEY_ENV, openai_server.api_key)
    openai_server.set_responder(Teacher())
    return openai_server


def _train_events(run):
    return [e for e in read_events(run / "events.jsonl") if e["kind"] == "train"]


@pytest.mark.slow
def test_prompt_versions_remade_examples_and_export(tmp_path, tiny_model_dir, teacher, capsys):
    cfg = load_config(hybrid_config(tmp_path, tiny_model_dir, teacher,
                                    tracking={"mode": "offline"}, train={"max_steps": 8, "save_every": 4}))
    out = train(cfg, quiet=True)
    run = out.run_dir
    events = _train_events(run)
    routes = [e["route"] for e in events]
    assert routes.count("symbolic") == 4 and routes.count("lora") == 4, routes
    # the prompt changed and later LoRA steps trained under the new version
    prompts = [e for e in read_events(run / "events.jsonl") if e["kind"] == "prompt"]
    assert [p["version"] for p in prompts] == [0, 1, 2, 3, 4]
    assert prompts[1]["text"].endswith("Think step by step.")
    first_sym = next(e for e in events if e["route"] == "symbolic")
    later_lora = [e for e in events if e["route"] == "lora" and e["step"] > first_sym["step"]]
    assert later_lora and all(e["prompt_version"] >= 1 for e in later_lora)
    assert all(e["symbolic"]["calls"] > 0 and e["symbolic"]["cost_usd"] > 0 for e in events if e["route"] == "symbolic")
    assert all(len(e["decision"]["features"]) > 0 or e["decision"]["router"] for e in events)
    # rewrites of wrong examples are stored with provenance and mixed into later LoRA batches
    with RemakeStore(run / "remake.sqlite") as store:
        rows = store.rows()
    assert rows and all(r["parent_source"].startswith(str(tmp_path)) for r in rows)
    assert all(r["prompt"].startswith("Compute carefully:") and r["teacher_model"] == teacher.model for r in rows)
    assert {r["step"] for r in rows} <= {e["step"] for e in events if e["route"] == "symbolic"}
    assert any(e.get("refined_in_batch", 0) > 0 for e in later_lora)
    # export: the refined dataset trains again as is
    exported = tmp_path / "refined.jsonl"
    assert main(["export", str(run), "--out", str(exported)]) == 0
    again, _ = load_examples(exported, cfg.data)
    assert len(again) == len(rows) and again[0].prompt == rows[0]["prompt"]
    assert {"parent_source", "step", "prompt_version", "feedback"} <= set(json.loads(exported.read_text().splitlines()[0]))
    # the key's value is in no file of the run directory (sqlite, cache, W&B, logs, config)
    secret = teacher.api_key.encode()
    for path in run.rglob("*"):
        if path.is_file():
            assert secret not in path.read_bytes(), f"API key leaked into {path}"
    assert not (tmp_path / "logs").exists() and not os.path.exists("logs")
    from tests.support.wandb_reader import summarize
    history = summarize(run / "wandb")["history"]
    assert {"symbolic/calls", "symbolic/cost_usd", "prompt/version", "route/symbolic"} <= set().union(*history)
    tables = {k[: -len("/nrows")]: v for h in history for k, v in h.items() if k.endswith("/nrows")}
    assert tables["router/decisions"] == 8 and tables["prompt/versions"] == 5
    assert tables["symbolic/rewrites"] == len(rows)


def test_leaked_answers_are_refused_and_counted(tmp_path, tiny_model_dir, teacher):
    teacher.set_responder(Teacher(leak=True))
    cfg = load_config(hybrid_config(tmp_path, tiny_model_dir, teacher, router={"kind": "always_symbolic"},
                                    train={"max_steps": 2}))
    run = train(cfg, quiet=True).run_dir
    events = _train_events(run)
    assert sum(e["symbolic"]["rejected"].get("answer_leak", 0) for e in events) >= 2
    # what was accepted leaks nothing new: its answer was already in the original prompt
    import re
    with RemakeStore(run / "remake.sqlite") as store:
        for row in store.rows():
            answer = re.findall(r"\d+", row["response"])[-1]
            assert re.search(rf"\b{answer}\b", row["parent_prompt"]), row


def test_every_fault_is_survived(tmp_path, tiny_model_dir, teacher):
    """429 (retried), 500 past the retries, a hang past the timeout, a malformed optimizer answer:
    the run finishes; failed updates fall back to LoRA steps on the same batch; nothing is lost."""
    teacher.inject("429", times=1, retry_after=0.2)
    cfg = load_config(hybrid_config(tmp_path, tiny_model_dir, teacher, router={"kind": "always_symbolic"},
                                    teacher={"timeout_s": 1.0, "max_retries": 1},
                                    train={"max_steps": 4, "save_every": 2}))
    # step 1: one 429, retried; step 2: 500 twice (retries exhausted) -> LoRA fallback;
    # step 3: a hang twice -> timeout -> fallback; step 4: malformed optimizer answer -> prompt unchanged
    from neurosym.updates.symbolic.update import SymbolicUpdate
    real_work = SymbolicUpdate._work
    faults = {2: ("500", 2, {}), 3: ("hang", 2, {"seconds": 3.0})}

    def work(self, job, student):
        if job.submitted_step in faults:
            fault, times, kw = faults[job.submitted_step]
            teacher.inject(fault, times=times, **kw)
        if job.submitted_step == 4:
            teacher.set_responder(_malformed_optimizer)
        return real_work(self, job, student)

    SymbolicUpdate._work = work
    try:
        run = train(cfg, quiet=True).run_dir
    finally:
        SymbolicUpdate._work = real_work
    events = {e["step"]: e for e in _train_events(run)}
    assert sorted(events) == [1, 2, 3, 4]
    assert events[1]["route"] == "symbolic"
    assert events[2]["route"] == "lora" and "teacher" in events[2]["fallback"] and events[2]["loss"] is not None
    assert events[3]["route"] == "lora" and "teacher" in events[3]["fallback"]
    assert events[4]["route"] == "symbolic" and events[4]["symbolic"]["malformed"] is True
    assert events[4]["prompt_version"] == events[1]["prompt_version"] == 1


def _malformed_optimizer(messages):
    answer = Teacher()(messages)
    return answer.replace("<IMPROVED_VARIABLE>", "").replace("</IMPROVED_VARIABLE>", "")


def test_budget_cap_closes_the_symbolic_route(tmp_path, tiny_model_dir, teacher):
    cfg = load_config(hybrid_config(tmp_path, tiny_model_dir, teacher, router={"kind": "always_symbolic"},
                                    teacher={"price_per_1k_tokens": {"input": 0.01, "output": 0.01},
                                             "budget_usd": 0.03},  # ~2.5 updates of 3 calls
                                    train={"max_steps": 6}))
    run = train(cfg, quiet=True).run_dir
    events = _train_events(run)
    assert events[0]["route"] == "symbolic"
    closed = [e for e in events if e.get("decision", {}).get("reason", "").endswith("budget spent")]
    assert closed and all(e["route"] == "lora" for e in closed)
    assert events[-1]["route"] == "lora"
    spent = sum(e["symbolic"]["cost_usd"] for e in events if e.get("symbolic"))
    assert 0.03 <= spent < 0.03 + 0.01, spent  # overshoot bounded by the calls already in flight


def test_bad_key_fails_before_the_model_loads(tmp_path, tiny_model_dir, teacher, monkeypatch, capsys):
    monkeypatch.setenv(KEY_ENV, "sk-wrong-key-value")
    cfg = hybrid_config(tmp_path, tiny_model_dir, teacher)
    assert main(["train", str(cfg), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "401" in err and KEY_ENV in err and "sk-wrong-key-value" not in err
    assert not (tmp_path / "runs" / "hybrid" / "checkpoints").exists()

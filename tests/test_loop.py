"""The loop's seams (issue: the loop as the algorithm): a new kind of update and a new router plug in
with one registry line each; train_step sets the LR first whatever the route; a failed update's batch
takes a LoRA step; the fallback queue is checkpointed; the learned router sees real batch losses;
dependencies point one way; each CLI verb imports only its own stack."""
from __future__ import annotations

import json
import subprocess
import sys
import warnings

import pytest

from classifiers import ROUTERS
from classifiers.base import BatchStats, Decision, Router
from neurosym.run.batches import BatchSource
from neurosym.config.schema import load_config
from neurosym.data import Example
from neurosym.observe.events import read_events
from neurosym.run.schedule import lr_at
from neurosym.train import train
from neurosym.updates import UPDATES, Outcome, Update
from tests.support.jobs import write_config


class EchoUpdate(Update):
    """A kind of update that changes nothing and remembers what it saw (or fails on request)."""

    name = "echo"
    seen: list = []
    fail_at: set = set()

    def apply(self, batch, decision, step):
        EchoUpdate.seen.append((step, len(batch), self.ctx.lr()))
        if step in EchoUpdate.fail_at:
            return Outcome(self.name, error=ConnectionError(f"echo failed at step {step}"), record={"n": len(batch)})
        return Outcome(self.name, record={"n": len(batch)})


class ScriptRouter(Router):
    kind = "script"
    plan: list = []

    def _choose(self, signals, batch, index, available):
        route = ScriptRouter.plan[index % len(ScriptRouter.plan)]
        return Decision(route if route in available else available[0], reason="scripted", index=index,
                        router=self.kind)


@pytest.fixture
def echo_registered(monkeypatch):
    """One registry line for the update kind, one for the router: nothing else in the product changes."""
    monkeypatch.setitem(UPDATES, "echo", EchoUpdate)
    monkeypatch.setitem(ROUTERS, "script", lambda cfg, seed, routes: ScriptRouter(routes))
    EchoUpdate.seen, EchoUpdate.fail_at = [], set()
    # the symbolic kind stays out of these jobs (no teacher): it is enabled by routers other than always_lora
    monkeypatch.setattr(UPDATES["symbolic"], "enabled", classmethod(lambda cls, cfg: False))


def test_a_new_update_kind_and_router_plug_in_and_lr_is_set_first(tmp_path, tiny_model_dir, echo_registered):
    ScriptRouter.plan = ["echo", "lora", "lora", "echo"]
    cfg = load_config(write_config(tmp_path, tiny_model_dir, router={"kind": "script"},
                                   train={"max_steps": 6, "warmup": 2, "scheduler": "cosine", "save_every": 0}))
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # e.g. "lr_scheduler.step() before optimizer.step()"
        out = train(cfg, quiet=True)
    events = [e for e in read_events(out.run_dir / "events.jsonl") if e["kind"] == "train"]
    assert [e["route"] for e in events] == ["echo", "lora", "lora", "echo", "echo", "lora"]
    # the first step is not a gradient step, yet the LR of every step is the schedule's value for it
    assert [e["lr"] for e in events] == pytest.approx([lr_at(cfg.train, s, 6) for s in range(1, 7)])
    assert [s for s, _, _ in EchoUpdate.seen] == [1, 4, 5]
    assert [lr for _, _, lr in EchoUpdate.seen] == pytest.approx([lr_at(cfg.train, s, 6) for s in (1, 4, 5)])
    assert all(e["echo"] == {"n": 4} for e in events if e["route"] == "echo")
    assert events[0]["loss"] is None and events[1]["loss"] is not None
    assert out.state.steps_by_route == {"echo": 3, "lora": 3}


def test_a_failed_update_batch_takes_a_lora_step_in_the_same_step(tmp_path, tiny_model_dir, echo_registered):
    ScriptRouter.plan = ["echo"]
    EchoUpdate.fail_at = {2}
    cfg = load_config(write_config(tmp_path, tiny_model_dir, router={"kind": "script"}, train={"max_steps": 3}))
    out = train(cfg, quiet=True)
    events = {e["step"]: e for e in read_events(out.run_dir / "events.jsonl") if e["kind"] == "train"}
    assert events[2]["route"] == "lora" and events[2]["loss"] is not None
    assert events[2]["fallback"].startswith("echo failed: ConnectionError: echo failed at step 2")
    assert events[2]["echo"] == {"n": 4}
    assert out.state.failed_by_route == {"echo": 1}
    assert out.state.ok_by_route == {"echo": 2, "lora": 1}


def test_the_fallback_queue_is_in_the_checkpointed_state():
    train_set = [Example((("user", f"q{i}"),), f"a{i}", f"f:{i}") for i in range(8)]
    src = BatchSource(train_set, seed=1, per_step=2, mix_ratio=0.0)
    src.next()
    failed = [Example((("system", "s"), ("user", "x y")), "z", "remake:3")]
    src.push_fallback(failed, "TeacherUnavailable: timeout")
    src.push_fallback(train_set[:2], "TeacherUnavailable: 500")
    state = json.loads(json.dumps(src.state_dict()))  # what a checkpoint writes: plain JSON
    again = BatchSource(train_set, seed=1, per_step=2, mix_ratio=0.0)
    again.load_state_dict(state, refined=[])
    assert again.next() == (failed, "TeacherUnavailable: timeout")
    assert again.next() == (train_set[:2], "TeacherUnavailable: 500")
    assert again.next()[1] is None  # then fresh batches again


def test_the_learned_router_sees_the_batch_losses(tmp_path, tiny_model_dir, echo_registered):
    cfg = load_config(write_config(tmp_path, tiny_model_dir, router={"kind": "reward_classifier", "warmup": 2},
                                   reward={"kind": "neg_loss", "probe_size": 2}, train={"max_steps": 4}))
    out = train(cfg, quiet=True)
    events = [e for e in read_events(out.run_dir / "events.jsonl") if e["kind"] == "train"]
    assert {e["route"] for e in events} == {"lora", "echo"}  # the bandit handles the registry's routes
    for e in events:
        stats = e["batch"]
        assert stats["mean_loss"] > 0 and stats["max_loss"] >= stats["mean_loss"]
        names = ["batch_has_loss", "batch_mean_loss", "batch_max_loss"]
        feats = dict(zip(names, e["decision"]["features"][-(len(names) + 3 + 64):][:3]))
        assert feats["batch_has_loss"] == 1.0 and feats["batch_mean_loss"] == pytest.approx(stats["mean_loss"])
        assert e["gain"] is not None


def test_batch_stats_features_have_no_dead_entries():
    stats = BatchStats(mean_loss=2.5, max_loss=4.0, reward_before=-0.3, prompts=("a", "b"))
    assert all(x != 0 for x in stats.as_features())


def test_dependencies_point_one_way():
    code = ("import sys, monitors, classifiers, classifiers.reward_router, monitors.suite;"
            "bad = sorted(m for m in sys.modules if m == 'neurosym' or m.startswith('neurosym.'));"
            "print(bad); sys.exit(1 if bad else 0)")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stdout + res.stderr


def test_a_verb_imports_only_its_own_stack():
    code = ("import sys; from neurosym.cli import main; rc = main(['conn', 'run', 'add', '12', '30']);"
            "heavy = [m for m in ('neurosym.train', 'neurosym.run.run', 'peft', 'textgrad', 'wandb', 'sklearn') "
            "if m in sys.modules]; print('HEAVY', heavy); sys.exit(rc)")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert "42" in res.stdout and "HEAVY []" in res.stdout, res.stdout


def test_user_errors_exit_2_from_every_verb(tmp_path):
    from neurosym.cli import main
    assert main(["validate", str(tmp_path / "missing.yaml")]) == 2
    assert main(["conn", "run", "add", "12", "x"]) == 2
    assert main(["resume", str(tmp_path)]) == 2


def test_eval_reward_early_stopping_and_warmup_ratio(tmp_path, tiny_model_dir):
    cfg = load_config(write_config(tmp_path, tiny_model_dir, reward={"kind": "numeric_match"},
                                   symbolic={"max_new_tokens": 4},
                                   train={"max_steps": 40, "eval_every": 1, "save_every": 0, "warmup": 0, "warmup_ratio": 0.25,
                                          "early_stopping_patience": 2, "early_stopping_metric": "eval_reward"}))
    out = train(cfg, quiet=True)
    evals = [e for e in read_events(out.run_dir / "events.jsonl") if e["kind"] == "eval"]
    # the tiny random model answers no sum right: eval_reward is measured (by generation) and never improves
    assert all(e["eval_reward"] == 0.0 for e in evals)
    assert out.stop_reason and "early stopping: eval_reward" in out.stop_reason
    assert out.state.step == 2 and [e["step"] for e in evals] == [0, 1, 2]
    steps = [e for e in read_events(out.run_dir / "events.jsonl") if e["kind"] == "train"]
    assert steps[0]["lr"] == 0.0 and steps[1]["lr"] == pytest.approx(cfg.train.lr / 10)  # ceil(0.25 * 40) = 10


def test_eight_bit_optimizers_are_refused_without_cuda(tmp_path, tiny_model_dir, capsys):
    from neurosym.cli import main
    cfg = write_config(tmp_path, tiny_model_dir)
    assert main(["train", str(cfg), "--set", "train.optimizer=paged_adamw_8bit", "--quiet"]) == 2
    assert "need a CUDA GPU" in capsys.readouterr().err


def test_wandb_samples_table_at_each_eval(tmp_path, tiny_model_dir):
    from tests.support.wandb_reader import summarize
    cfg = load_config(write_config(tmp_path, tiny_model_dir, tracking={"mode": "offline"},
                                   train={"max_steps": 2, "eval_every": 2}))
    out = train(cfg, quiet=True)
    history = summarize(out.run_dir / "wandb")["history"]
    rows = [h["eval/samples/nrows"] for h in history if "eval/samples/nrows" in h]
    assert rows == [6, 6]  # before (step 0) and step 2: every eval example (6) with its generation


def test_a_resumed_offline_wandb_run_continues_its_steps_and_syncs_as_one(tmp_path, tiny_model_dir, capsys):
    import time

    from neurosym.cli import main
    from tests.support.wandb_reader import summarize
    cfg = write_config(tmp_path, tiny_model_dir, tracking={"mode": "offline"},
                       train={"max_steps": 2, "eval_every": 0, "save_every": 1})
    assert main(["train", str(cfg), "--quiet"]) == 0
    time.sleep(1.1)  # offline files are named by the second they start in
    run = tmp_path / "runs" / "job"
    assert main(["resume", str(run), "--set", "train.max_steps=4", "--quiet"]) == 0
    files = sorted((run / "wandb").glob("offline-run-*"))
    assert len(files) == 2
    steps = []
    for f in files:  # in start order, as `wandb sync --id` uploads them
        steps += [h["_step"] for h in summarize(f)["history"] if "train/loss" in h]
    assert steps == [1, 2, 3, 4]
    run_id = (run / "wandb_run_id").read_text().strip()
    assert summarize(run / "wandb")["run_ids"] == {run_id}
    sync = [line for line in capsys.readouterr().err.splitlines() if "wandb sync" in line][-1]
    assert f"wandb sync --id {run_id} -p neurosym" in sync and all(str(f) in sync for f in files)


def test_the_gain_can_be_measured_by_loss_and_on_a_schedule(tmp_path, tiny_model_dir, echo_registered, monkeypatch):
    import neurosym.run.gain
    monkeypatch.setattr(neurosym.run.gain, "answer_examples", lambda *a, **k: pytest.fail("generated for the gain"))
    cfg = load_config(write_config(tmp_path, tiny_model_dir, router={"kind": "reward_classifier", "warmup": 2},
                                   reward={"kind": "numeric_match", "gain_from": "loss", "gain_every": 2,
                                           "probe_size": 2},
                                   symbolic={"max_new_tokens": 2}, train={"max_steps": 6, "eval_every": 0}))
    out = train(cfg, quiet=True)
    events = [e for e in read_events(out.run_dir / "events.jsonl") if e["kind"] == "train"]
    measured = [e["step"] for e in events if e["gain"] is not None]
    # the router's two warm-up decisions (one per route) are always learnt from; then steps whose
    # state.step before them is a multiple of 2
    assert measured == [1, 2, 3, 5]
    assert {e["route"] for e in events if e["step"] in (1, 2)} == {"lora", "echo"}
    assert all(e["batch"]["mean_loss"] is None for e in events if e["step"] not in measured)


def test_gradient_checkpointing_takes_the_same_steps(tmp_path, tiny_model_dir):
    runs = {}
    for flag in (False, True):
        cfg = load_config(write_config(tmp_path / str(flag), tiny_model_dir,
                                       lora={"dropout": 0.0}, train={"max_steps": 3, "gradient_checkpointing": flag}))
        out = train(cfg, quiet=True)
        runs[flag] = [x for e in read_events(out.run_dir / "events.jsonl") if e["kind"] == "train"
                      for x in (e["loss"], e["grad_norm"])]
    assert runs[True] == pytest.approx(runs[False], rel=1e-5)


def test_auto_precision_is_bf16_else_fp16_with_a_grad_scaler_on_cuda(monkeypatch):
    import torch

    from neurosym.model.load import resolve_dtype
    from neurosym.runtime.local import LocalRuntime
    cuda = torch.device("cuda", 0)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert resolve_dtype("auto", cuda) is torch.bfloat16
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    assert resolve_dtype("auto", cuda) is torch.float16
    assert resolve_dtype("auto", torch.device("cpu")) is torch.float32
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a CPU-only build warns that the scaler is disabled
        assert LocalRuntime(cuda, torch.float16).scaler is not None      # fp16: loss scaling
    assert LocalRuntime(cuda, torch.bfloat16).scaler is None             # bf16 needs none

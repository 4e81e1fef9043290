"""Nothing a user does loses data (the run-directory side): resume acts on RUN and writes its config
only once accepted; a killed first attempt leaves nothing behind; one process per run directory;
divergence stops before it reaches the weights; another base model is refused; a damaged checkpoint
falls back to the newest intact one; config values train would crash on are refused at load; a
teacher that refuses for good is said loudly (and stops the run if asked)."""
from __future__ import annotations

import json
import math
import os
import shutil
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from neurosym.persist.checkpoint import complete_checkpoints, latest_checkpoint
from neurosym.cli import main
from neurosym.config.schema import ConfigError, load_config
from neurosym.errors import RunDirError
from neurosym.observe.events import read_events
from neurosym.remake.store import RemakeStore
from neurosym.persist.rundir import RunDir
from neurosym.testing.scripted_teacher import Teacher
from neurosym.model.tiny import build_tiny_model
from neurosym.train import train
from tests.support.hybrid import KEY_ENV, hybrid_config
from tests.support.jobs import write_config


def _events(run, kind="train"):
    return [e for e in read_events(Path(run) / "events.jsonl") if e["kind"] == kind]


@pytest.fixture(scope="module")
def finished(tmp_path_factory, tiny_model_dir):
    """One finished 4-step run (checkpoints at 2 and 4) that tests copy before touching."""
    tmp = tmp_path_factory.mktemp("finished")
    cfg = load_config(write_config(tmp, tiny_model_dir, name="done", train={"max_steps": 4, "save_every": 2}))
    return train(cfg, quiet=True).run_dir


def _copy(run: Path, dest: Path) -> Path:
    shutil.copytree(run, dest)
    return dest


# ---------------------------------------------------------------------------------- resume acts on RUN

def test_resume_with_set_acts_on_the_moved_run(tmp_path, finished, monkeypatch):
    moved = _copy(finished, tmp_path / "elsewhere" / "renamed")
    shutil.rmtree(moved / "checkpoints" / "step-4")
    monkeypatch.chdir(tmp_path)  # a relative output_dir in the saved config must not matter
    assert main(["resume", str(moved), "--set", "train.max_steps=6", "--quiet"]) == 0
    assert [e["step"] for e in _events(moved)][-2:] == [5, 6]
    assert latest_checkpoint(moved).name == "step-6"
    assert latest_checkpoint(finished).name == "step-4"  # the original is untouched
    assert not (tmp_path / "runs").exists()
    saved = yaml.safe_load((moved / "config.yaml").read_text())
    assert saved["run"]["name"] == "renamed" and saved["train"]["max_steps"] == 6


def test_a_refused_resume_writes_nothing(tmp_path, finished, capsys):
    run = _copy(finished, tmp_path / "run")
    before = {p: p.read_bytes() for p in run.rglob("*") if p.is_file()}
    assert main(["resume", str(run), "--set", "train.batch_size=2"]) == 2
    assert "cannot change train.batch_size" in capsys.readouterr().err
    assert main(["resume", str(run), "--set", "model.name_or_path=tiny://llama"]) == 2
    assert {p: p.read_bytes() for p in run.rglob("*") if p.is_file()} == before
    assert main(["resume", str(run), "--quiet"]) == 0  # a plain resume still works afterwards


def test_resume_applies_a_new_lr(tmp_path, finished):
    run = _copy(finished, tmp_path / "run")
    shutil.rmtree(run / "checkpoints" / "step-4")
    assert main(["resume", str(run), "--set", "train.lr=0.05", "--quiet"]) == 0
    cfg = load_config(run / "config.yaml")
    assert cfg.train.lr == 0.05
    from neurosym.run.schedule import lr_at
    assert _events(run)[-1]["lr"] == pytest.approx(lr_at(cfg.train, 4, 4))


def test_resuming_a_finished_run_adds_nothing(tmp_path, finished, capsys):
    run = _copy(finished, tmp_path / "run")
    events = (run / "events.jsonl").read_text()
    assert main(["resume", str(run), "--quiet"]) == 0
    assert main(["resume", str(run), "--quiet"]) == 0
    assert (run / "events.jsonl").read_text() == events
    assert "nothing to do" in capsys.readouterr().err


# ---------------------------------------------------------------------------------- the lock

def test_one_process_per_run_directory(tmp_path, tiny_model_dir):
    cfg = load_config(write_config(tmp_path, tiny_model_dir, train={"max_steps": 2}))
    holder = RunDir(cfg.run_dir).lock()
    try:
        with pytest.raises(RunDirError, match=f"in use by another neurosym process \\(pid {os.getpid()}\\)"):
            train(cfg, quiet=True)
        assert not (cfg.run_dir / "events.jsonl").exists()
    finally:
        holder.unlock()
    (cfg.run_dir / ".lock").write_text("999999\n")  # a dead holder's lock: taken over
    assert train(cfg, quiet=True).state.step == 2


# ---------------------------------------------------------------------------------- a killed first attempt

@pytest.fixture
def teacher(openai_server, monkeypatch):
    monkeypatch.setenv(KEY_ENV, openai_server.api_key)
    openai_server.set_responder(Teacher())
    return openai_server


def test_a_killed_first_attempt_leaves_no_rows_and_no_second_prompt_record(tmp_path, tiny_model_dir, teacher):
    cfg = load_config(hybrid_config(tmp_path, tiny_model_dir, teacher, router={"kind": "alternate", "every": 2},
                                    train={"max_steps": 4, "save_every": 100}))
    run = train(cfg, quiet=True).run_dir
    with RemakeStore(run / "remake.sqlite") as store:
        rows = [(r["prompt"], r["step"]) for r in store.rows()]
    assert rows
    shutil.rmtree(run / "checkpoints")  # what a SIGKILL before the first checkpoint leaves behind
    assert main(["resume", str(run), "--quiet"]) == 0
    with RemakeStore(run / "remake.sqlite") as store:
        assert [(r["prompt"], r["step"]) for r in store.rows()] == rows  # the same rows, not twice
    prompts = _events(run, "prompt")
    assert [p["step"] for p in prompts].count(0) == 1
    assert [e["step"] for e in _events(run)] == [1, 2, 3, 4]


# ---------------------------------------------------------------------------------- divergence

def test_divergence_stops_before_the_weights_and_keeps_the_last_good_checkpoint(tmp_path, tiny_model_dir,
                                                                              monkeypatch, capsys):
    import neurosym.updates.lora as lora
    real = lora.token_losses
    calls = {"n": 0}

    def nan_at_step_3(model, batch, *args):
        calls["n"] += model.training  # training forwards only (one per step here), not evaluations
        losses, mask = real(model, batch, *args)
        return (losses * float("nan"), mask) if calls["n"] == 3 and model.training else (losses, mask)

    monkeypatch.setattr(lora, "token_losses", nan_at_step_3)
    cfg = write_config(tmp_path, tiny_model_dir, train={"max_steps": 5, "save_every": 2, "eval_every": 0})
    assert main(["train", str(cfg), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "training diverged at step 3" in err and "step-2" in err and "Traceback" not in err
    run = tmp_path / "runs" / "job"
    assert [c.name for c in complete_checkpoints(run)] == ["step-2"]
    weights = load_file(str(run / "checkpoints" / "step-2" / "adapter_model.safetensors"))
    assert all(torch.isfinite(t).all() for t in weights.values())
    assert [e["step"] for e in _events(run)] == [1, 2]


@pytest.mark.parametrize("override, key", [
    ("train.lr=.inf", "train.lr"), ("train.lr=1e30", "train.lr"), ("train.lr=.nan", "train.lr"),
    ("run.seed=-1", "run.seed"), ("run.seed=18446744073709551616", "run.seed"),
    ("lora.target_modules=[]", "lora.target_modules"), ("run.name=a\tb", "run.name"),
])
def test_values_train_would_crash_on_are_refused_at_load(tmp_path, tiny_model_dir, override, key):
    cfg = write_config(tmp_path, tiny_model_dir)
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        load_config(cfg, [override])


def test_epochs_inf_and_odd_config_files_are_refused(tmp_path, tiny_model_dir):
    cfg = write_config(tmp_path, tiny_model_dir)
    with pytest.raises(ConfigError, match="train.epochs"):
        load_config(cfg, ["train.max_steps=null", "train.epochs=.inf"])
    with pytest.raises(ConfigError, match="is a folder"):
        load_config(tmp_path)
    binary = tmp_path / "model.safetensors"
    binary.write_bytes(bytes(range(256)) * 4)
    with pytest.raises(ConfigError, match="not a text"):
        load_config(binary)


def test_unknown_target_modules_fail_with_the_model_layers(tmp_path, tiny_model_dir, capsys):
    cfg = write_config(tmp_path, tiny_model_dir)
    assert main(["train", str(cfg), "--set", "lora.target_modules=[query_key_value]", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "matches no layer" in err and "q_proj" in err and "Traceback" not in err


def test_wandb_online_without_a_key_fails_before_the_model_loads(tmp_path, tiny_model_dir, capsys, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.netrc
    cfg = write_config(tmp_path, tiny_model_dir, tracking={"mode": "online"})
    assert main(["train", str(cfg), "--quiet"]) == 2
    assert "WANDB_API_KEY" in capsys.readouterr().err
    assert not (tmp_path / "runs" / "job" / "checkpoints").exists()


# ---------------------------------------------------------------------------------- base identity

def test_resume_onto_another_base_of_the_same_shapes_is_refused(tmp_path, capsys):
    base = build_tiny_model(tmp_path / "base", seed=0)
    cfg = write_config(tmp_path, base, train={"max_steps": 2, "save_every": 1})
    assert main(["train", str(cfg), "--quiet"]) == 0
    shutil.rmtree(tmp_path / "runs" / "job" / "checkpoints" / "step-2")
    shutil.rmtree(base)
    build_tiny_model(tmp_path / "base", seed=1)  # same architecture, other weights, same path
    assert main(["resume", str(tmp_path / "runs" / "job"), "--quiet"]) == 2
    assert "trained on another base model" in capsys.readouterr().err


# ---------------------------------------------------------------------------------- damaged checkpoints

def _truncate(path: Path):
    path.write_bytes(path.read_bytes()[: len(path.read_bytes()) // 2])


DAMAGE = {
    "truncated adapter": lambda c: _truncate(c / "adapter_model.safetensors"),
    "garbage state.json": lambda c: (c / "state.json").write_text("{not json"),
    "state.json of another step": lambda c: (c / "state.json").write_text(
        (c / "state.json").read_text().replace('"step": 4', '"step": 9')),
    "missing optimizer": lambda c: (c / "optimizer.safetensors").unlink(),
    "empty adapter config": lambda c: (c / "adapter_config.json").write_text(""),
    "truncated rng": lambda c: _truncate(c / "rng.safetensors"),
    "garbage optimizer json": lambda c: (c / "optimizer.json").write_bytes(b"\x00\xff" * 10),
}


@pytest.mark.parametrize("damage", list(DAMAGE))
def test_a_damaged_newest_checkpoint_falls_back_to_the_newest_intact_one(tmp_path, finished, damage, capsys):
    run = _copy(finished, tmp_path / "run")
    DAMAGE[damage](run / "checkpoints" / "step-4")
    assert main(["resume", str(run), "--quiet"]) == 0
    err = capsys.readouterr().err
    assert "skipping damaged checkpoint" in err and "step-4" in err and "resumed from" in err and "step-2" in err
    # resumed from step 2 and redid steps 3-4 exactly: the same adapter as the undamaged run
    ours = load_file(str(run / "checkpoints" / "step-4" / "adapter_model.safetensors"))
    ref = load_file(str(finished / "checkpoints" / "step-4" / "adapter_model.safetensors"))
    assert max(float((ours[k] - ref[k]).abs().max()) for k in ref) <= 1e-6


# ---------------------------------------------------------------------------------- teacher down for good

@pytest.mark.parametrize("policy", ["continue", "stop"])
def test_a_teacher_that_refuses_for_good_is_said_loudly(tmp_path, tiny_model_dir, teacher, policy, capsys):
    from neurosym.updates.symbolic.update import SymbolicUpdate
    cfg = hybrid_config(tmp_path, tiny_model_dir, teacher, router={"kind": "always_symbolic"},
                        symbolic={"on_teacher_down": policy}, train={"max_steps": 3, "save_every": 100})
    real = SymbolicUpdate._work

    def work(self, job, student):
        if job.submitted_step == 2:
            teacher.inject("401", times=100)
        return real(self, job, student)

    SymbolicUpdate._work = work
    try:
        rc = main(["train", str(cfg), "--quiet"])
    finally:
        SymbolicUpdate._work = real
    out = capsys.readouterr()
    run = tmp_path / "runs" / "hybrid"
    alerts = [e for e in _events(run, "alert")]
    if policy == "continue":
        assert rc == 0
        assert alerts and "TEACHER DOWN" in alerts[0]["text"] and "TEACHER DOWN" in out.err
        routes = [e["route"] for e in _events(run)]
        assert routes == ["symbolic", "lora", "lora"]
        assert "warning" in out.out and "TEACHER DOWN" in out.out  # the summary repeats it
    else:
        assert rc == 2 and "symbolic.on_teacher_down: stop" in out.err
        assert latest_checkpoint(run).name == "step-1"  # saved on the way out, resumable
        assert math.isfinite(json.loads((latest_checkpoint(run) / "state.json").read_text())["lr"])


def test_failed_async_updates_are_counted_apart_in_the_summary(tmp_path, tiny_model_dir, teacher, capsys,
                                                              monkeypatch):
    from neurosym.updates.symbolic.update import SymbolicUpdate
    real = SymbolicUpdate._work

    def work(self, job, student):
        teacher.inject("500", times=1000)  # after the preflight: every update's teacher calls fail
        return real(self, job, student)

    monkeypatch.setattr(SymbolicUpdate, "_work", work)
    cfg = hybrid_config(tmp_path, tiny_model_dir, teacher, router={"kind": "alternate", "every": 2},
                        symbolic={"async": True, "max_inflight": 1, "down_after_failures": 100},
                        teacher={"max_retries": 0}, train={"max_steps": 6, "save_every": 100})
    assert main(["train", str(cfg), "--quiet"]) == 0
    out = capsys.readouterr().out
    run = tmp_path / "runs" / "hybrid"
    landed = [e for e in read_events(run / "events.jsonl") if e["kind"] == "symbolic"]
    assert landed and all(e["symbolic"]["error_type"] == "TeacherUnavailable" for e in landed)
    n = len(landed)
    assert f"{n} applied" not in out and f"0 applied, {n} failed: their batches took LoRA steps" in out
    state = json.loads((latest_checkpoint(run) / "state.json").read_text())
    assert state["failed_by_route"] == {"symbolic": n} and "symbolic" not in state["ok_by_route"]

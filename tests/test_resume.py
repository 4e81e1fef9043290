"""Kill and resume with real subprocesses: SIGKILL at an arbitrary step, Ctrl-C (SIGINT)."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from neurosym.checkpoint import complete_checkpoints, latest_checkpoint
from neurosym.events import read_events
from jobs import write_config

pytestmark = pytest.mark.slow

# 20 examples, batch 4: an epoch every 5 steps, so the kill happens after an epoch boundary.
TRAIN = {"max_steps": 14, "save_every": 3, "eval_every": 0, "batch_size": 4, "lr": 5e-3}


def _env():
    env = dict(os.environ)
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    return env


def _cli(*args) -> list:
    return [sys.executable, "-m", "neurosym.cli", *args]


def _run(*args, timeout=180):
    proc = subprocess.run(_cli(*args), env=_env(), capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def _wait_for_step(events: Path, proc, step: int, timeout=120.0) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if events.exists():
            done = [e["step"] for e in read_events(events) if e.get("kind") == "train"]
            if done and done[-1] >= step:
                return done[-1]
        assert proc.poll() is None, proc.stderr.read()[-3000:]
        time.sleep(0.01)
    raise AssertionError(f"step {step} never reached")


def _final(run: Path):
    ckpt = latest_checkpoint(run)
    losses = [(e["step"], e["loss"]) for e in read_events(run / "events.jsonl") if e["kind"] == "train"]
    return load_file(str(ckpt / "adapter_model.safetensors")), losses, ckpt.name


@pytest.fixture(scope="module")
def reference(tmp_path_factory, tiny_model_dir):
    """The uninterrupted run every interrupted run must reproduce."""
    tmp = tmp_path_factory.mktemp("ref")
    cfg = write_config(tmp, tiny_model_dir, name="ref", n_train=20, train=TRAIN)
    _run("train", str(cfg), "--quiet")
    return _final(tmp / "runs" / "ref")


def _assert_same(reference, run: Path):
    ref_w, ref_losses, ref_name = reference
    w, losses, name = _final(run)
    assert name == ref_name == "step-14"
    assert [s for s, _ in losses] == list(range(1, 15)), "every step exactly once"
    assert [l for _, l in losses] == pytest.approx([l for _, l in ref_losses], abs=1e-6)
    assert set(w) == set(ref_w)
    worst = max(float((w[k] - ref_w[k]).abs().max()) for k in w)
    assert worst <= 1e-6, f"adapter weights differ by {worst}"


def test_sigkill_at_an_arbitrary_step_then_resume_is_exact(tmp_path, tiny_model_dir, reference):
    cfg = write_config(tmp_path, tiny_model_dir, name="killed", n_train=20, train=TRAIN)
    run = tmp_path / "runs" / "killed"
    proc = subprocess.Popen(_cli("train", str(cfg), "--quiet"), env=_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        at = _wait_for_step(run / "events.jsonl", proc, 8)  # after the step-6 save, past epoch 1
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -signal.SIGKILL
    assert at < 14, "the run finished before it could be killed"
    ckpt = latest_checkpoint(run)
    assert ckpt is not None and int(ckpt.name.split("-")[1]) < 14
    _run("resume", str(run), "--quiet")
    _assert_same(reference, run)


def test_train_resume_flag_and_ctrl_c(tmp_path, tiny_model_dir, reference):
    cfg = write_config(tmp_path, tiny_model_dir, name="ctrlc", n_train=20, train=TRAIN)
    run = tmp_path / "runs" / "ctrlc"
    proc = subprocess.Popen(_cli("train", str(cfg), "--quiet"), env=_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        _wait_for_step(run / "events.jsonl", proc, 4)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err[-2000:]
    assert "checkpoint saved" in err and f"neurosym resume {run}" in err
    last = [e["step"] for e in read_events(run / "events.jsonl") if e["kind"] == "train"][-1]
    assert latest_checkpoint(run).name == f"step-{last}", "Ctrl-C saves the step it stopped at"
    assert last < 14
    _run("train", str(cfg), "--resume", "--quiet")
    _assert_same(reference, run)

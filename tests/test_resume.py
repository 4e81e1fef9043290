"""Kill and resume with real subprocesses: SIGKILL at an arbitrary step, Ctrl-C (SIGINT)."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from safetensors.torch import load_file

from neurosym.persist.checkpoint import latest_checkpoint
from neurosym.observe.events import read_events
from tests.support.jobs import write_config

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


def _kill_at(cfg, run, step):
    proc = subprocess.Popen(_cli("train", str(cfg), "--quiet"), env=_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        at = wait_for_step(run / "events.jsonl", proc, step)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    return at, proc.returncode


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
    at, returncode = _kill_at(cfg, run, 8)  # after the step-6 save, past epoch 1
    assert returncode == -signal.SIGKILL
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
        wait_for_step(run / "events.jsonl", proc, 4)
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


# ---- with the router and the symbolic route on

from tests.support.hybrid import KEY_ENV, Teacher, hybrid_config  # noqa: E402
from tests.support.processes import wait_for_step

ROUTED = {"max_steps": 10, "save_every": 2, "eval_every": 0, "batch_size": 4, "lr": 5e-3}


@pytest.fixture
def teacher(openai_server, monkeypatch):
    monkeypatch.setenv(KEY_ENV, openai_server.api_key)  # inherited by the subprocesses
    openai_server.set_responder(Teacher())
    return openai_server


def test_sequential_hybrid_with_learned_router_resumes_exactly(tmp_path, tiny_model_dir, teacher):
    """Router, monitors, prompt versions, remake store and sampler mix are all restored exactly."""
    router = {"kind": "reward_classifier", "warmup": 4, "epsilon": 0.3}
    sections = dict(train=ROUTED, reward={"kind": "neg_loss", "probe_size": 4})
    ref_cfg = hybrid_config(tmp_path / "a", tiny_model_dir, teacher, name="ref", router=router, **sections)
    _run("train", str(ref_cfg), "--quiet")
    ref_run = tmp_path / "a" / "runs" / "ref"
    cfg = hybrid_config(tmp_path / "b", tiny_model_dir, teacher, name="killed", router=router, **sections)
    run = tmp_path / "b" / "runs" / "killed"
    at, _ = _kill_at(cfg, run, 5)
    assert at < 10
    _run("resume", str(run), "--quiet")

    def summary(r):
        ev = [e for e in read_events(r / "events.jsonl") if e["kind"] == "train"]
        return ([(e["step"], e["route"], e["prompt_version"]) for e in ev], [e["loss"] for e in ev],
                [e.get("gain") for e in ev])
    routes, losses, gains = summary(run)
    ref_routes, ref_losses, ref_gains = summary(ref_run)
    assert {r for _, r, _ in ref_routes} == {"lora", "symbolic"}, "the test must exercise both routes"
    assert routes == ref_routes
    assert [l for l in losses if l is not None] == pytest.approx([l for l in ref_losses if l is not None], abs=1e-6)
    assert gains == pytest.approx(ref_gains, abs=1e-6)
    w, ref_w = (load_file(str(latest_checkpoint(r) / "adapter_model.safetensors")) for r in (run, ref_run))
    assert max(float((w[k] - ref_w[k]).abs().max()) for k in w) <= 1e-6
    from neurosym.remake.store import RemakeStore
    with RemakeStore(run / "remake.sqlite") as a, RemakeStore(ref_run / "remake.sqlite") as b:
        key = lambda rows: [(r["id"], Path(r["parent_source"]).name, r["prompt"], r["step"]) for r in rows]
        assert key(a.rows()) == key(b.rows())


def test_async_kill_with_pending_symbolic_work_loses_and_duplicates_nothing(tmp_path, tiny_model_dir, teacher):
    teacher.latency_s = 0.15  # ~2 s per update: jobs are in flight at checkpoints
    cfg = hybrid_config(tmp_path, tiny_model_dir, teacher, name="async", router={"kind": "alternate", "every": 2},
                        symbolic={"async": True, "max_inflight": 2}, teacher={"max_concurrency": 4},
                        train=ROUTED)
    run = tmp_path / "runs" / "async"
    proc = subprocess.Popen(_cli("train", str(cfg), "--quiet"), env=_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:  # kill once a checkpoint lists symbolic work still in flight
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            ckpt = latest_checkpoint(run)
            if ckpt and json.loads((ckpt / "state.json").read_text())["components"]["symbolic"]["inflight"]:
                break
            assert proc.poll() is None, proc.stderr.read()[-3000:]
            time.sleep(0.02)
        else:
            raise AssertionError("no checkpoint with in-flight symbolic work")
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    pending = json.loads((ckpt / "state.json").read_text())["components"]["symbolic"]["inflight"]
    _run("resume", str(run), "--quiet")
    events = read_events(run / "events.jsonl")
    submitted = [e["step"] for e in events if e["kind"] == "train" and e["route"] == "symbolic"]
    landed = [e["symbolic"]["submitted_step"] for e in events if e["kind"] == "symbolic"]
    assert submitted and sorted(landed) == submitted, "every submitted update lands exactly once"
    assert {p["submitted_step"] for p in pending} <= set(landed)
    assert [e["step"] for e in events if e["kind"] == "train"] == list(range(1, 11))
    from neurosym.remake.store import RemakeStore
    with RemakeStore(run / "remake.sqlite") as store:
        rows = store.rows()
    keys = [(r["parent_source"], r["step"]) for r in rows]
    assert len(keys) == len(set(keys)), "no refined example stored twice"
    assert {r["step"] for r in rows} <= {e["step"] for e in events if e["kind"] == "symbolic"}

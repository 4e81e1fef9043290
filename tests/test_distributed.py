"""Several processes (CPU, gloo, the tiny model) launched the way users launch them: the run under
2 processes takes the same steps as 1 process on the same global batch; one process talks to the
teacher and writes the outputs; a run killed under 2 processes resumes under 2 or under 1."""
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from safetensors.torch import load_file

from neurosym.persist.checkpoint import complete_checkpoints, latest_checkpoint
from neurosym.observe.events import read_events
from tests.support.hybrid import KEY_ENV, Teacher, hybrid_config
from tests.support.jobs import write_config
from tests.support.processes import kill_launcher_at, wait_for_step

# global batch 8 = micro-batches of 2 x 2 per process under 2 processes, x 4 under 1; no dropout
# (LoRA dropout draws per-process random numbers, so only a dropout-free step is the same step)
TRAIN = {"max_steps": 6, "batch_size": 2, "global_batch_size": 8, "eval_every": 0, "save_every": 2, "lr": 5e-3}
LORA = {"dropout": 0.0}
ATOL = 1e-5


def _env(**extra):
    env = dict(os.environ)
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONUNBUFFERED="1", **extra)
    return env


def _cli(*args, nproc=1) -> list:
    base = [sys.executable, "-m", "neurosym"]
    return base + list(args) + (["--nproc", str(nproc)] if nproc > 1 else [])


def _run(*args, nproc=1, timeout=400, env=None):
    proc = subprocess.run(_cli(*args, nproc=nproc), env=env or _env(), capture_output=True, text=True,
                          timeout=timeout)
    if proc.returncode != 0:
        tail = [line for line in proc.stderr.splitlines() if "DEBUG" not in line]
        raise AssertionError("\n".join(tail[-80:]))
    return proc


def _adapter(run: Path) -> dict:
    return load_file(str(latest_checkpoint(run) / "adapter_model.safetensors"))


def _max_diff(a: dict, b: dict) -> float:
    assert a.keys() == b.keys()
    return max(float((a[k] - b[k]).abs().max()) for k in a)


def _train_events(run: Path) -> list:
    return [e for e in read_events(run / "events.jsonl") if e["kind"] == "train"]


def _other_rank_steps(stderr: str) -> list:
    """What process 1 logged of each step (neurosym -v): (step, route, prompt version)."""
    return [(int(s), r, int(v)) for s, r, v in
            re.findall(r"\[process 1\] step (\d+): route (\w+) loss \S+ prompt v(\d+)", stderr)]


@pytest.fixture(scope="module")
def reference(tmp_path_factory, tiny_model_dir):
    """One process, uninterrupted, on the same global batch."""
    tmp = tmp_path_factory.mktemp("ref")
    cfg = write_config(tmp, tiny_model_dir, name="ref", n_train=20, lora=LORA, train=TRAIN)
    _run("train", str(cfg), "--quiet")
    return tmp / "runs" / "ref"


@pytest.mark.slow
def test_two_processes_take_the_one_process_steps(tmp_path, tiny_model_dir, reference):
    cfg = write_config(tmp_path, tiny_model_dir, name="ddp", n_train=20, lora=LORA, train=TRAIN)
    proc = _run("-v", "train", str(cfg), "--quiet", nproc=2)
    run = tmp_path / "runs" / "ddp"
    diff = _max_diff(_adapter(run), _adapter(reference))
    print(f"2 processes vs 1: max |adapter difference| = {diff:.3g}")
    assert diff <= ATOL
    # the monitors saw the all-reduced loss and the global gradient norm, and all the step's tokens
    ours, ref = _train_events(run), _train_events(reference)
    assert [e["step"] for e in ours] == list(range(1, 7))  # one set of events, each step once
    for a, b in zip(ours, ref):
        assert a["loss"] == pytest.approx(b["loss"], abs=1e-5)
        assert a["grad_norm"] == pytest.approx(b["grad_norm"], rel=1e-4)
        assert a["tokens"] == b["tokens"]
    # one writer: checkpoints whole, no leftovers, one summary
    assert [c.name for c in complete_checkpoints(run)] == ["step-2", "step-4", "step-6"]
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["step-2", "step-4", "step-6"]
    assert proc.stdout.count("done: 6 steps") == 1, proc.stdout
    assert "global batch 8 examples per step" in proc.stderr
    # process 1 took the same route at every step (it logs its steps with -v)
    assert _other_rank_steps(proc.stderr) == [(e["step"], e["route"], e["prompt_version"]) for e in ours]


@pytest.mark.slow
@pytest.mark.parametrize("resume_nproc", [2, 1])
def test_killed_under_two_processes_resumes_under_two_or_one(tmp_path, tiny_model_dir, reference, resume_nproc):
    cfg = write_config(tmp_path, tiny_model_dir, name="killed", n_train=20, lora=LORA, train=TRAIN)
    run = tmp_path / "runs" / "killed"
    kill_launcher_at(_cli("train", str(cfg), "--quiet", nproc=2), run, 3, _env())
    assert latest_checkpoint(run) is not None and latest_checkpoint(run).name in {"step-2", "step-4"}
    _run("resume", str(run), "--quiet", nproc=resume_nproc)
    diff = _max_diff(_adapter(run), _adapter(reference))
    print(f"killed under 2, resumed under {resume_nproc}: max |adapter difference| vs uninterrupted = {diff:.3g}")
    assert diff <= ATOL
    assert [e["step"] for e in _train_events(run)] == list(range(1, 7))
    ref_losses = [e["loss"] for e in _train_events(reference)]
    assert [e["loss"] for e in _train_events(run)] == pytest.approx(ref_losses, abs=1e-5)


@pytest.mark.slow
def test_one_process_run_resumes_under_two(tmp_path, tiny_model_dir, reference):
    cfg = write_config(tmp_path, tiny_model_dir, name="grow", n_train=20, lora=LORA,
                       train={**TRAIN, "max_steps": 3})
    _run("train", str(cfg), "--quiet")
    run = tmp_path / "runs" / "grow"
    _run("resume", str(run), "--quiet", "--set", "train.max_steps=6", nproc=2)
    assert _max_diff(_adapter(run), _adapter(reference)) <= ATOL


@pytest.fixture
def teacher(openai_server, monkeypatch):
    monkeypatch.setenv(KEY_ENV, openai_server.api_key)
    openai_server.set_responder(Teacher())
    return openai_server


@pytest.mark.slow
def test_hybrid_under_two_processes_calls_the_teacher_from_one(tmp_path, tiny_model_dir, teacher):
    """A learned router (it measures gains with the probe), symbolic updates and the remake store:
    the run under 2 processes asks the teacher exactly what the 1-process run asks, once."""
    sections = dict(router={"kind": "reward_classifier", "warmup": 2}, lora=LORA,
                    train={**TRAIN, "save_every": 3})
    runs = {}
    for nproc in (1, 2):
        cfg = hybrid_config(tmp_path / f"p{nproc}", tiny_model_dir, teacher, name="hybrid", **sections)
        teacher.reset()
        teacher.set_responder(Teacher())
        proc = _run("-v", "train", str(cfg), "--quiet", nproc=nproc, env=_env(**{KEY_ENV: teacher.api_key}))
        runs[nproc] = (tmp_path / f"p{nproc}" / "runs" / "hybrid", len(teacher.chat_requests), proc)
    (one, calls1, _), (two, calls2, proc2) = runs[1], runs[2]
    events1, events2 = _train_events(one), _train_events(two)
    routes = [e["route"] for e in events2]
    assert "symbolic" in routes and "lora" in routes, routes
    assert calls2 == calls1 > 0  # one process asked; a second asking process would double the count
    assert routes == [e["route"] for e in events1]
    versions = [(e["version"], e["text"]) for e in read_events(two / "events.jsonl") if e["kind"] == "prompt"]
    assert len(versions) > 1 and versions == [(e["version"], e["text"]) for e in read_events(one / "events.jsonl")
                                              if e["kind"] == "prompt"]
    # process 1 followed: the same route and prompt version at every step (-v logs them) ...
    assert _other_rank_steps(proc2.stderr) == [(e["step"], e["route"], e["prompt_version"]) for e in events2]
    # ... and trained its shard under the same prompt, on the same refined examples: same adapter
    diff = _max_diff(_adapter(two), _adapter(one))
    print(f"hybrid, 2 processes vs 1: teacher calls {calls2} vs {calls1}, max |adapter difference| {diff:.3g}")
    assert diff <= ATOL


@pytest.mark.slow
def test_async_symbolic_updates_under_two_processes_take_the_one_process_run(tmp_path, tiny_model_dir, teacher):
    """symbolic.async: the main process's worker pool talks to the teacher while every process keeps
    stepping, and a landed update reaches the other process at the step it lands. With
    land_after_steps the landing steps do not depend on timing, so 2 processes take the 1-process
    run: the same routes, prompt versions at the same steps, the same teacher calls, the same adapter."""
    sections = dict(router={"kind": "alternate", "every": 3}, lora=LORA, data={"eval": None},
                    symbolic={"async": True, "max_inflight": 2, "land_after_steps": 2},
                    train={**TRAIN, "max_steps": 8, "save_every": 4})
    runs = {}
    for nproc in (1, 2):
        cfg = hybrid_config(tmp_path / f"p{nproc}", tiny_model_dir, teacher, name="async", **sections)
        teacher.reset()
        teacher.set_responder(Teacher())
        proc = _run("-v", "train", str(cfg), "--quiet", nproc=nproc, env=_env(**{KEY_ENV: teacher.api_key}))
        run = tmp_path / f"p{nproc}" / "runs" / "async"
        events = read_events(run / "events.jsonl")
        runs[nproc] = dict(run=run, train=[e for e in events if e["kind"] == "train"], proc=proc,
                           landed=[e for e in events if e["kind"] == "symbolic"],
                           prompts=[(e["step"], e["version"], e["text"]) for e in events if e["kind"] == "prompt"],
                           requests=len(teacher.chat_requests))
    one, two = runs[1], runs[2]
    steps = lambda r: [(e["step"], e["route"], e["prompt_version"]) for e in r["train"]]  # noqa: E731
    assert [route for _, route, _ in steps(two)] == ["lora", "lora", "symbolic"] * 2 + ["lora"] * 2
    assert steps(two) == steps(one)
    # each update landed two steps after it was submitted, and the first one changed the prompt mid-run
    assert [(e["step"], e["symbolic"]["submitted_step"]) for e in two["landed"]] == [(5, 3), (8, 6)]
    assert len(two["prompts"]) > 1 and two["prompts"] == one["prompts"]
    assert max(v for _, _, v in steps(two)) >= 1
    # process 1 had every landed prompt version at the step the main process had it
    assert _other_rank_steps(two["proc"].stderr) == steps(two)
    # one process asked: the 1-process run's requests, all accounted for by the landings (+ preflight)
    assert two["requests"] == one["requests"] > sum(e["symbolic"]["calls"] for e in two["landed"]) > 0
    diff = _max_diff(_adapter(two["run"]), _adapter(one["run"]))
    print(f"async hybrid, 2 processes vs 1: teacher requests {two['requests']} vs {one['requests']}, "
          f"max |adapter difference| {diff:.3g}")
    assert diff <= ATOL


@pytest.mark.slow
def test_a_stuck_teacher_ends_the_run_with_a_message_and_the_checkpoint_resumes(tmp_path, tiny_model_dir, teacher):
    """The main process hangs in a teacher call longer than run.collective_timeout_s: the process
    waiting for it stops the run with a message (no endless hang); the last checkpoint resumes.

    Nothing here races the clock: the call hangs until the test releases it (not for a fixed time),
    the checkpoint of step 2 is checked when the server has the stuck request (step 3's update comes
    after step 2's save), and the collective timeout is far above what a step, a save or the model
    load takes on a loaded machine (it only has to pass once, while the call hangs)."""
    script, calls, stuck, release = Teacher(), [], threading.Event(), threading.Event()

    def responder(messages):
        calls.append(1)
        if len(calls) == 2:  # the first symbolic update's first call (the first is the preflight)
            stuck.set()
            release.wait()
        return script(messages)

    teacher.set_responder(responder)
    cfg = hybrid_config(tmp_path, tiny_model_dir, teacher, name="stuck", lora=LORA, data={"eval": None},
                        router={"kind": "alternate", "every": 3}, run={"collective_timeout_s": 60},
                        teacher={"timeout_s": 600.0, "max_retries": 0}, train={**TRAIN, "save_every": 2})
    run = tmp_path / "runs" / "stuck"
    proc = subprocess.Popen(_cli("train", str(cfg), "--quiet", nproc=2), env=_env(**{KEY_ENV: teacher.api_key}),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        while not stuck.wait(0.1):
            assert proc.poll() is None, proc.communicate()[1][-3000:]
        assert latest_checkpoint(run).name == "step-2"
        t0 = time.monotonic()
        _, err = proc.communicate(timeout=400)
        print(f"the job ended {time.monotonic() - t0:.1f}s after the teacher call got stuck")
    finally:
        release.set()
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 1, err[-3000:]  # a failed exchange between processes, not bad input (2)
    assert "run.collective_timeout_s=60 s" in err and "neurosym resume" in err, err[-3000:]
    assert latest_checkpoint(run).name == "step-2"
    teacher.set_responder(Teacher())
    _run("resume", str(run), "--quiet", env=_env(**{KEY_ENV: teacher.api_key}))
    assert [e["step"] for e in _train_events(run)] == list(range(1, 7))


# ---- fast: the pieces, without processes ---------------------------------------------------------

def test_global_batch_size_fixes_the_step_whatever_the_number_of_processes(tmp_path, tiny_model_dir):
    from neurosym.config.schema import load_config
    from neurosym.run.run import examples_per_step, total_steps

    per_device = load_config(write_config(tmp_path, tiny_model_dir, name="a", n_train=20,
                                          train={"max_steps": None, "epochs": 2, "batch_size": 2, "grad_accum": 2}))
    assert [examples_per_step(per_device.train, w) for w in (1, 2, 4)] == [4, 8, 16]
    assert [total_steps(per_device, 20, w) for w in (1, 2, 4)] == [10, 5, 3]
    fixed = load_config(write_config(tmp_path, tiny_model_dir, name="b", n_train=20,
                                     train={"max_steps": None, "epochs": 2, "batch_size": 2, "global_batch_size": 8}))
    assert {examples_per_step(fixed.train, w) for w in (1, 2, 4)} == {8}
    assert {total_steps(fixed, 20, w) for w in (1, 2, 4)} == {5}


def test_a_main_process_outcome_crosses_as_json_with_its_failure():
    from neurosym.teacher import TeacherError
    from neurosym.updates import Outcome, outcome_as_dict, outcome_from_dict

    out = Outcome("symbolic", cost_usd=0.25, error=TeacherError("HTTP 500"), record={"calls": 3, "rejected": {}})
    back = outcome_from_dict(json.loads(json.dumps(outcome_as_dict(out))))
    assert back.failed and back.error.type_name == "TeacherError" and str(back.error) == "HTTP 500"
    assert (back.route, back.cost_usd, back.record, back.pending) == ("symbolic", 0.25, {"calls": 3, "rejected": {}},
                                                                      False)
    assert not outcome_from_dict(outcome_as_dict(Outcome("lora", loss=1.5, grad_norm=0.5, tokens=9))).failed


def test_nproc_is_checked_and_one_process_needs_no_launcher(tmp_path, tiny_model_dir, capsys):
    from neurosym.cli import main

    cfg = write_config(tmp_path, tiny_model_dir, name="n", train={"max_steps": 1, "eval_every": 0})
    with pytest.raises(SystemExit) as exit_:
        main(["train", str(cfg), "--nproc", "0"])
    assert exit_.value.code == 2 and "--nproc must be at least 1" in capsys.readouterr().err
    assert main(["train", str(cfg), "--nproc", "1", "--quiet"]) == 0  # trains in this process
    assert "launching" not in capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.parametrize("stop", ["ctrl-c", "sigterm"])
def test_stopped_under_two_processes_saves_once_exits_130_and_resumes(tmp_path, tiny_model_dir, stop):
    """Ctrl-C reaches the launcher and every process (one process group); SIGTERM (a scheduler, `kill`)
    reaches the launcher alone. Either way the processes agree to stop after the same step, the main
    one saves, and the launcher exits 130 as one process does (torchrun alone says 1). The resume
    (once: the checkpoint is written the same way) finishes the uninterrupted run's steps."""
    steps = 24
    cfg = write_config(tmp_path, tiny_model_dir, name="stop", n_train=20, lora=LORA,
                       train={**TRAIN, "max_steps": steps, "save_every": 0})
    run = tmp_path / "runs" / "stop"
    proc = subprocess.Popen(_cli("train", str(cfg), "--quiet", nproc=2), env=_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        wait_for_step(run / "events.jsonl", proc, 2)
        if stop == "ctrl-c":
            os.killpg(proc.pid, signal.SIGINT)
        else:
            os.kill(proc.pid, signal.SIGTERM)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    stopped = _train_events(run)[-1]["step"]
    assert proc.returncode == 130, err[-3000:]
    assert stopped < steps and latest_checkpoint(run).name == f"step-{stopped}", err[-3000:]
    assert err.count("checkpoint saved. Continue with") == 1, err[-3000:]
    assert "Traceback" not in err, err[-3000:]
    if stop == "sigterm":
        return
    _run("resume", str(run), "--quiet", nproc=2)
    assert [e["step"] for e in _train_events(run)] == list(range(1, steps + 1))
    assert latest_checkpoint(run).name == f"step-{steps}"


@pytest.mark.slow
def test_a_user_error_under_two_processes_exits_2_with_its_message(tmp_path, tiny_model_dir):
    """Bad input that only the processes meet (the launcher checked the config, not every data line):
    exit status 2 and the message, as one process gives, not torchrun's 1 and its failure report."""
    cfg = write_config(tmp_path, tiny_model_dir, name="bad", n_train=20, lora=LORA, train=TRAIN)
    data = tmp_path / "data" / "train.jsonl"
    data.write_text(data.read_text() + "{not json\n")
    proc = subprocess.run(_cli("train", str(cfg), "--quiet", nproc=2), env=_env(), capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert f"error: {data}:21: bad JSON" in proc.stderr and "data.on_error: skip" in proc.stderr
    assert "Traceback" not in proc.stderr and "ChildFailedError" not in proc.stderr, proc.stderr[-3000:]


def _worker_pid(launcher_pid: int, rank: int) -> int | None:
    """The pid of the launcher's worker process of ``rank`` (Linux /proc), None until it runs."""
    for task in Path(f"/proc/{launcher_pid}/task").iterdir():
        for child in (task / "children").read_text().split():
            try:
                env = Path(f"/proc/{child}/environ").read_bytes().split(b"\0")
            except OSError:
                continue
            if f"RANK={rank}".encode() in env:
                return int(child)
    return None


@pytest.mark.slow
def test_a_killed_worker_ends_the_job_with_128_plus_the_signal_and_a_message(tmp_path, tiny_model_dir):
    """SIGKILL of process 1 (the OOM killer, a node going away): the job says which process and which
    signal, and exits 137 like a killed process in a shell - not 2, the status of bad input."""
    cfg = write_config(tmp_path, tiny_model_dir, name="oom", n_train=20, lora=LORA,
                       train={**TRAIN, "max_steps": 400, "save_every": 2})
    run = tmp_path / "runs" / "oom"
    proc = subprocess.Popen(_cli("train", str(cfg), "--quiet", nproc=2), env=_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        wait_for_step(run / "events.jsonl", proc, 2)
        os.kill(_worker_pid(proc.pid, 1), signal.SIGKILL)
        t0 = time.monotonic()
        _, err = proc.communicate(timeout=240)
        print(f"the job ended {time.monotonic() - t0:.1f}s after its process 1 was killed")
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 137, err[-3000:]
    assert "error: process 1 of the job was killed by SIGKILL (signal 9); exit status 137" in err, err[-3000:]
    assert "neurosym resume" in err and latest_checkpoint(run) is not None


def test_the_jobs_exit_status_names_a_killed_process_and_keeps_the_main_verdict_otherwise():
    from types import SimpleNamespace as F

    from neurosym.runtime.launch import job_status

    killed = {0: F(exitcode=1, timestamp=10), 1: F(exitcode=-9, timestamp=10)}   # 0 lost 1, then exited 1
    status, message = job_status(killed, None, 1)
    assert status == 137 and "process 1 of the job was killed by SIGKILL (signal 9)" in message
    assert "out of memory" in message and "neurosym resume" in message
    # torchrun stops the others with SIGTERM once one failed: seen at the same time, the cause comes first
    assert job_status({0: F(exitcode=-15, timestamp=10), 1: F(exitcode=-9, timestamp=10)}, None, None)[0] == 137
    status, message = job_status({1: F(exitcode=-15, timestamp=3), 0: F(exitcode=-9, timestamp=5)}, None, None)
    assert status == 143 and "process 1 of the job was killed by SIGTERM" in message  # the first one killed
    assert job_status({1: F(exitcode=1, timestamp=3)}, None, 1) == (1, None)   # a crash: the main's 1, said by it
    assert job_status({1: F(exitcode=2, timestamp=3)}, None, 2) == (2, None)   # bad input met by the processes
    # bad input met by the main process while the other one aborts in gloo as its peer leaves (seen: 134)
    assert job_status({0: F(exitcode=2, timestamp=3), 1: F(exitcode=-6, timestamp=3)}, None, 2) == (2, None)
    assert job_status({0: F(exitcode=2, timestamp=3), 1: F(exitcode=-9, timestamp=3)}, None, 2) == (2, None)
    # an abort is a crash, not a kill: the main process's verdict, or the crash's own status without one
    assert job_status({0: F(exitcode=1, timestamp=3), 1: F(exitcode=-6, timestamp=3)}, None, 1) == (1, None)
    assert job_status({1: F(exitcode=-6, timestamp=3)}, None, None) == (134, None)
    # an abort on process 1, then torchrun's SIGTERM to process 0: the abort, not "killed by SIGTERM"
    assert job_status({1: F(exitcode=-6, timestamp=3), 0: F(exitcode=-15, timestamp=3)}, None, None) == (134, None)
    assert job_status({1: F(exitcode=-6, timestamp=3), 0: F(exitcode=-15, timestamp=4)}, None, None) == (134, None)
    assert job_status({0: F(exitcode=1, timestamp=3)}, None, None) == (1, None)
    assert job_status(None, signal.SIGTERM, 130) == (130, None)                  # stopped and saved
    assert job_status(None, signal.SIGTERM, None) == (143, None)
    assert job_status(None, None, None) == (0, None)


@pytest.mark.parametrize("error,status", [("CollectiveFailed", 1), ("DistributedError", 2)])
def test_a_failed_exchange_between_processes_is_no_input_error(tmp_path, tiny_model_dir, monkeypatch, capsys,
                                                                 error, status):
    """Another process died (or the main one was stuck): said as a message, exit 1; a setting that
    several processes cannot run (a batch too small to shard) stays bad input, exit 2."""
    import neurosym.runtime.accelerate as distributed
    import neurosym.train
    from neurosym.cli import main

    def train(*args, **kwargs):
        raise getattr(distributed, error)("process 0/2: a broadcast from the main process failed")

    monkeypatch.setattr(neurosym.train, "train", train)
    cfg = write_config(tmp_path, tiny_model_dir, name="x", train={"max_steps": 1})
    assert main(["train", str(cfg), "--quiet"]) == status
    assert "error: process 0/2: a broadcast from the main process failed" in capsys.readouterr().err


def test_the_engine_is_read_from_the_accelerate_environment_on_every_device():
    """An FSDP2 config means FSDP2 on CPU too (accelerate's own distributed type stays MULTI_CPU there);
    FSDP1 and DeepSpeed are refused with what to use instead."""
    from neurosym.runtime.accelerate import DistributedError, _engine

    assert _engine("MULTI_GPU", {}) == "ddp" and _engine("MULTI_CPU", {}) == "ddp"
    assert _engine("MULTI_CPU", {"ACCELERATE_USE_FSDP": "true", "FSDP_VERSION": "2"}) == "fsdp"
    assert _engine("FSDP", {"FSDP_VERSION": "2"}) == "fsdp"
    with pytest.raises(DistributedError, match=r"FSDP version 1; neurosym shards with FSDP2 .*fsdp_version: 2"):
        _engine("MULTI_CPU", {"ACCELERATE_USE_FSDP": "true"})
    with pytest.raises(DistributedError, match=r"DeepSpeed, which neurosym does not run.*--nproc N"):
        _engine("DEEPSPEED", {})


def test_the_launchers_copy_of_a_ctrl_c_is_not_a_second_one(capsys):
    """Under a launcher a Ctrl-C arrives twice (terminal, then torchrun): still a stop after the step,
    not an abort without a checkpoint. Alone, a second Ctrl-C aborts at once."""
    from neurosym.train import StopFlag

    handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        with StopFlag(launched=True, speaks=False) as stop:
            os.kill(os.getpid(), signal.SIGINT)
            os.kill(os.getpid(), signal.SIGINT)
        os.kill(os.getpid(), signal.SIGTERM)  # after the loop, while the process closes: still nothing
    finally:
        for sig, handler in handlers.items():  # (a launched process keeps them until it exits)
            signal.signal(sig, handler)
    assert stop.requested and "stopping after this step" not in capsys.readouterr().err
    with pytest.raises(KeyboardInterrupt):
        with StopFlag() as stop:
            os.kill(os.getpid(), signal.SIGINT)
            assert stop.requested
            os.kill(os.getpid(), signal.SIGINT)
    assert capsys.readouterr().err.count("stopping after this step") == 1

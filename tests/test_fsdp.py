"""FSDP2 on CPU with gloo (any GPU hidden), launched as users launch it: ``accelerate launch`` with an
accelerate FSDP config, and ``neurosym train --nproc 2`` with the same config as accelerate's
environment variables. The frozen base is sharded, the adapter trained whole on every process; the
evaluation's loss and generations run on every process. 2 processes take the 1-process steps; a run
killed under FSDP resumes under 1 process and under DDP to the uninterrupted run's adapter."""
import os
import subprocess
import sys
from pathlib import Path

import pytest
from safetensors.torch import load_file

from neurosym.observe.events import read_events
from neurosym.persist.checkpoint import complete_checkpoints, latest_checkpoint
from tests.support.hybrid import KEY_ENV, Teacher, hybrid_config
from tests.support.jobs import write_config
from tests.support.processes import kill_launcher_at

# global batch 8: micro-batches of 2, x2 per process under 2 processes, x4 under 1; LoRA dropout 0
# (dropout draws per-process random numbers: only a dropout-free step is the same step). Evaluations
# at steps 0, 3, 6 with a generation reward: every eval row is answered by one of the processes.
TRAIN = {"max_steps": 6, "batch_size": 2, "global_batch_size": 8, "eval_every": 3, "save_every": 2, "lr": 5e-3}
SECTIONS = dict(n_train=20, lora={"dropout": 0.0}, train=TRAIN, reward={"kind": "exact_match"})
ATOL = 1e-6  # measured: 9e-8 (fp32 sums in another order)
# accelerate's FSDP2 config, as `accelerate launch` exports it to its processes
FSDP_ENV = {"ACCELERATE_USE_FSDP": "true", "FSDP_VERSION": "2", "FSDP_AUTO_WRAP_POLICY": "TRANSFORMER_BASED_WRAP",
            "FSDP_TRANSFORMER_CLS_TO_WRAP": "LlamaDecoderLayer", "FSDP_RESHARD_AFTER_FORWARD": "true",
            "FSDP_STATE_DICT_TYPE": "FULL_STATE_DICT"}
ACCELERATE_CONFIG = """compute_environment: LOCAL_MACHINE
distributed_type: FSDP
fsdp_config:
  fsdp_version: 2
  fsdp_auto_wrap_policy: TRANSFORMER_BASED_WRAP
  fsdp_transformer_layer_cls_to_wrap: LlamaDecoderLayer
  fsdp_reshard_after_forward: true
  fsdp_state_dict_type: FULL_STATE_DICT
num_machines: 1
num_processes: 2
machine_rank: 0
mixed_precision: 'no'
use_cpu: true
"""


def _env(**extra):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FSDP_", "ACCELERATE_"))}
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONUNBUFFERED="1", CUDA_VISIBLE_DEVICES="", **extra)
    return env


def _cli(*args, nproc=1) -> list:
    return [sys.executable, "-m", "neurosym", *args] + (["--nproc", str(nproc)] if nproc > 1 else [])


def _check(proc: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    if proc.returncode != 0:
        tail = [line for line in proc.stderr.splitlines() if "DEBUG" not in line]
        raise AssertionError("\n".join(tail[-80:]))
    return proc


def _run(*args, nproc=1, env=None, timeout=400):
    return _check(subprocess.run(_cli(*args, nproc=nproc), env=env or _env(), capture_output=True, text=True,
                                 timeout=timeout))


def _adapter(run: Path) -> dict:
    return load_file(str(latest_checkpoint(run) / "adapter_model.safetensors"))


def _max_diff(a: dict, b: dict) -> float:
    assert a.keys() == b.keys()
    return max(float((a[k] - b[k]).abs().max()) for k in a)


def _events(run: Path, kind: str) -> list:
    return [e for e in read_events(run / "events.jsonl") if e["kind"] == kind]


@pytest.fixture(scope="module")
def reference(tmp_path_factory, tiny_model_dir):
    """One process, uninterrupted, on the same global batch."""
    tmp = tmp_path_factory.mktemp("ref")
    _run("train", str(write_config(tmp, tiny_model_dir, name="ref", **SECTIONS)), "--quiet")
    return tmp / "runs" / "ref"


@pytest.mark.slow
def test_accelerate_fsdp2_config_takes_the_one_process_steps(tmp_path, tiny_model_dir, reference):
    """`accelerate launch --config_file fsdp.yaml -m neurosym train`: the same adapter, losses, grad
    norms and evaluations (loss and exact-match reward over answers from both processes) as 1 process."""
    config = tmp_path / "accelerate-fsdp.yaml"
    config.write_text(ACCELERATE_CONFIG)
    cfg = write_config(tmp_path, tiny_model_dir, name="fsdp", **SECTIONS)
    proc = _check(subprocess.run([sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(config),
                                  "-m", "neurosym", "train", str(cfg), "--quiet"], env=_env(), capture_output=True,
                                 text=True, timeout=400))
    run = tmp_path / "runs" / "fsdp"
    diff = _max_diff(_adapter(run), _adapter(reference))
    print(f"FSDP2, 2 processes vs 1: max |adapter difference| = {diff:.3g}")
    assert diff <= ATOL
    assert "2 processes (FSDP2, gloo)" in proc.stderr
    for a, b in zip(_events(run, "train"), _events(reference, "train"), strict=True):
        assert a["loss"] == pytest.approx(b["loss"], abs=1e-6)
        assert a["grad_norm"] == pytest.approx(b["grad_norm"], rel=1e-5)
        assert a["tokens"] == b["tokens"]
    evals, ref_evals = _events(run, "eval"), _events(reference, "eval")
    assert [e["step"] for e in evals] == [0, 3, 6]
    for a, b in zip(evals, ref_evals, strict=True):
        assert a["eval_loss"] == pytest.approx(b["eval_loss"], abs=1e-6)
        assert a["eval_reward"] == b["eval_reward"]
    assert [c.name for c in complete_checkpoints(run)] == ["step-2", "step-4", "step-6"]


@pytest.mark.slow
@pytest.mark.parametrize("resume", ["one process", "ddp"])
def test_killed_under_fsdp_resumes_under_one_process_or_ddp(tmp_path, tiny_model_dir, reference, resume):
    """`neurosym train --nproc 2` under the FSDP2 config, SIGKILLed after step 3; the checkpoint (the
    adapter and its optimizer state, full tensors) resumes under 1 process, or under 2 with DDP, to the
    uninterrupted run's adapter."""
    cfg = write_config(tmp_path, tiny_model_dir, name="killed", **SECTIONS)
    run = tmp_path / "runs" / "killed"
    kill_launcher_at(_cli("train", str(cfg), "--quiet", nproc=2), run, 3, _env(**FSDP_ENV))
    assert latest_checkpoint(run) is not None and latest_checkpoint(run).name in {"step-2", "step-4"}
    _run("resume", str(run), "--quiet", nproc=1 if resume == "one process" else 2)
    diff = _max_diff(_adapter(run), _adapter(reference))
    print(f"killed under FSDP2, resumed under {resume}: max |adapter difference| vs uninterrupted = {diff:.3g}")
    assert diff <= ATOL
    assert [e["step"] for e in _events(run, "train")] == list(range(1, 7))


@pytest.mark.slow
def test_a_one_process_run_resumes_under_fsdp(tmp_path, tiny_model_dir, reference):
    cfg = write_config(tmp_path, tiny_model_dir, name="grow", **{**SECTIONS, "train": {**TRAIN, "max_steps": 4}})
    run = tmp_path / "runs" / "grow"
    _run("train", str(cfg), "--quiet")
    _run("resume", str(run), "--quiet", "--set", "train.max_steps=6", nproc=2, env=_env(**FSDP_ENV))
    assert _max_diff(_adapter(run), _adapter(reference)) <= ATOL


@pytest.fixture
def teacher(openai_server, monkeypatch):
    monkeypatch.setenv(KEY_ENV, openai_server.api_key)
    openai_server.set_responder(Teacher())
    return openai_server


@pytest.mark.slow
def test_hybrid_under_fsdp_asks_the_teacher_what_one_process_asks(tmp_path, tiny_model_dir, teacher):
    """Symbolic updates (the student answers the batch on both processes, the main process alone talks
    to the teacher), the remake store, evaluations with a generation reward: the FSDP2 run asks the
    teacher exactly what the 1-process run asks, takes the same routes and prompts, ends on the same adapter."""
    sections = dict(router={"kind": "alternate", "every": 2}, lora={"dropout": 0.0},
                    train={**TRAIN, "save_every": 3})
    runs = {}
    for nproc in (1, 2):
        cfg = hybrid_config(tmp_path / f"p{nproc}", tiny_model_dir, teacher, name="hybrid", **sections)
        teacher.reset()
        teacher.set_responder(Teacher())
        env = _env(**{KEY_ENV: teacher.api_key}, **(FSDP_ENV if nproc == 2 else {}))
        _run("train", str(cfg), "--quiet", nproc=nproc, env=env)
        run = tmp_path / f"p{nproc}" / "runs" / "hybrid"
        runs[nproc] = (run, [r["json"]["messages"] for r in teacher.chat_requests])
    (one, asked1), (two, asked2) = runs[1], runs[2]
    routes = [e["route"] for e in _events(two, "train")]
    assert "symbolic" in routes and "lora" in routes, routes
    assert asked2 == asked1 and asked1  # the same requests (student answers in them), from one process
    assert routes == [e["route"] for e in _events(one, "train")]
    prompts = lambda run: [(e["step"], e["text"]) for e in _events(run, "prompt")]  # noqa: E731
    assert len(prompts(two)) > 1 and prompts(two) == prompts(one)
    assert [e["eval_reward"] for e in _events(two, "eval")] == [e["eval_reward"] for e in _events(one, "eval")]
    diff = _max_diff(_adapter(two), _adapter(one))
    print(f"hybrid, FSDP2 2 processes vs 1: {len(asked2)} teacher calls each, max |adapter difference| {diff:.3g}")
    assert diff <= ATOL


@pytest.mark.slow
def test_qlora_under_fsdp_is_refused_on_cpu_with_the_reason(tmp_path, tiny_model_dir):
    """QLoRA needs bitsandbytes' CUDA kernels: refused on CPU before the model loads (exit 2)."""
    cfg = write_config(tmp_path, tiny_model_dir, name="q", model={"quantization": "4bit"})
    proc = subprocess.run(_cli("train", str(cfg), "--quiet", nproc=2), env=_env(**FSDP_ENV), capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "4bit (QLoRA) needs a CUDA GPU" in proc.stderr
    assert not list((tmp_path / "runs").glob("q/checkpoints/*"))

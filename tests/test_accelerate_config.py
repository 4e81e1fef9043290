"""``--accelerate-config FILE``: an accelerate config file under ``--nproc``, turned into its processes'
variables by accelerate's own launcher code; and Ctrl-C under FSDP2 (stop, save once, exit 130, resume)."""
from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest

from neurosym.errors import UserError
from neurosym.observe.events import read_events
from neurosym.persist.checkpoint import latest_checkpoint
from neurosym.runtime.launch import accelerate_config_env
from tests.support.jobs import write_config
from tests.support.processes import wait_for_step

FSDP2 = """compute_environment: LOCAL_MACHINE
distributed_type: FSDP
fsdp_config:
  fsdp_version: {version}
  fsdp_auto_wrap_policy: TRANSFORMER_BASED_WRAP
  fsdp_transformer_layer_cls_to_wrap: LlamaDecoderLayer
  fsdp_reshard_after_forward: true
  fsdp_state_dict_type: FULL_STATE_DICT
num_machines: {machines}
num_processes: 2
machine_rank: 0
mixed_precision: 'no'
use_cpu: true
"""
DEEPSPEED = """compute_environment: LOCAL_MACHINE
distributed_type: DEEPSPEED
deepspeed_config:
  zero_stage: 2
  offload_optimizer_device: none
  offload_param_device: none
num_machines: 1
num_processes: 2
mixed_precision: 'no'
"""


def _file(tmp_path, text, **fields):
    path = tmp_path / "accelerate.yaml"
    path.write_text(text.format(**{"version": 2, "machines": 1, **fields}))
    return path


def test_an_fsdp2_file_gives_the_variables_accelerate_launch_gives(tmp_path):
    before = dict(os.environ)
    nproc, env = accelerate_config_env(str(_file(tmp_path, FSDP2)), None)
    assert nproc == 2  # the file's num_processes
    assert env["ACCELERATE_USE_FSDP"] == "true" and env["FSDP_VERSION"] == "2"
    assert env["FSDP_AUTO_WRAP_POLICY"] == "TRANSFORMER_BASED_WRAP"
    assert env["FSDP_TRANSFORMER_CLS_TO_WRAP"] == "LlamaDecoderLayer"
    assert env["FSDP_STATE_DICT_TYPE"] == "FULL_STATE_DICT"
    assert all(k.startswith(("ACCELERATE_", "FSDP_")) for k in env)
    assert dict(os.environ) == before  # our own environment is never written
    assert accelerate_config_env(str(_file(tmp_path, FSDP2)), 4)[0] == 4  # --nproc wins over the file


@pytest.mark.parametrize("text, fields, says", [
    (FSDP2, {"version": 1}, "fsdp_version: 2"),
    (FSDP2, {"machines": 2}, "on each node"),
    (DEEPSPEED, {}, "asks for DeepSpeed"),
])
def test_what_the_launcher_cannot_run_is_refused_before_a_process_starts(tmp_path, text, fields, says):
    with pytest.raises(UserError, match=says):
        accelerate_config_env(str(_file(tmp_path, text, **fields)), None)


def test_a_missing_file_says_how_to_write_one(tmp_path):
    with pytest.raises(UserError, match=r"no such file.*accelerate config --config_file"):
        accelerate_config_env(str(tmp_path / "nope.yaml"), 2)


def _env():
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FSDP_", "ACCELERATE_"))}
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONUNBUFFERED="1", CUDA_VISIBLE_DEVICES="")
    return env


@pytest.mark.slow
def test_ctrl_c_under_fsdp2_saves_once_exits_130_and_resumes_under_one_process(tmp_path, tiny_model_dir):
    """`neurosym train CONFIG --accelerate-config fsdp2.yaml` (2 processes, FSDP2): Ctrl-C reaches every
    process; they stop after the same step, the main one gathers the sharded adapter and saves once,
    the launcher exits 130; one process resumes the checkpoint to the last step."""
    steps = 16
    cfg = write_config(tmp_path, tiny_model_dir, name="stop", n_train=20, lora={"dropout": 0.0},
                       train={"max_steps": steps, "batch_size": 2, "global_batch_size": 8, "eval_every": 0,
                              "save_every": 0, "lr": 5e-3})
    run = tmp_path / "runs" / "stop"
    cmd = [sys.executable, "-m", "neurosym", "train", str(cfg), "--quiet", "--accelerate-config",
           str(_file(tmp_path, FSDP2))]
    proc = subprocess.Popen(cmd, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        wait_for_step(run / "events.jsonl", proc, 2)
        os.killpg(proc.pid, signal.SIGINT)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    train = [e for e in read_events(run / "events.jsonl") if e["kind"] == "train"]
    stopped = train[-1]["step"]
    assert "2 processes (FSDP2, gloo)" in err, err[-3000:]
    assert proc.returncode == 130, err[-3000:]
    assert stopped < steps and latest_checkpoint(run).name == f"step-{stopped}", err[-3000:]
    assert err.count("checkpoint saved. Continue with") == 1 and "Traceback" not in err, err[-3000:]
    done = subprocess.run([sys.executable, "-m", "neurosym", "resume", str(run), "--quiet"], env=_env(),
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert [e["step"] for e in read_events(run / "events.jsonl") if e["kind"] == "train"] == list(range(1, steps + 1))

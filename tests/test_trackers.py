"""tracking.backends: TensorBoard and MLflow behind the same recorder as W&B, each read back offline
from what it wrote; disabled imports none of them; a missing package fails before the model loads."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from neurosym.cli import main
from neurosym.config.schema import load_config
from neurosym.observe.events import read_events
from neurosym.train import train
from tests.support.jobs import write_config

SECRET = "s3cr3t-pass-word"


def _losses(run: Path) -> dict:
    return {e["step"]: e["loss"] for e in read_events(run / "events.jsonl") if e["kind"] == "train"}


def _tensorboard(run: Path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    acc = EventAccumulator(str(run / "tensorboard"), size_guidance={"scalars": 0, "tensors": 0})
    acc.Reload()
    return acc


@pytest.mark.slow
def test_tensorboard_and_mlflow_are_written_and_read_back(tmp_path, tiny_model_dir):
    pytest.importorskip("tensorboard")
    pytest.importorskip("mlflow")
    pytest.importorskip("sqlalchemy")
    tracking = {"mode": "offline", "backends": ["tensorboard", "mlflow"], "project": "p"}
    teacher = {"base_url": f"https://user:{SECRET}@teacher.example/v1"}
    cfg = load_config(write_config(tmp_path, tiny_model_dir, tracking=tracking, teacher=teacher,
                                   train={"max_steps": 4, "save_every": 2, "eval_every": 2}))
    run = train(cfg, quiet=True).run_dir
    assert not (run / "wandb").exists() and not (run / "wandb_run_id").exists()  # wandb not among the backends

    # TensorBoard: the event files hold every step's loss and each eval
    acc = _tensorboard(run)
    tb = {e.step: e.value for e in acc.Scalars("train/loss")}
    assert tb == pytest.approx(_losses(run), rel=1e-6) and sorted(tb) == [1, 2, 3, 4]
    assert [e.step for e in acc.Scalars("eval/loss")] == [0, 2, 4]
    assert {"train/lr", "train/grad_norm", "prompt/version"} <= set(acc.Tags()["scalars"])
    texts = {tag: [t.tensor_proto.string_val[0].decode() for t in acc.Tensors(tag)] for tag in acc.Tags()["tensors"]}
    assert "max_steps: 4" in texts["config/text_summary"][0] and SECRET not in json.dumps(texts)
    assert "eval/samples/text_summary" in texts

    # MLflow: the run in the SQLite store under the run directory
    from mlflow.tracking import MlflowClient
    client = MlflowClient(tracking_uri=f"sqlite:///{run / 'mlflow.db'}")
    run_id = (run / "mlflow_run_id").read_text().strip()
    got = client.get_run(run_id)
    assert got.info.status == "FINISHED" and got.info.run_name == "job"
    assert client.get_experiment(got.info.experiment_id).name == "p"
    history = {m.step: m.value for m in client.get_metric_history(run_id, "train/loss")}
    assert history == pytest.approx(_losses(run), rel=1e-6)
    assert [m.step for m in client.get_metric_history(run_id, "eval/loss")] == [0, 2, 4]
    params = got.data.params
    assert params["train.max_steps"] == "4" and params["model.name_or_path"] == str(tiny_model_dir)
    assert SECRET not in json.dumps(params) and "***@teacher.example" in params["teacher.base_url"]
    tables = [a.path for a in client.list_artifacts(run_id, "tables")]
    assert "tables/eval-samples-step0.json" in tables
    assert [a.path for a in client.list_artifacts(run_id, "lora-adapter/job-adapter")]  # the adapter artifact
    assert str(run / "mlartifacts") in got.info.artifact_uri

    # a resume continues the same MLflow run, and TensorBoard the same steps
    cfg2 = load_config(write_config(tmp_path, tiny_model_dir, tracking=tracking, teacher=teacher,
                                    train={"max_steps": 6, "save_every": 2, "eval_every": 2}))
    train(cfg2, resume=True, quiet=True)
    assert (run / "mlflow_run_id").read_text().strip() == run_id
    history = {m.step: m.value for m in client.get_metric_history(run_id, "train/loss")}
    assert sorted(history) == [1, 2, 3, 4, 5, 6] and history == pytest.approx(_losses(run), rel=1e-6)
    assert sorted({e.step for e in _tensorboard(run).Scalars("train/loss")}) == [1, 2, 3, 4, 5, 6]


def test_a_backend_whose_package_is_missing_fails_before_the_model_loads(tmp_path, monkeypatch, capsys):
    import importlib.util
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "mlflow" else real(name, *a))
    # a model that is not there: loading it would be another error
    cfg = write_config(tmp_path, "org/not-here", tracking={"mode": "offline", "backends": ["wandb", "mlflow"]})
    assert main(["train", str(cfg), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "pip install 'neurosym[mlflow]'" in err and "tracking.backends" in err and "not-here" not in err
    assert main(["validate", str(cfg), "--offline"]) == 2  # validate says the same
    assert "pip install 'neurosym[mlflow]'" in capsys.readouterr().err
    # disabled: no package is needed
    assert main(["validate", str(cfg), "--offline", "--set", "tracking.mode=disabled"]) == 0


def test_disabled_tracking_imports_no_tracker(tmp_path):
    cfg = write_config(tmp_path, "org/m", tracking={"mode": "disabled", "backends": ["wandb", "tensorboard", "mlflow"]})
    code = ("import sys; from neurosym.config.schema import load_config; from neurosym.observe.tracking import Tracker, check_tracking;"
            f"cfg = load_config({str(cfg)!r}); check_tracking(cfg); t = Tracker(cfg, {str(tmp_path)!r});"
            "t.log({'a': 1.0}, 1); t.finish();"
            "print([m for m in ('wandb', 'tensorboard', 'mlflow', 'torch.utils.tensorboard') if m in sys.modules])")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).resolve().parents[1]),
                                                         os.environ.get("PYTHONPATH", "")])}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "[]"


def test_wandb_stays_the_default_backend(tmp_path):
    cfg = load_config(write_config(tmp_path, "org/m", tracking={"mode": "offline"}))
    assert cfg.tracking.backends == ["wandb"]
    with pytest.raises(Exception, match="tracking.backends"):
        load_config(write_config(tmp_path, "org/m", tracking={"backends": ["neptune"]}))

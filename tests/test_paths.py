"""One rule for every path in a config: relative to the config file's folder; a local folder wins over a
hub id; when neither is found, the error names the local path that was tried."""
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from neurosym.cli import main
from neurosym.config.schema import load_config
from tests.support.jobs import write_config


def _job_in(folder: Path, tiny_model_dir: Path, model: str = "models/tiny", **sections) -> Path:
    """A job folder with its model and data inside, every path in the config relative to it."""
    shutil.copytree(tiny_model_dir, folder / "models" / "tiny")
    cfg_path = write_config(folder, model, **sections)
    cfg = yaml.safe_load(cfg_path.read_text())
    cfg["data"]["train"], cfg["data"]["eval"] = "data/train.jsonl", "data/eval.jsonl"
    cfg_path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return cfg_path


def _cli(args, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).resolve().parents[1]),
                                                         os.environ.get("PYTHONPATH", "")])}
    return subprocess.run([sys.executable, "-m", "neurosym", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=600)


@pytest.mark.slow
def test_a_job_started_from_another_folder_finds_the_same_model_and_data(tmp_path, tiny_model_dir):
    job = _job_in(tmp_path / "job", tiny_model_dir, train={"max_steps": 1, "save_every": 1, "eval_every": 0})
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    rel = os.path.relpath(job, elsewhere)  # ../job/job.yaml
    checked = _cli(["validate", rel, "--offline"], cwd=elsewhere)
    assert checked.returncode == 0, checked.stderr
    assert f"model      {tmp_path / 'job' / 'models' / 'tiny'} " in checked.stdout
    trained = _cli(["train", rel, "--quiet"], cwd=elsewhere)
    assert trained.returncode == 0, trained.stderr
    run = tmp_path / "job" / "runs" / "job"
    saved = yaml.safe_load((run / "config.yaml").read_text())
    assert saved["model"]["name_or_path"] == str(tmp_path / "job" / "models" / "tiny")  # stored absolute
    # and the run's verbs work from a third folder
    third = tmp_path / "third"
    third.mkdir()
    evaluated = _cli(["eval", str(run)], cwd=third)
    assert evaluated.returncode == 0, evaluated.stderr


def test_a_local_folder_wins_over_a_hub_id_of_the_same_name(tmp_path, tiny_model_dir, monkeypatch):
    shutil.copytree(tiny_model_dir, tmp_path / "org" / "name")
    cfg = load_config(write_config(tmp_path, "org/name"))
    assert cfg.model.name_or_path == str(tmp_path / "org" / "name") and cfg.model.local_tried() is None
    monkeypatch.chdir(tmp_path / "org")  # the cwd plays no part
    assert load_config(tmp_path / "job.yaml").model.name_or_path == str(tmp_path / "org" / "name")


def test_a_hub_id_that_is_not_local_names_the_path_tried_when_the_hub_is_unreachable(tmp_path, capsys):
    cfg_path = write_config(tmp_path, "someorg/not-here")
    cfg = load_config(cfg_path)
    assert cfg.model.name_or_path == "someorg/not-here"
    assert cfg.model.local_tried() == str(tmp_path / "someorg" / "not-here")
    assert main(["validate", str(cfg_path), "--offline"]) == 0
    assert f"hub id: no local folder {tmp_path / 'someorg' / 'not-here'}" in capsys.readouterr().out
    from neurosym.model.load import ModelError, load_tokenizer
    with pytest.raises(ModelError) as err:  # HF_HUB_OFFLINE=1 in the tests: the hub cannot be reached
        load_tokenizer(cfg.model, tmp_path / ".models")
    assert f"No local folder {tmp_path / 'someorg' / 'not-here'}" in str(err.value)


@pytest.mark.parametrize("given", ["./models/missing", "../elsewhere/model", "models/x/y"])
def test_a_missing_local_path_is_refused_alike_by_validate_and_train(tmp_path, given, capsys):
    job = tmp_path / "job"
    job.mkdir()
    cfg_path = write_config(job, given)
    tried = str((job / given).resolve())
    assert main(["validate", str(cfg_path), "--offline"]) == 2
    err = capsys.readouterr().err
    assert f"no local folder {tried}" in err and "relative to the config file" in err
    assert main(["train", str(cfg_path), "--quiet"]) == 2
    assert f"no local folder {tried}" in capsys.readouterr().err

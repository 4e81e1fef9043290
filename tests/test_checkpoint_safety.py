"""Checkpoints under stress: a save the disk refuses (a message, not a traceback; nothing lost), an
early-stopped run that stays stopped, a last step written once, and the folders of a save killed
mid-way tidied (or put back)."""
from __future__ import annotations

import errno
import json
import shutil
from pathlib import Path

import pytest
from safetensors import SafetensorError
from safetensors.torch import load_file

from neurosym.persist.checkpoint import complete_checkpoints, latest_checkpoint
from neurosym.cli import main
from neurosym.config.schema import load_config
from neurosym.observe.events import read_events
from neurosym.persist.state import TrainState
from neurosym.train import train
from tests.support.jobs import write_config


def _steps(run: Path) -> list:
    return [e["step"] for e in read_events(run / "events.jsonl") if e["kind"] == "train"]


def _losses(run: Path) -> list:
    return [e["loss"] for e in read_events(run / "events.jsonl") if e["kind"] == "train"]


def _names(run: Path) -> list:
    return [c.name for c in complete_checkpoints(run)]


# ---------------------------------------------------------------------------------- disk full

ENOSPC_SAFETENSORS = ('Error while serializing: IoError(Os { code: 28, kind: StorageFull, message: '
                      '"No space left on device" })')


def _fail_at_step_4(monkeypatch, how: str):
    """The disk fills up during the save of step 4: the optimizer's safetensors file (safetensors
    raises its own error type) or state.json (a plain OSError)."""
    import neurosym.persist.serialization as serialization
    import neurosym.persist.state as state_mod
    if how == "safetensors":
        real = serialization.save_file

        def save_file(tensors, filename, *a, **kw):
            if ".tmp-step-4-" in str(filename):
                Path(filename).write_bytes(b"partial")  # what a full disk leaves: a piece of the file
                raise SafetensorError(ENOSPC_SAFETENSORS)
            return real(tensors, filename, *a, **kw)
        monkeypatch.setattr(serialization, "save_file", save_file)
    else:
        real = state_mod.atomic_write_json

        def atomic_write_json(path, obj):
            if ".tmp-step-4-" in str(path):
                raise OSError(errno.ENOSPC, "No space left on device", str(path))
            return real(path, obj)
        monkeypatch.setattr(state_mod, "atomic_write_json", atomic_write_json)


@pytest.mark.parametrize("how", ["safetensors", "oserror"])
def test_a_full_disk_during_a_save_says_what_and_how_to_resume(tmp_path, tiny_model_dir, monkeypatch, capsys, how):
    train_keys = {"max_steps": 6, "save_every": 2, "eval_every": 0}
    ref = write_config(tmp_path / "ref", tiny_model_dir, name="ref", train=train_keys)
    assert main(["train", str(ref), "--quiet"]) == 0
    capsys.readouterr()

    cfg = write_config(tmp_path, tiny_model_dir, train=train_keys)
    run = tmp_path / "runs" / "job"
    with monkeypatch.context() as m:
        _fail_at_step_4(m, how)
        assert main(["train", str(cfg), "--quiet"]) == 2  # the status of the other stops (divergence)
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert ("SafetensorError" if how == "safetensors" else "OSError: [Errno 28]") in err
    assert "could not save the checkpoint of step 4" in err
    assert "no space left on the device" in err
    assert f"the last good checkpoint is {run / 'checkpoints' / 'step-2'} (step 2)" in err
    assert f"neurosym resume {run}" in err
    assert _names(run) == ["step-2"]
    assert [p.name for p in (run / "checkpoints").iterdir()] == ["step-2"], "the partial folder is removed"

    # space freed: the resume continues from step 2 and ends where the uninterrupted run ends
    assert main(["resume", str(run), "--quiet"]) == 0
    assert _steps(run) == [1, 2, 3, 4, 5, 6]
    assert _losses(run) == pytest.approx(_losses(tmp_path / "ref" / "runs" / "ref"), abs=1e-6)
    mine = load_file(str(latest_checkpoint(run) / "adapter_model.safetensors"))
    theirs = load_file(str(latest_checkpoint(tmp_path / "ref" / "runs" / "ref") / "adapter_model.safetensors"))
    assert max(float((mine[k] - theirs[k]).abs().max()) for k in mine) <= 1e-6


def test_a_save_that_fails_before_any_checkpoint_says_resume_starts_at_0(tmp_path, tiny_model_dir, monkeypatch,
                                                                          capsys):
    import neurosym.persist.state as state_mod

    def full(path, obj):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))
    monkeypatch.setattr(state_mod, "atomic_write_json", full)
    cfg = write_config(tmp_path, tiny_model_dir, train={"max_steps": 2, "save_every": 2, "eval_every": 0})
    assert main(["train", str(cfg), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "step 2" in err and "there is no checkpoint yet, so a resume starts from step 0" in err
    assert list((tmp_path / "runs" / "job" / "checkpoints").iterdir()) == []


def test_a_program_error_during_a_save_is_not_dressed_as_a_disk_error(tmp_path, tiny_model_dir, monkeypatch):
    import neurosym.persist.state as state_mod

    def bug(path, obj):
        raise TypeError("not JSON serialisable")
    monkeypatch.setattr(state_mod, "atomic_write_json", bug)
    cfg = load_config(write_config(tmp_path, tiny_model_dir, train={"max_steps": 2, "save_every": 2, "eval_every": 0}))
    with pytest.raises(TypeError, match="not JSON serialisable"):
        train(cfg, quiet=True)
    assert list((tmp_path / "runs" / "job" / "checkpoints").iterdir()) == []  # its partial folder is gone too


# ---------------------------------------------------------------------------------- early stopping

EARLY = {"max_steps": 10, "save_every": 2, "eval_every": 2, "keep_last_n": 2,
         "early_stopping_patience": 1, "early_stopping_min_delta": 100.0}  # no eval improves by 100: stop at 2


@pytest.fixture(scope="module")
def stopped(tmp_path_factory, tiny_model_dir):
    tmp = tmp_path_factory.mktemp("early")
    cfg = load_config(write_config(tmp, tiny_model_dir, name="early", train=EARLY))
    out = train(cfg, quiet=True)
    assert out.state.step == 2 and out.stop_reason.startswith("early stopping")
    return out.run_dir


def test_the_early_stop_is_saved_in_the_checkpoint(stopped):
    saved = json.loads((stopped / "checkpoints" / "step-2" / "state.json").read_text())
    assert saved["stop_reason"].startswith("early stopping: eval_loss has not improved")


def test_an_early_stopped_run_stays_stopped(tmp_path, stopped, capsys):
    run = shutil.copytree(stopped, tmp_path / "run")
    events = (run / "events.jsonl").read_text()
    ckpt = (run / "checkpoints" / "step-2" / "adapter_model.safetensors").read_bytes()
    for extra in ([], ["--set", "train.max_steps=12"]):  # more steps do not lift the stop
        assert main(["resume", str(run), "--quiet", *extra]) == 0
        err = capsys.readouterr().err
        assert "run stopped early at step 2 (early stopping: eval_loss has not improved" in err
        assert "nothing to do" in err and "--set train.early_stopping_patience" in err
        assert (run / "events.jsonl").read_text() == events
        assert _names(run) == ["step-2"]  # keep_last_n: 2 deletes nothing: nothing follows
        assert (run / "checkpoints" / "step-2" / "adapter_model.safetensors").read_bytes() == ckpt


def test_changing_the_early_stopping_rule_on_resume_lifts_the_stop(tmp_path, stopped, capsys):
    run = shutil.copytree(stopped, tmp_path / "run")
    assert main(["resume", str(run), "--quiet", "--set", "train.early_stopping_patience=0"]) == 0
    assert "the early stop at step 2" in capsys.readouterr().err
    assert _steps(run) == list(range(1, 11))
    assert json.loads((latest_checkpoint(run) / "state.json").read_text())["stop_reason"] is None


def test_a_state_json_of_before_the_stop_was_saved_still_loads(tmp_path, stopped):
    data = json.loads((stopped / "checkpoints" / "step-2" / "state.json").read_text())
    del data["stop_reason"]
    (tmp_path / "state.json").write_text(json.dumps(data))
    state = TrainState.load(tmp_path / "state.json")
    assert state.step == 2 and state.stop_reason is None and state.early_stop_on_resume() is None


# ---------------------------------------------------------------------------------- the last step, once

def test_the_last_checkpoint_is_written_once(tmp_path, tiny_model_dir, monkeypatch):
    import neurosym.persist.serialization as serialization  # what the checkpoint writes its trees with
    written = []
    real = serialization.save_tree

    def save_tree(obj, stem):
        if stem.name == "optimizer":
            written.append(stem.parent.name.split("-")[2])  # .tmp-step-N-pid -> N
        return real(obj, stem)
    monkeypatch.setattr(serialization, "save_tree", save_tree)
    cfg = load_config(write_config(tmp_path, tiny_model_dir, train={"max_steps": 4, "save_every": 2, "eval_every": 2}))
    assert train(cfg, quiet=True).state.step == 4
    assert written == ["2", "4"]
    assert _names(tmp_path / "runs" / "job") == ["step-2", "step-4"]


def test_a_resave_of_the_same_step_that_changed_is_written(tmp_path, tiny_model_dir):
    """The no-op is for an unchanged state only: a save of step N after something changed replaces it."""
    from neurosym.run.run import Run
    from neurosym.persist.rundir import RunDir
    cfg = load_config(write_config(tmp_path, tiny_model_dir, train={"max_steps": 2, "eval_every": 0}))
    with RunDir(cfg.run_dir) as rd:
        run = Run(cfg, rd, quiet=True)
        try:
            run.start_fresh()
            first = run.save()
            before = (first / "state.json").read_text()
            assert run.save() == first and (first / "state.json").read_text() == before  # unchanged: kept
            run.state.tokens += 7  # something changed at the same step
            assert run.save() == first
            assert json.loads((first / "state.json").read_text())["tokens"] == run.state.tokens
            assert [p.name for p in (rd.path / "checkpoints").iterdir()] == ["step-0"]  # no .old-step left
        finally:
            run.close()


# ---------------------------------------------------------------------------------- a save killed mid-way

def test_leftovers_of_a_killed_save_are_removed(tmp_path, tiny_model_dir):
    """Killed after the swap of a re-save (``.old-step-N`` beside the new ``step-N``) or while writing
    (``.tmp-step-N``): the next run in the directory removes them; a folder of the user's is kept."""
    cfg = load_config(write_config(tmp_path, tiny_model_dir, train={"max_steps": 4, "save_every": 2, "eval_every": 0}))
    run = train(cfg, quiet=True).run_dir
    root = run / "checkpoints"
    shutil.copytree(root / "step-4", root / ".old-step-4-999999")
    shutil.copytree(root / "step-4", root / ".tmp-step-6-999999")
    (root / "mine").mkdir()
    assert main(["resume", str(run), "--quiet", "--set", "train.max_steps=6"]) == 0
    assert sorted(p.name for p in root.iterdir()) == ["mine", "step-2", "step-4", "step-6"]


def test_a_save_killed_between_its_renames_loses_no_checkpoint(tmp_path, tiny_model_dir, capsys):
    """Killed between ``step-N -> .old-step-N`` and ``.tmp-step-N -> step-N``: step N is in the
    ``.old`` folder, and the resume takes it from there (with keep_last_n: 1 it is the only one)."""
    cfg = load_config(write_config(tmp_path, tiny_model_dir, train={"max_steps": 4, "save_every": 2,
                                                                   "eval_every": 0, "keep_last_n": 1}))
    run = train(cfg, quiet=True).run_dir
    root = run / "checkpoints"
    assert _names(run) == ["step-4"]
    shutil.copytree(root / "step-4", root / ".tmp-step-4-999999")
    (root / ".tmp-step-4-999999" / "COMPLETE").unlink()
    (root / "step-4").rename(root / ".old-step-4-999999")
    events = (run / "events.jsonl").read_text()
    assert main(["resume", str(run), "--quiet"]) == 0
    err = capsys.readouterr().err
    assert "restored" in err and "nothing to do" in err
    assert (run / "events.jsonl").read_text() == events  # not trained again from step 0
    assert sorted(p.name for p in root.iterdir()) == ["step-4"]

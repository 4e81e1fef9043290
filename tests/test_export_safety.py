"""Every verb that writes (`export`, `report --out`) keeps what the user has: an existing target is
refused unless --overwrite, nothing is ever written in or over a run directory or the data it reads,
and a write that fails leaves the old target as it was. Synthetic run directories (no model)."""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest

from neurosym.cli import main
from neurosym.persist.safe_output import OLD_TAG, TMP_TAG, OutputError, OutputTarget
from tests.test_inspect import full_events, make_run, populate_store, write_checkpoint, write_events


def tree(path: Path) -> dict:
    """Every file under ``path`` (or the file itself) with its content hash: to prove nothing changed."""
    if path.is_file():
        return {path.name: hashlib.sha256(path.read_bytes()).hexdigest()}
    return {str(p.relative_to(path)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(path.rglob("*")) if p.is_file()}


def leftovers(folder: Path) -> list[str]:
    return [p.name for p in folder.iterdir() if TMP_TAG in p.name or OLD_TAG in p.name]


@pytest.fixture
def run(tmp_path):
    """A run directory with config, events, checkpoints and a remake store of 3 refined examples."""
    run_dir, cfg = make_run(tmp_path)
    write_events(run_dir, full_events())
    write_checkpoint(run_dir, 10, [0])
    write_checkpoint(run_dir, 30, [0, 1, 2])
    populate_store(run_dir, cfg)
    return run_dir


def export(run_dir, out, *extra) -> int:
    return main(["export", str(run_dir), "--out", str(out), *extra])


# ---------------------------------------------------------------------------------------- the reported defects

def test_export_hf_never_empties_the_folder_it_is_given(run, tmp_path, capsys):
    """Was: `export --format hf --out DIR` ran shutil.rmtree(DIR) first."""
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("my notes")
    before = tree(mine)
    assert export(run, mine, "--format", "hf") == 2
    assert "already exists and is not empty; pass --overwrite" in capsys.readouterr().err
    assert tree(mine) == before and leftovers(tmp_path) == []


@pytest.mark.parametrize("fmt", ["hf", "jsonl"])
def test_export_into_the_current_folder_holding_the_run_is_refused(run, tmp_path, capsys, monkeypatch, fmt):
    """Was: `--out .` with --format hf emptied the current folder, runs included."""
    monkeypatch.chdir(tmp_path)
    before = tree(tmp_path)
    for extra in ([], ["--overwrite"]):
        assert export(run, ".", "--format", fmt, *extra) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: --out .: ") and "Traceback" not in err
    assert tree(tmp_path) == before


@pytest.mark.parametrize("name", ["", "events.jsonl", "remake.sqlite", "config.yaml", "checkpoints",
                                  "checkpoints/step-30/state.json", "new-file.jsonl"])
def test_export_never_writes_in_or_over_the_run(run, capsys, name):
    """Was: `--out RUN` deleted the checkpoints; `--out RUN/events.jsonl` replaced the run's events."""
    before = tree(run)
    for fmt in ("jsonl", "hf"):
        assert export(run, run / name if name else run, "--format", fmt, "--overwrite") == 2
        err = capsys.readouterr().err
        assert "which this command reads from" in err or "run directory" in err, err
    assert tree(run) == before


def test_export_refuses_another_run_and_the_folder_above_runs(run, tmp_path, capsys):
    other, _ = make_run(tmp_path / "elsewhere", name="other")
    write_events(other, full_events())
    before = tree(tmp_path)
    assert export(run, other / "refined.jsonl", "--overwrite") == 2
    assert f"is inside the run directory {other.resolve()}" in capsys.readouterr().err
    assert export(run, run.parent, "--format", "hf", "--overwrite") == 2  # runs/ holds the run
    assert "contains" in capsys.readouterr().err
    holder = tmp_path / "holder"  # a folder holding a (different) run deeper down: --overwrite won't delete it
    (holder / "sub").mkdir(parents=True)
    (other.parent / "other").rename(holder / "sub" / "other")
    before = tree(tmp_path)
    assert export(run, holder, "--format", "hf", "--overwrite") == 2
    assert "holds the run directory" in capsys.readouterr().err
    assert tree(tmp_path) == before


def test_export_refuses_to_write_over_the_training_data(run, tmp_path, capsys):
    train = tmp_path / "data" / "train.jsonl"
    before = tree(train)
    assert export(run, train, "--only", "all", "--overwrite") == 2
    assert "which this command reads from" in capsys.readouterr().err
    assert export(run, train.parent, "--format", "hf", "--overwrite") == 2  # the folder holding it
    assert tree(train) == before


def test_export_file_needs_overwrite_and_replaces_atomically(run, tmp_path, capsys):
    out = tmp_path / "refined.jsonl"
    out.write_text('{"mine": 1}\n')
    assert export(run, out) == 2
    assert "pass --overwrite" in capsys.readouterr().err and out.read_text() == '{"mine": 1}\n'
    assert export(run, out, "--overwrite") == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["source"] for r in rows] == ["remake:1", "remake:2", "remake:3"]
    assert leftovers(tmp_path) == []
    empty = tmp_path / "empty.jsonl"  # an empty file is not data: taken without --overwrite
    empty.touch()
    assert export(run, empty) == 0 and len(empty.read_text().splitlines()) == 3


def test_export_hf_overwrite_replaces_only_when_complete(run, tmp_path, capsys, monkeypatch):
    out = tmp_path / "refined_hf"
    assert export(run, out, "--format", "hf") == 0
    first = tree(out)
    # a second export that fails half-way (disk full while saving) leaves the first one untouched
    import datasets

    def broken_save(self, path, *a, **k):
        Path(path, "data-00000-of-00001.arrow").write_bytes(b"partial")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(datasets.Dataset, "save_to_disk", broken_save)
    with pytest.raises(OSError):
        export(run, out, "--format", "hf", "--overwrite")
    assert tree(out) == first and leftovers(tmp_path) == []
    monkeypatch.undo()
    (out / "extra-from-before.txt").write_text("old")
    assert export(run, out, "--format", "hf", "--overwrite") == 0
    assert not (out / "extra-from-before.txt").exists()  # the old target was replaced as a whole
    assert len(datasets.load_from_disk(str(out))) == 3 and leftovers(tmp_path) == []
    empty = tmp_path / "empty_dir"  # an empty folder is taken without --overwrite
    empty.mkdir()
    assert export(run, empty, "--format", "hf") == 0 and len(datasets.load_from_disk(str(empty))) == 3


def test_export_file_onto_a_folder_and_folder_onto_a_file_are_refused(run, tmp_path, capsys):
    folder, file = tmp_path / "somefolder", tmp_path / "somefile"
    folder.mkdir()
    (folder / "x").write_text("x")
    file.write_text("y")
    assert export(run, folder, "--overwrite") == 2
    assert "is a folder; name a file" in capsys.readouterr().err
    assert export(run, file, "--format", "hf", "--overwrite") == 2
    assert "is a file; this format writes a folder" in capsys.readouterr().err
    assert file.read_text() == "y" and (folder / "x").read_text() == "x"


def test_export_through_a_symlink_into_the_run_is_refused(run, tmp_path, capsys):
    link = tmp_path / "link.jsonl"
    link.symlink_to(run / "events.jsonl")
    before = tree(run)
    assert export(run, link, "--overwrite") == 2
    assert tree(run) == before and link.is_symlink()
    linked_dir = tmp_path / "runlink"
    linked_dir.symlink_to(run)
    assert export(run, linked_dir / "refined.jsonl") == 2
    assert tree(run) == before


def test_wandb_preconditions_fail_before_anything_is_written(run, tmp_path, capsys):
    out = tmp_path / "refined.jsonl"
    assert export(run, out, "--wandb") == 2  # the synthetic run has no wandb_run_id
    assert "wandb_run_id missing" in capsys.readouterr().err and not out.exists()


# ---------------------------------------------------------------------------------------- report --out

@pytest.mark.slow
def test_report_out_follows_the_same_rules(run, tmp_path, capsys):
    out = tmp_path / "r.png"
    out.write_bytes(b"my picture")
    assert main(["report", str(run), "--out", str(out)]) == 2
    assert "pass --overwrite" in capsys.readouterr().err and out.read_bytes() == b"my picture"
    assert main(["report", str(run), "--out", str(out), "--overwrite"]) == 0
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    before = tree(run)
    assert main(["report", str(run), "--out", str(run / "events.jsonl"), "--overwrite"]) == 2
    assert tree(run) == before
    # the default (RUN/report.png) is the program's own file: written, and replaced on the next report
    assert main(["report", str(run)]) == 0 and main(["report", str(run)]) == 0
    assert main(["report", str(run), "--out", str(run / "report.png")]) == 0
    assert leftovers(tmp_path) == [] and leftovers(run) == []


# ---------------------------------------------------------------------------------------- OutputTarget

def test_output_target_checks_before_the_work_and_cleans_up_after_a_failure(tmp_path):
    out = tmp_path / "a" / "b" / "model"
    target = OutputTarget(out, kind="dir")
    with pytest.raises(RuntimeError):
        with target.writing() as tmp:
            (tmp / "weights").write_text("half")
            raise RuntimeError("killed")
    assert not out.exists() and leftovers(out.parent) == []
    # a target that appears while the work runs is checked again before the swap
    target = OutputTarget(out, kind="dir")
    with pytest.raises(OutputError, match="already exists"):
        with target.writing() as tmp:
            (tmp / "weights").write_text("new")
            out.mkdir()
            (out / "theirs").write_text("theirs")
    assert (out / "theirs").read_text() == "theirs" and leftovers(out.parent) == []
    with pytest.raises(OutputError, match="is empty"):
        OutputTarget("", kind="file")
    with pytest.raises(OutputError, match="your home or the root"):
        OutputTarget("/", kind="dir", overwrite=True)
    with pytest.raises(OutputError, match="your home or the root"):
        OutputTarget(Path.home(), kind="dir", overwrite=True)
    with pytest.raises(OutputError, match="is a file, not a folder"):
        (tmp_path / "plain").write_text("x")
        OutputTarget(tmp_path / "plain" / "out.jsonl", kind="file")


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes anywhere")
def test_output_target_in_a_read_only_folder_is_a_clear_error(tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        with pytest.raises(OutputError, match="permission denied"):
            OutputTarget(ro / "x.jsonl", kind="file")
    finally:
        ro.chmod(0o755)

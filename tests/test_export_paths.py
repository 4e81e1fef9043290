"""What an export hands to a colleague: no absolute local path (no home folder) in `source` or
`parent_source`, and rows and system prompt from one checkpoint (a live run's later rows left out)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from neurosym.cli import main
from neurosym.data.examples import Example
from neurosym.remake.store import RemakeStore
from neurosym.updates.symbolic.textgrad_step import Rewrite
from tests.test_inspect import PROMPTS, full_events, make_run, populate_store, write_checkpoint, write_events


def _rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


@pytest.fixture
def run(tmp_path, monkeypatch):
    """A run under the home folder (tmp_path): data in HOME/data, the run in HOME/runs/synth; its store
    holds absolute parent_source paths, as every store written so far does."""
    monkeypatch.setenv("HOME", str(tmp_path))
    run_dir, cfg = make_run(tmp_path)
    write_events(run_dir, full_events())
    write_checkpoint(run_dir, 30, [0, 1, 2])
    populate_store(run_dir, cfg)
    outside = Example((("user", "What is 9 plus 2?"),), "The answer is 11.", "/srv/alice/secret/other.jsonl:7")
    with RemakeStore(run_dir / "remake.sqlite") as store:
        store.add([Rewrite(outside.with_prompt("Compute 9 + 2.", ""), outside, "shorter")], step=28,
                  prompt_version=2, teacher_model="gpt-4o-mini")
    return run_dir


@pytest.mark.parametrize("fmt,name", [("jsonl", "all.jsonl"), ("parquet", "all.parquet")])
def test_an_export_carries_no_absolute_path_and_no_home(run, tmp_path, fmt, name):
    """Was: every row's source/parent_source was the author's absolute path (/home/<user>/.../train.jsonl:12)."""
    out = tmp_path.parent / f"{tmp_path.name}-{name}"   # outside HOME: the file itself is not under it
    assert main(["export", str(run), "--out", str(out), "--only", "all", "--format", fmt]) == 0
    if fmt == "jsonl":
        text = out.read_text(encoding="utf-8")
        rows = _rows(out)
    else:
        import datasets
        rows = datasets.Dataset.from_parquet(str(out)).to_list()
        text = json.dumps(rows)
    assert str(tmp_path) not in text and "/srv/alice" not in text
    for row in rows:
        for key in ("source", "parent_source"):
            assert row[key] is None or not row[key].startswith("/"), row
    train = [r for r in rows if r["step"] is None]
    refined = [r for r in rows if r["step"] is not None]
    assert train[0]["source"] == "data/train.jsonl:1"               # relative to the project folder
    assert [r["source"] for r in refined] == ["remake:1", "remake:2", "remake:3", "remake:4"]
    assert [r["parent_source"] for r in refined] == ["data/train.jsonl:1", "data/train.jsonl:2",
                                                    "data/train.jsonl:3", "other.jsonl:7"]  # outside: name only


def test_portable_source_rules(tmp_path, monkeypatch):
    from neurosym.remake.export import portable_source, source_root

    monkeypatch.setenv("HOME", str(tmp_path / "home" / "alice"))
    project = tmp_path / "home" / "alice" / "proj"
    assert portable_source(f"{project}/data/a.jsonl:12", project) == "data/a.jsonl:12"
    assert portable_source(f"{project}/data/a.parquet[3]", project) == "data/a.parquet[3]"
    assert portable_source("/elsewhere/x:1/b.jsonl:4", project) == "b.jsonl:4"
    assert portable_source(f"{project}/data/a.jsonl:12", None) == "a.jsonl:12"
    for kept in ("remake:3", "org/dataset[split=train][5]", "", None, "data/a.jsonl:2"):
        assert portable_source(kept, project) == kept
    assert source_root(project / "runs" / "x", [project / "data" / "a.jsonl"]) == project
    # the only common folder is the home's parent, or the root: it would name the user, so no root
    assert source_root(project / "runs" / "x", [tmp_path / "home" / "bob" / "a.jsonl"]) is None
    assert source_root(project / "runs" / "x", ["/a.jsonl"]) is None


# ---------------------------------------------------------------------------------------- one checkpoint

def _live_run(tmp_path, store_position):
    """Checkpoint step-30 (prompt v2) recorded 3 store rows; the run then stored a 4th under v3 (step 35)."""
    run_dir, cfg = make_run(tmp_path)
    write_events(run_dir, full_events())
    write_checkpoint(run_dir, 30, [0, 1, 2])
    populate_store(run_dir, cfg)
    if store_position:
        state_path = run_dir / "checkpoints" / "step-30" / "state.json"
        state = json.loads(state_path.read_text())
        if store_position == "0.1.0":  # where checkpoints of 0.1.0 kept it
            state["components"]["symbolic"] = {"store_position": 3}
        else:
            state["components"]["remake"] = {"position": 3}
        state_path.write_text(json.dumps(state))
    parent = Example((("user", "What is 4 plus 4?"),), "The answer is 8.", "x.jsonl:1")
    with RemakeStore(run_dir / "remake.sqlite") as store:
        store.add([Rewrite(parent.with_prompt("Compute 4 + 4.", ""), parent, "fb")], step=35, prompt_version=3)
    return run_dir


@pytest.mark.parametrize("store_position", ["remake", "0.1.0", None])
def test_an_export_of_a_live_run_pairs_the_checkpoints_rows_with_its_prompt(tmp_path, capsys, store_position):
    """Was: every row of the store (one stored under prompt v3, after the checkpoint) was exported with
    the checkpoint's prompt v2."""
    run_dir = _live_run(tmp_path, store_position)
    out = tmp_path / "refined.jsonl"
    assert main(["export", str(run_dir), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    rows = _rows(out)
    assert [r["source"] for r in rows] == ["remake:1", "remake:2", "remake:3"]
    assert all(r["system"] == PROMPTS[2] for r in rows) and max(r["prompt_version"] for r in rows) == 2
    assert printed.startswith(f"exported 3 rows to {out}")
    assert "1 refined row(s) stored after checkpoint step-30 are left out" in printed


def test_a_run_without_checkpoint_exports_every_row_with_its_newest_prompt(tmp_path):
    run_dir, cfg = make_run(tmp_path)
    write_events(run_dir, full_events())
    populate_store(run_dir, cfg)
    out = tmp_path / "refined.jsonl"
    assert main(["export", str(run_dir), "--out", str(out)]) == 0
    rows = _rows(out)
    assert len(rows) == 3 and all(r["system"] == PROMPTS[3] for r in rows)

"""Every bad data source in one message (not the first one per run), and `validate` says "config OK"
only once the data passed too."""
from __future__ import annotations

import pytest
import yaml

from neurosym.cli import main
from neurosym.config.schema import ConfigError, DataConfig, load_config
from neurosym.data import DataError, load_examples
from tests.support.jobs import arithmetic_rows, write_config, write_rows


def _sources(tmp_path, tiny_model_dir, train, evals=None):
    cfg = write_config(tmp_path, tiny_model_dir, train={"max_steps": 1, "save_every": 0, "eval_every": 0})
    raw = yaml.safe_load(cfg.read_text())
    raw["data"]["train"] = train
    if evals is not None:
        raw["data"]["eval"] = evals
    cfg.write_text(yaml.safe_dump(raw, sort_keys=False))
    return cfg


def test_every_missing_data_path_is_named_in_one_error(tmp_path, tiny_model_dir):
    good = write_rows(tmp_path / "good.jsonl", arithmetic_rows(4))
    cfg = _sources(tmp_path, tiny_model_dir, [{"path": str(good)}, {"path": "nope-a.jsonl"}, {"path": "nope-b.jsonl"}],
                   evals="nope-c.jsonl")
    with pytest.raises(ConfigError) as err:
        load_config(cfg)
    msg = str(err.value)
    for name, key in (("nope-a", "data.train.1.path"), ("nope-b", "data.train.2.path"), ("nope-c", "data.eval")):
        assert f"`{key}` points to a missing file: {tmp_path / name}.jsonl" in msg
    assert f"{cfg}:" in msg.splitlines()[0] and msg.count("Paths are relative") == 1


def test_every_bad_source_is_named_in_one_error(tmp_path):
    good = write_rows(tmp_path / "good.jsonl", arithmetic_rows(3))
    a = write_rows(tmp_path / "a.jsonl", arithmetic_rows(2) + ["{oops"])
    b = write_rows(tmp_path / "b.jsonl", [{"prompt": "p", "response": 3}] + arithmetic_rows(2))
    data = DataConfig(train=[{"path": str(a)}, {"path": str(good)}, {"path": str(b)}])
    with pytest.raises(DataError) as err:
        load_examples(data.train, data)
    msg = str(err.value)
    assert f"{a}:3: bad JSON" in msg and f"{b}:1: field `response` must be a string" in msg
    assert str(good) not in msg and msg.count("data.on_error: skip") == 1
    # skipped bad lines: a source left with nothing is named with its own first bad line
    c = write_rows(tmp_path / "c.jsonl", ["{oops"])
    d = write_rows(tmp_path / "d.jsonl", [{"prompt": "p"}])
    data = DataConfig(train=[{"path": str(c)}, {"path": str(d)}], on_error="skip")
    with pytest.raises(DataError) as err:
        load_examples(data.train, data)
    assert f"{c}: no usable examples (1 skipped); first: {c}:1" in str(err.value)
    assert f"{d}: no usable examples (1 skipped); first: {d}:1" in str(err.value)


def test_validate_and_train_name_every_bad_source_and_validate_says_ok_only_after_the_data(
        tmp_path, tiny_model_dir, capsys):
    a = write_rows(tmp_path / "a.jsonl", arithmetic_rows(2) + ["{oops"])
    b = write_rows(tmp_path / "b.jsonl", ["1"] + arithmetic_rows(2))
    e = write_rows(tmp_path / "e.jsonl", [{"prompt": "p", "response": ""}])
    cfg = _sources(tmp_path, tiny_model_dir, [{"path": str(a)}, {"path": str(b)}], evals=str(e))
    assert main(["validate", str(cfg)]) == 2
    out, err = capsys.readouterr()
    assert "config OK" not in out and out == ""
    assert f"{a}:3: bad JSON" in err and f"{b}:1: expected a JSON object" in err and f"{e}:1: empty response" in err
    assert main(["train", str(cfg), "--quiet"]) == 2  # the same train sources, in one message
    err = capsys.readouterr().err
    assert f"{a}:3: bad JSON" in err and f"{b}:1: expected a JSON object" in err and "Traceback" not in err
    assert main(["validate", str(cfg), "--set", "data.on_error=skip", "--set", f"data.eval={a}"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("config OK") and "data.train 4 examples" in out


def test_load_splits_reads_both_splits_and_names_every_bad_source_of_the_job(tmp_path):
    from neurosym.data import load_splits
    good = write_rows(tmp_path / "good.jsonl", arithmetic_rows(3))
    a = write_rows(tmp_path / "a.jsonl", arithmetic_rows(2) + ["{oops"])
    e = write_rows(tmp_path / "e.jsonl", [{"prompt": "p", "response": ""}])
    with pytest.raises(DataError) as err:
        load_splits(DataConfig(train=str(a), eval=str(e)))
    msg = str(err.value)
    assert f"{a}:3: bad JSON" in msg and f"{e}:1: empty response" in msg and msg.count("data.on_error: skip") == 1
    both = load_splits(DataConfig(train=str(good), eval=str(a), on_error="skip"))
    assert {k: (len(ex), rep.skipped) for k, (ex, rep) in both.items()} == {"train": (3, 0), "eval": (2, 1)}
    only = load_splits(DataConfig(train=str(good)))
    assert list(only) == ["train"] and [ex.prompt for ex in only["train"][0]] == \
        [ex.prompt for ex in load_examples(str(good), DataConfig(train=str(good)))[0]]

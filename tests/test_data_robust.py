"""Issue 8: data that passes `validate` must not crash training later. One reader serves validate and
train; every damaged input is read properly or refused with file:line, and `on_error: skip` counts it."""
import codecs
import gzip
import json

import pytest

from neurosym.cli import main
from neurosym.config.schema import DataConfig
from neurosym.data import DataError, Renderer, load_examples
from tests.support.jobs import arithmetic_rows, write_config

GOOD = [json.dumps(r).encode() for r in arithmetic_rows(4)]


def _write(path, lines: list[bytes]):
    path.write_bytes(b"\n".join(lines) + b"\n")
    return path


def _load(path, **kw):
    return load_examples(path, DataConfig(train=str(path), **kw))


@pytest.mark.parametrize("bad, reason", [
    (b'{"prompt": "caf\xe9", "response": "x"}', "not valid UTF-8 (byte 0xe9"),
    (b'{"prompt": "\\ud800 lone", "response": "x"}', "lone surrogate"),
    (b'{"prompt": "ok", "response": "\\udfff"}', "lone surrogate"),
    (b'PAR1\x00\x00\x15\x04garbage', "binary data"),
])
def test_bad_line_refused_with_file_line_or_skipped_and_counted(tmp_path, bad, reason):
    path = _write(tmp_path / "d.jsonl", GOOD[:2] + [bad] + GOOD[2:])
    with pytest.raises(DataError) as err:
        _load(path)
    assert f"{path}:3: " in str(err.value) and reason in str(err.value)
    examples, report = _load(path, on_error="skip")
    assert len(examples) == 4 and report.skipped == 1 and report.errors[0].startswith(f"{path}:3: ")


def test_encodings_with_a_bom_are_read(tmp_path, tiny_model_dir):
    text = "\n".join(json.dumps({"prompt": "naïve ☃ question", "response": "réponse"}, ensure_ascii=False)
                     for _ in range(2)) + "\n"
    for enc, bom in (("utf-8", codecs.BOM_UTF8), ("utf-16-le", codecs.BOM_UTF16_LE),
                     ("utf-16-be", codecs.BOM_UTF16_BE), ("utf-32-le", codecs.BOM_UTF32_LE)):
        path = tmp_path / f"{enc}.jsonl"
        path.write_bytes(bom + text.encode(enc))
        examples, _ = _load(path)
        assert [e.prompt for e in examples] == ["naïve ☃ question"] * 2, enc
        assert examples[1].source == f"{path}:2"
    path = tmp_path / "nobom.jsonl"
    path.write_bytes(text.encode("utf-16-le"))
    with pytest.raises(DataError, match="UTF-16 without a byte-order mark"):
        _load(path, on_error="skip")


def test_compressed_jsonl_is_read_and_damage_refused(tmp_path):
    raw = b"\n".join(GOOD) + b"\n"
    path = tmp_path / "d.jsonl.gz"
    path.write_bytes(gzip.compress(raw))
    examples, _ = _load(path)
    assert len(examples) == 4 and examples[0].source == f"{path}:1"
    odd = tmp_path / "gz-without-suffix.jsonl"  # magic bytes decide, not the name
    odd.write_bytes(gzip.compress(raw))
    assert len(_load(odd)[0]) == 4
    cut = tmp_path / "cut.jsonl.gz"
    cut.write_bytes(gzip.compress(raw * 50)[:-30])
    with pytest.raises(DataError, match=f"{cut}: cannot read"):
        _load(cut, on_error="skip")
    zst = tmp_path / "d.jsonl.zst"
    zst.write_bytes(b"\x28\xb5\x2f\xfd" + b"\x00" * 20)
    with pytest.raises(DataError, match="zstd-compressed"):
        _load(zst)


def test_corrupt_parquet_is_refused_as_a_whole(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq
    path = tmp_path / "d.parquet"
    pq.write_table(pa.Table.from_pylist(arithmetic_rows(50)), str(path))
    data = path.read_bytes()
    path.write_bytes(data[:len(data) // 2] + b"\xff" * 64 + data[len(data) // 2 + 64:])
    for mode in ("raise", "skip"):
        with pytest.raises(DataError, match=f"{path}: not a readable parquet file"):
            _load(path, on_error=mode)
    (tmp_path / "empty.parquet").write_bytes(b"")
    with pytest.raises(DataError, match="not a readable parquet"):
        _load(tmp_path / "empty.parquet")


def test_everything_that_loads_can_be_tokenized(tmp_path, tiny_model_dir):
    """The failure issue 8 saw: a lone surrogate passed loading and crashed the tokenizer mid-run."""
    from transformers import AutoTokenizer
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    lines = GOOD + [b'{"prompt": "a\\ud83d\\ude00b", "response": "ok"}',  # a valid pair is fine
                    b'{"prompt": "x\\ud83d", "response": "y"}', b'{"prompt": "\x00", "response": "y"}']
    examples, report = _load(_write(tmp_path / "d.jsonl", lines), on_error="skip")
    assert report.skipped == 2 and examples[-1].prompt == "a\U0001F600b"
    r = Renderer(tok, 64, "S")
    assert all(r.encode(ex).n_target > 0 for ex in examples)


def test_validate_and_train_agree_on_dirty_data(tmp_path, tiny_model_dir, capsys):
    cfg = write_config(tmp_path, tiny_model_dir, train={"max_steps": 2, "save_every": 0, "eval_every": 0})
    train_file = tmp_path / "data" / "train.jsonl"
    with open(train_file, "ab") as f:
        f.write(b'{"prompt": "caf\xe9", "response": "x"}\n{"prompt": "\\udc00", "response": "x"}\n')
    assert main(["validate", str(cfg)]) == 2
    err = capsys.readouterr().err
    assert f"{train_file}:25: not valid UTF-8" in err and "Traceback" not in err
    assert main(["train", str(cfg)]) == 2  # train refuses exactly what validate refused, before the model loads
    assert f"{train_file}:25" in capsys.readouterr().err
    assert main(["validate", str(cfg), "--set", "data.on_error=skip"]) == 0
    out = capsys.readouterr().out
    assert "data.train 24 examples" in out and "2 skipped" in out and f"{train_file}:26: " in out
    assert main(["train", str(cfg), "--set", "data.on_error=skip", "--set", "run.name=skip"]) == 0

"""Exporting refined examples as a dataset the job can train on again, as is.

Records use the schema :func:`neurosym.data.load_examples` reads (``Example.to_record()``):
``prompt``/``response``/``system`` when every example is single-turn, else ``messages`` for every row
(one schema per file, so parquet/HF columns are consistent and the loader's per-record format
detection sees the same keys on every row). Provenance columns are added: ``source``,
``parent_source``, ``parent_prompt``, ``step``, ``prompt_version``, ``teacher_model``, ``feedback``,
``created``; the loader ignores keys it does not use. With ``only="all"`` the original training rows
come first, with their ``source`` (``file:line``) and null provenance.

Formats: ``jsonl`` (written to a temporary file and renamed into place), ``parquet``
(``datasets.Dataset.to_parquet``), ``hf`` (``datasets.Dataset.save_to_disk`` folder). Each is
written next to ``out`` first and moved into place only when complete.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterable, Literal

from neurosym.data.examples import Example

from .store import PROVENANCE, RemakeStore

FORMATS = ("jsonl", "parquet", "hf")
_RECORD_KEYS = ("prompt", "response", "system", "messages")


def _single_turn(ex: Example) -> bool:
    return len([m for m in ex.messages if m[0] != "system"]) == 1


def _record(ex: Example, chat: bool) -> dict:
    if not chat:
        return {"prompt": ex.prompt, "response": ex.response, "system": ex.system}
    msgs = [{"role": r, "content": c} for r, c in ex.messages]
    return {"messages": msgs + [{"role": "assistant", "content": ex.response}]}


def export_records(store: RemakeStore, train_examples: Iterable[Example] = (),
                   only: Literal["refined", "all"] = "refined", fields=None) -> list[dict]:
    """The rows :func:`export_refined` writes (``fields``: a ``DataFields`` to rename the record
    keys to a dataset's own field names)."""
    if only not in ("refined", "all"):
        raise ValueError(f"only must be 'refined' or 'all', got {only!r}")
    refined = store.examples()
    originals = list(train_examples) if only == "all" else []
    chat = not all(_single_turn(ex) for ex in originals + refined)
    rows = []
    for ex in originals:
        rows.append({**_record(ex, chat), "source": ex.source, **{k: None for k in PROVENANCE}})
    for ex in refined:
        rows.append({**_record(ex, chat), "source": ex.source, **{k: ex.meta.get(k) for k in PROVENANCE}})
    if fields is not None:
        names = {k: getattr(fields, k) for k in _RECORD_KEYS}
        rows = [{names.get(k, k): v for k, v in row.items()} for row in rows]
    return rows


def export_refined(store: RemakeStore, train_examples: Iterable[Example], out: str | Path,
                   fmt: Literal["jsonl", "parquet", "hf"] = "jsonl",
                   only: Literal["refined", "all"] = "refined", fields=None) -> Path:
    """Write the refined examples (``only="all"``: the training examples too) to ``out``; returns ``out``.

    :param fields: optional ``DataFields`` (``data.fields``) to write the record keys under a
        dataset's own names; default: ``prompt``/``response``/``system``/``messages``.
    """
    if fmt not in FORMATS:
        raise ValueError(f"fmt must be one of {FORMATS}, got {fmt!r}")
    rows = export_records(store, train_examples, only, fields)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "jsonl":
        _write_jsonl(rows, out)
    else:
        _write_datasets(rows, out, fmt)
    return out


def _write_jsonl(rows: list[dict], out: Path) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            for row in rows:
                f.write(json.dumps(row, ensure_ascii=False) + "\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, out)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _write_datasets(rows: list[dict], out: Path, fmt: str) -> None:
    import datasets

    if not rows:
        raise ValueError("nothing to export: the store holds no refined examples")
    # from_list takes its columns from the first row: make every row carry every key.
    keys: list[str] = []
    for row in rows:
        keys.extend(k for k in row if k not in keys)
    ds = datasets.Dataset.from_list([{k: row.get(k) for k in keys} for row in rows])
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        if fmt == "parquet":
            ds.to_parquet(str(tmp / "data.parquet"))
            os.replace(tmp / "data.parquet", out)
        else:
            target = tmp / "dataset"
            ds.save_to_disk(str(target))
            if out.exists():
                shutil.rmtree(out) if out.is_dir() else out.unlink()
            os.replace(target, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


__all__ = ["export_refined", "export_records", "FORMATS"]

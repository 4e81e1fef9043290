"""Exporting a run's data: the refined examples (and/or the training rows) as a dataset, with the
system prompt the run learned on every row.

Schemas (``schema=``, ``neurosym export --schema``):

- ``neurosym`` (default): what :func:`neurosym.data.load_examples` reads, so the job can train on it
  again as is. ``prompt``/``response``/``system`` when every example is single-turn, else ``messages``
  for every row (one schema per file, so parquet/HF columns are consistent). Provenance columns:
  ``source``, ``parent_source``, ``parent_prompt``, ``step``, ``prompt_version``, ``teacher_model``,
  ``feedback``, ``created`` (null on training rows); the loader ignores keys it does not use.
- ``trl``: TRL's conversational prompt-completion rows, ``{"prompt": [system, user...],
  "completion": [{"role": "assistant", ...}]}``. ``SFTTrainer`` takes them as they are and, like
  neurosym, puts the loss on the completion only.
- ``trl-messages``: TRL's conversational language-modeling rows, ``{"messages": [system, user...,
  assistant]}`` (SFTTrainer trains on every token unless ``assistant_only_loss=True``).

The TRL schemas carry no provenance columns (a dataset of exactly the keys SFTTrainer reads).

System prompt: a row whose example has its own system message keeps it; every other row gets
``system`` (the run's learned prompt, :func:`neurosym.observe.prompt_history.learned_prompt`) — the prompt
the adapter was trained under, which the renderer put in front of those examples during training.

Formats: ``jsonl``, ``parquet`` (``datasets.Dataset.to_parquet``), ``hf`` (a ``save_to_disk`` folder).
Every output goes through :class:`neurosym.persist.safe_output.OutputTarget`: an existing target is refused
unless ``overwrite``, never inside a run directory, written to a temporary sibling and renamed.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Iterable, Literal, Optional

from neurosym.data.examples import Example
from neurosym.persist.safe_output import OutputTarget

from .store import PROVENANCE, RemakeStore

FORMATS = ("jsonl", "parquet", "hf")
SCHEMAS = ("neurosym", "trl", "trl-messages")
_RECORD_KEYS = ("prompt", "response", "system", "messages")


def _single_turn(ex: Example) -> bool:
    return len([m for m in ex.messages if m[0] != "system"]) == 1


def _messages(ex: Example, system: Optional[str]) -> list[dict]:
    """The example's context messages with the system prompt in front (its own, else ``system``)."""
    msgs = [{"role": r, "content": c} for r, c in ex.messages]
    if system and ex.system is None:
        msgs.insert(0, {"role": "system", "content": system})
    return msgs


def _record(ex: Example, chat: bool, system: Optional[str]) -> dict:
    if not chat:
        return {"prompt": ex.prompt, "response": ex.response,
                "system": ex.system if ex.system is not None else system}
    return {"messages": _messages(ex, system) + [{"role": "assistant", "content": ex.response}]}


def _trl_record(ex: Example, schema: str, system: Optional[str]) -> dict:
    answer = {"role": "assistant", "content": ex.response}
    if schema == "trl":
        return {"prompt": _messages(ex, system), "completion": [answer]}
    return {"messages": _messages(ex, system) + [answer]}


def export_records(store: Optional[RemakeStore], train_examples: Iterable[Example] = (),
                   only: Literal["refined", "all"] = "refined", fields=None, *,
                   system: Optional[str] = None, schema: str = "neurosym") -> list[dict]:
    """The rows :func:`export_refined` writes.

    :param store: the refined examples (``None``: a run without a remake store, only the training rows).
    :param only: ``refined`` (the store's rows) or ``all`` (``train_examples`` first, then the refined).
    :param fields: optional ``DataFields`` to write the ``neurosym`` schema's keys under a dataset's own
        names (``data.fields``); not used by the TRL schemas, whose keys are fixed.
    :param system: the run's learned system prompt, given to every row without its own.
    :param schema: one of :data:`SCHEMAS`.
    """
    if only not in ("refined", "all"):
        raise ValueError(f"only must be 'refined' or 'all', got {only!r}")
    if schema not in SCHEMAS:
        raise ValueError(f"schema must be one of {SCHEMAS}, got {schema!r}")
    refined = store.examples() if store is not None else []
    originals = list(train_examples) if only == "all" else []
    if schema != "neurosym":
        return [_trl_record(ex, schema, system) for ex in originals + refined]
    chat = not all(_single_turn(ex) for ex in originals + refined)
    rows = []
    for ex in originals:
        rows.append({**_record(ex, chat, system), "source": ex.source, **{k: None for k in PROVENANCE}})
    for ex in refined:
        rows.append({**_record(ex, chat, system), "source": ex.source,
                     **{k: ex.meta.get(k) for k in PROVENANCE}})
    if fields is not None:
        names = {k: getattr(fields, k) for k in _RECORD_KEYS}
        rows = [{names.get(k, k): v for k, v in row.items()} for row in rows]
    return rows


def output_target(out: str | Path, fmt: str, overwrite: bool = False, protect=()) -> OutputTarget:
    """The checked ``out`` for ``fmt`` (a folder for ``hf``, a file otherwise)."""
    if fmt not in FORMATS:
        raise ValueError(f"fmt must be one of {FORMATS}, got {fmt!r}")
    return OutputTarget(out, kind="dir" if fmt == "hf" else "file", overwrite=overwrite, protect=protect)


def export_refined(store: Optional[RemakeStore], train_examples: Iterable[Example], out: str | Path | OutputTarget,
                   fmt: Literal["jsonl", "parquet", "hf"] = "jsonl",
                   only: Literal["refined", "all"] = "refined", fields=None, *,
                   system: Optional[str] = None, schema: str = "neurosym", overwrite: bool = False,
                   protect: Iterable = ()) -> Path:
    """Write the refined examples (``only="all"``: the training examples first) to ``out``; returns
    the path written. See :func:`export_records` for the row arguments.

    :param out: a path, or an :class:`OutputTarget` already checked (then ``overwrite``/``protect``
        are its own).
    :param overwrite: replace an existing non-empty ``out``.
    :param protect: paths read from (the run directory, data files) that ``out`` may not touch; the
        store's file always is, and so is any folder that looks like a run directory.
    :raises neurosym.persist.safe_output.OutputError: ``out`` may not be written.
    :raises ValueError: nothing to write to parquet/hf (they need at least one row to have columns).
    """
    if fmt not in FORMATS:
        raise ValueError(f"fmt must be one of {FORMATS}, got {fmt!r}")
    if not isinstance(out, OutputTarget):
        guarded = list(protect) + ([store.path] if store is not None else [])
        out = output_target(out, fmt, overwrite, guarded)
    rows = export_records(store, train_examples, only, fields, system=system, schema=schema)
    if fmt == "jsonl":
        _write_jsonl(rows, out)
    else:
        _write_datasets(rows, out, fmt)
    return Path(out.given)


def _write_jsonl(rows: list[dict], target: OutputTarget) -> None:
    with target.writing() as tmp:
        with open(tmp, "w", encoding="utf-8") as f:
            for row in rows:
                f.write(json.dumps(row, ensure_ascii=False) + "\n")
            f.flush()
            os.fsync(f.fileno())


def _write_datasets(rows: list[dict], target: OutputTarget, fmt: str) -> None:
    import datasets

    if not rows:
        raise ValueError("nothing to export: the store holds no refined examples")
    # from_list takes its columns from the first row: make every row carry every key.
    keys: list[str] = []
    for row in rows:
        keys.extend(k for k in row if k not in keys)
    ds = datasets.Dataset.from_list([{k: row.get(k) for k in keys} for row in rows])
    with target.writing() as tmp:
        if fmt == "parquet":
            ds.to_parquet(str(tmp))
        else:
            ds.save_to_disk(str(tmp))


__all__ = ["export_refined", "export_records", "output_target", "FORMATS", "SCHEMAS"]

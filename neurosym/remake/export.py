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

Which rows go with which prompt (:func:`export_view`): an export describes one checkpoint, the newest
complete one. Its system prompt is the one current in that checkpoint, and its refined rows are the ones
that checkpoint recorded (store ids up to its ``store_position``; a checkpoint without one: rows of its
step or before). Rows a live run stored after it, or a killed attempt left behind (a resume drops them),
are left out, so the rows and the prompt always come from the same point of the run. A run with no
checkpoint yet exports every row with its newest recorded prompt.

Paths (``source``, ``parent_source``): never absolute. A training row's ``path:line`` is written relative
to the run's project folder (the deepest folder holding both the run directory and its data files), e.g.
``data/train.jsonl:12``; a file outside it, or a project folder that is ``/`` or above the home folder,
leaves only the file name (``train.jsonl:12``). Stores written before this rule (absolute
``parent_source``) export the same way. ``remake:<id>`` and hub dataset names are kept as they are.

Formats: ``jsonl``, ``parquet`` (``datasets.Dataset.to_parquet``), ``hf`` (a ``save_to_disk`` folder).
Every output goes through :class:`neurosym.persist.safe_output.OutputTarget`: an existing target is refused
unless ``overwrite``, never inside a run directory, written to a temporary sibling and renamed.
"""
from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Literal, Optional

from neurosym.data.examples import Example
from neurosym.persist.safe_output import OutputTarget

from .store import PROVENANCE, RemakeStore

FORMATS = ("jsonl", "parquet", "hf")
SCHEMAS = ("neurosym", "trl", "trl-messages")
_RECORD_KEYS = ("prompt", "response", "system", "messages")


# ------------------------------------------------------------------------------- which rows, which prompt

@dataclass(frozen=True)
class ExportView:
    """One point of the run that an export describes: the checkpoint, its system prompt, and the limit
    on the store's rows that it recorded (``None``: no limit)."""
    checkpoint: Optional[Path] = None
    system: Optional[str] = None
    max_id: Optional[int] = None
    max_step: Optional[int] = None

    def rows(self, store: RemakeStore) -> list[Example]:
        return store.examples(self.max_id, self.max_step)


def _store_position(components: dict) -> Optional[int]:
    remake = components.get("remake")
    if isinstance(remake, dict) and isinstance(remake.get("position"), int):
        return int(remake["position"])
    for value in components.values():  # checkpoints of 0.1.0: in the symbolic update's state
        if isinstance(value, dict) and isinstance(value.get("store_position"), int):
            return int(value["store_position"])
    return None


def export_view(run_dir: str | Path, attempts: int = 3) -> ExportView:
    """The newest complete checkpoint of ``run_dir``, read once: its prompt and the rows it recorded
    (see the module doc). A checkpoint deleted while read (``keep_last_n`` of a live run) is replaced
    by the next newest."""
    from neurosym.persist.checkpoint import STATE_FILE, latest_checkpoint
    from neurosym.observe.prompt_history import learned_prompt

    run_dir = Path(run_dir)
    for _ in range(attempts):
        ckpt = latest_checkpoint(run_dir)
        if ckpt is None:
            return ExportView(None, learned_prompt(run_dir))
        try:
            state = json.loads((ckpt / STATE_FILE).read_text(encoding="utf-8"))
        except FileNotFoundError:
            continue  # deleted since it was listed
        except (OSError, ValueError):
            state = None
        if not isinstance(state, dict):
            return ExportView(ckpt, learned_prompt(run_dir, ckpt))
        components = state.get("components") if isinstance(state.get("components"), dict) else {}
        prompts = components.get("prompts")
        if isinstance(prompts, dict) and "current" in prompts:
            current = prompts["current"]
            system = current if isinstance(current, str) and current.strip() else None
        else:
            system = learned_prompt(run_dir, ckpt)
        position = _store_position(components)
        step = state.get("step") if isinstance(state.get("step"), int) else None
        return ExportView(ckpt, system, max_id=position, max_step=None if position is not None else step)
    return ExportView(None, learned_prompt(run_dir))


# ------------------------------------------------------------------------------- paths that stay here

_LOCATION = re.compile(r"(?::\d+|\[[^\[\]]*\])*$")  # the ":12", "[3]", "[split=train][3]" after a path


def source_root(run_dir: str | Path, data_paths: Iterable[str | os.PathLike] = ()) -> Optional[Path]:
    """The run's project folder: the deepest folder holding the run directory and its local data files;
    ``None`` when that is ``/`` or an ancestor of the home folder (a path below it would name the user)."""
    folders = [Path(os.path.abspath(run_dir))]
    folders += [Path(os.path.abspath(p)) for p in data_paths if os.path.isabs(str(p))]
    try:
        root = Path(os.path.commonpath([str(f) for f in folders]))
    except ValueError:  # different drives
        return None
    try:
        home_parents = set(Path.home().resolve().parents) | set(Path(os.path.abspath(Path.home())).parents)
    except (RuntimeError, KeyError):
        home_parents = set()
    if root == Path(root.anchor) or root in home_parents:
        return None
    return root


def portable_source(source: Optional[str], root: Optional[Path]) -> Optional[str]:
    """``source`` without the machine's absolute path: relative to ``root`` when under it, else the file
    name (with its ``:line``/``[index]``); anything not an absolute path is returned as it is."""
    if not isinstance(source, str) or not (source.startswith("/") or source.startswith("~")
                                           or re.match(r"^[A-Za-z]:[\\/]", source)):
        return source
    loc = _LOCATION.search(source)
    path, where = source[:loc.start()], source[loc.start():]
    if not path:
        return source
    p = Path(os.path.normpath(os.path.expanduser(path)))
    if root is not None:
        for base in {Path(os.path.normpath(root)), Path(root).resolve()}:
            try:
                rel = p.relative_to(base)
            except ValueError:
                continue
            if str(rel) not in ("", "."):
                return rel.as_posix() + where
    return p.name + where


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
                   system: Optional[str] = None, schema: str = "neurosym", root: Optional[Path] = None,
                   view: Optional[ExportView] = None) -> list[dict]:
    """The rows :func:`export_refined` writes.

    :param store: the refined examples (``None``: a run without a remake store, only the training rows).
    :param only: ``refined`` (the store's rows) or ``all`` (``train_examples`` first, then the refined).
    :param fields: optional ``DataFields`` to write the ``neurosym`` schema's keys under a dataset's own
        names (``data.fields``); not used by the TRL schemas, whose keys are fixed.
    :param system: the run's learned system prompt, given to every row without its own.
    :param schema: one of :data:`SCHEMAS`.
    :param root: the folder ``source``/``parent_source`` paths are written relative to
        (:func:`source_root`); absolute paths outside it (or every one, when ``None``) keep their file
        name only.
    :param view: which of the store's rows to write (:func:`export_view`); default all.
    """
    if only not in ("refined", "all"):
        raise ValueError(f"only must be 'refined' or 'all', got {only!r}")
    if schema not in SCHEMAS:
        raise ValueError(f"schema must be one of {SCHEMAS}, got {schema!r}")
    refined = (view.rows(store) if view is not None else store.examples()) if store is not None else []
    originals = list(train_examples) if only == "all" else []
    if schema != "neurosym":
        return [_trl_record(ex, schema, system) for ex in originals + refined]
    chat = not all(_single_turn(ex) for ex in originals + refined)
    rows = []
    for ex in originals:
        rows.append({**_record(ex, chat, system), "source": portable_source(ex.source, root),
                     **{k: None for k in PROVENANCE}})
    for ex in refined:
        meta = {k: ex.meta.get(k) for k in PROVENANCE}
        meta["parent_source"] = portable_source(meta["parent_source"], root)
        rows.append({**_record(ex, chat, system), "source": portable_source(ex.source, root), **meta})
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
                   protect: Iterable = (), root: Optional[Path] = None, view: Optional[ExportView] = None) -> Path:
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
    rows = export_records(store, train_examples, only, fields, system=system, schema=schema, root=root, view=view)
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


__all__ = ["export_refined", "export_records", "output_target", "export_view", "ExportView", "source_root",
           "portable_source", "FORMATS", "SCHEMAS"]

"""Reading records in the formats users already have, with file:line for every bad one.

Accepted record formats (``data.format``; ``auto`` detects per file from the first good record):
- ``prompt_response``: ``{"prompt": ..., "response": ..., "system"?: ...}``
- ``alpaca``: ``{"instruction": ..., "input"?: ..., "output": ...}``
- ``chat``: ``{"messages": [{"role": "system"|"user"|"assistant", "content": ...}, ...]}``; the loss is on
  the final assistant message, earlier turns are context.
Files: ``.jsonl``/``.json`` (one JSON object per line), ``.parquet``, or a folder written by
``datasets.Dataset.save_to_disk``.
"""
from __future__ import annotations

from neurosym.errors import UserError

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Optional

log = logging.getLogger(__name__)


class DataError(UserError, ValueError):
    """A bad record or file; the message names the file and line."""


@dataclass(frozen=True)
class Example:
    """One training example: context messages (no final answer) and the response the loss sees."""
    messages: tuple  # tuple of (role, content) pairs; the last one is the user's prompt
    response: str
    source: str = ""  # "file:line" or "remake:<id>"
    meta: dict = field(default_factory=dict, compare=False, hash=False)

    @property
    def prompt(self) -> str:
        """The last user message: what the symbolic route rewrites."""
        return self.messages[-1][1]

    @property
    def system(self) -> Optional[str]:
        return self.messages[0][1] if self.messages and self.messages[0][0] == "system" else None

    def with_prompt(self, prompt: str, source: str, **meta) -> "Example":
        msgs = self.messages[:-1] + ((self.messages[-1][0], prompt),)
        return Example(msgs, self.response, source, {**self.meta, **meta})

    def to_state(self) -> dict:
        """Plain JSON that :meth:`from_state` turns back into an equal example (checkpoints)."""
        return {"messages": [list(m) for m in self.messages], "response": self.response, "source": self.source}

    @classmethod
    def from_state(cls, d: dict) -> "Example":
        return cls(tuple(tuple(m) for m in d["messages"]), d["response"], d["source"])

    def to_record(self) -> dict:
        """Back to the on-disk ``chat``/``prompt_response`` schema (what `neurosym export` writes)."""
        turns = [(r, c) for r, c in self.messages if r != "system"]
        if len(turns) == 1:
            rec = {"prompt": self.prompt, "response": self.response}
            if self.system is not None:
                rec["system"] = self.system
            return rec
        msgs = [{"role": r, "content": c} for r, c in self.messages]
        return {"messages": msgs + [{"role": "assistant", "content": self.response}]}


FORMATS = ("prompt_response", "alpaca", "chat")


def detect_format(record: dict, fields) -> Optional[str]:
    if fields.messages in record:
        return "chat"
    if fields.instruction in record and fields.output in record:
        return "alpaca"
    if fields.prompt in record and fields.response in record:
        return "prompt_response"
    return None


def _text(record: dict, key: str, required: bool = True) -> Optional[str]:
    if key not in record or record[key] is None:
        if required:
            raise DataError(f"missing field `{key}`")
        return None
    value = record[key]
    if not isinstance(value, str):
        raise DataError(f"field `{key}` must be a string, got {type(value).__name__}")
    return value


def parse_record(record, fmt: str, fields, source: str) -> Example:
    if not isinstance(record, dict):
        raise DataError(f"expected a JSON object, got {type(record).__name__}")
    if fmt == "auto":
        fmt = detect_format(record, fields) or ""
        if not fmt:
            raise DataError(
                f"cannot tell the format of this record (keys: {sorted(record)}); expected "
                f"prompt/response, instruction/output (alpaca) or messages (chat). "
                f"Set data.format and data.fields to map your field names.")
    system = None
    if fmt == "prompt_response":
        prompt, response = _text(record, fields.prompt), _text(record, fields.response)
        system = _text(record, fields.system, required=False)
        messages = [("user", prompt)]
    elif fmt == "alpaca":
        instruction, response = _text(record, fields.instruction), _text(record, fields.output)
        extra = _text(record, fields.input, required=False)
        prompt = instruction + (f"\n\n{extra}" if extra else "")
        system = _text(record, fields.system, required=False)
        messages = [("user", prompt)]
    elif fmt == "chat":
        msgs = record.get(fields.messages)
        if not isinstance(msgs, list) or not msgs:
            raise DataError(f"field `{fields.messages}` must be a non-empty list of {{role, content}}")
        pairs = []
        for i, m in enumerate(msgs):
            if not isinstance(m, dict) or not isinstance(m.get("content"), str) or \
                    m.get("role") not in ("system", "user", "assistant"):
                raise DataError(f"message {i} must be {{\"role\": system|user|assistant, \"content\": str}}")
            pairs.append((m["role"], m["content"]))
        if pairs[-1][0] != "assistant":
            raise DataError("a chat record must end with an assistant message (the trained response)")
        response = pairs[-1][1]
        messages = pairs[:-1]
        if not messages or messages[-1][0] != "user":
            raise DataError("the assistant response must follow a user message")
        if messages[0][0] == "system":
            system, messages = messages[0][1], messages[1:]
    else:  # pragma: no cover - guarded by the config schema
        raise DataError(f"unknown format {fmt!r}")
    if not response.strip():
        raise DataError("empty response")
    if not messages[-1][1].strip():
        raise DataError("empty prompt")
    full = ((("system", system),) if system is not None else ()) + tuple(messages)
    return Example(full, response, source)


def _iter_raw(path: Path) -> Iterator[tuple[str, object]]:
    """(location, record-or-error) pairs; JSON errors are yielded as DataError, not raised."""
    if path.is_dir():
        import datasets
        ds = datasets.load_from_disk(str(path))
        if isinstance(ds, datasets.DatasetDict):
            raise DataError(f"{path}: a DatasetDict; point data.train/eval at one split's folder")
        for i, row in enumerate(ds):
            yield f"{path}[{i}]", row
    elif path.suffix == ".parquet":
        import datasets
        ds = datasets.Dataset.from_parquet(str(path))
        for i, row in enumerate(ds):
            yield f"{path}[{i}]", row
    else:
        with open(path, encoding="utf-8") as f:
            for lineno, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    yield f"{path}:{lineno}", json.loads(line)
                except json.JSONDecodeError as exc:
                    yield f"{path}:{lineno}", DataError(f"bad JSON: {exc.msg} (column {exc.colno})")


@dataclass
class LoadReport:
    path: str
    loaded: int = 0
    skipped: int = 0
    formats: dict = field(default_factory=dict)
    errors: list = field(default_factory=list)  # first few "file:line: reason" strings


def load_examples(path: str | Path, data_cfg, on_error: Optional[str] = None) -> tuple[list[Example], LoadReport]:
    """Parse every record of one file. ``on_error=raise`` stops at the first bad line with file:line."""
    path = Path(path)
    on_error = on_error or data_cfg.on_error
    if not path.exists():
        raise DataError(f"data file not found: {path}")
    report = LoadReport(str(path))
    examples = []
    for loc, raw in _iter_raw(path):
        try:
            if isinstance(raw, DataError):
                raise raw
            ex = parse_record(raw, data_cfg.format, data_cfg.fields, loc)
        except DataError as exc:
            msg = f"{loc}: {exc}"
            if on_error == "raise":
                raise DataError(msg + "\n  (set data.on_error: skip to skip bad lines and count them)") from None
            report.skipped += 1
            if len(report.errors) < 20:
                report.errors.append(msg)
            log.warning("skipping %s", msg)
            continue
        fmt = "chat" if len([m for m in ex.messages if m[0] != "system"]) > 1 else "single-turn"
        report.formats[fmt] = report.formats.get(fmt, 0) + 1
        examples.append(ex)
    report.loaded = len(examples)
    if not examples:
        raise DataError(f"{path}: no usable examples ({report.skipped} skipped)")
    return examples, report

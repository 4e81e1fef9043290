"""Records in the formats users already have, turned into examples, with file:line for every bad one.

Accepted record formats (``data.format``; ``auto`` detects each record's format):
- ``prompt_response``: ``{"prompt": ..., "response": ..., "system"?: ...}``
- ``prompt_completion`` (TRL): ``{"prompt": str, "completion": str}`` or conversational
  ``{"prompt": [messages], "completion": [messages]}``
- ``alpaca``: ``{"instruction": ..., "input"?: ..., "output": ..., "system"?: ...}``
- ``chat``: ``{"messages": [{"role": "system"|"user"|"assistant", "content": ...}, ...]}``
- ``sharegpt``: ``{"conversations": [{"from": "system"|"human"|"gpt", "value": ...}, ...], "system"?: ...}``
  (``user``/``assistant`` roles are accepted too)
A conversation ends with an assistant turn (the response); earlier turns are context, trained or not
according to ``data.train_on``. ``data.fields`` renames every key, message keys included.
Where the rows come from (files, folders, hub ids, compression, encodings): :mod:`neurosym.data.readers`.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Optional

from neurosym.data.errors import DataError
from neurosym.data.readers import iter_rows, source_name

log = logging.getLogger(__name__)
__all__ = ["DataError", "Example", "LoadReport", "TrainSet", "check_text", "detect_format", "load_examples", "load_splits",
           "parse_record"]


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


FORMATS = ("prompt_response", "prompt_completion", "alpaca", "chat", "sharegpt")
_ROLES = {"system": "system", "user": "user", "human": "user", "assistant": "assistant", "gpt": "assistant",
          "model": "assistant"}


def detect_format(record: dict, fields) -> Optional[str]:
    if fields.messages in record:
        return "chat"
    if fields.conversations in record:
        return "sharegpt"
    if fields.instruction in record and fields.output in record:
        return "alpaca"
    if fields.prompt in record and fields.completion in record:
        return "prompt_completion"
    if fields.prompt in record and fields.response in record:
        return "prompt_response"
    return None


def check_text(value: str, what: str) -> str:
    """Strings a tokenizer cannot take (a lone surrogate from a ``\\ud800`` escape) are refused here,
    at load time, instead of crashing the tokenizer mid-run."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise DataError(f"{what} holds a lone surrogate {value[exc.start]!r} at character {exc.start} "
                        f"(an unpaired \\\\uD8xx escape): not text a tokenizer can encode") from None
    return value


def _text(record: dict, key: str, required: bool = True) -> Optional[str]:
    if key not in record or record[key] is None:
        if required:
            raise DataError(f"missing field `{key}`")
        return None
    value = record[key]
    if not isinstance(value, str):
        raise DataError(f"field `{key}` must be a string, got {type(value).__name__}")
    return check_text(value, f"field `{key}`")


def _messages(value, key: str, fields, sharegpt: bool) -> list[tuple[str, str]]:
    """A list of messages as (role, content) pairs; either key convention (role/content or
    from/value) is read unless ``data.fields.role``/``content`` name the keys."""
    if not isinstance(value, list) or not value:
        raise DataError(f"field `{key}` must be a non-empty list of messages")
    role_keys = [fields.role] if fields.role else (["from", "role"] if sharegpt else ["role", "from"])
    content_keys = [fields.content] if fields.content else (["value", "content"] if sharegpt else ["content", "value"])
    pairs = []
    for i, m in enumerate(value):
        if not isinstance(m, dict):
            raise DataError(f"`{key}` message {i} must be an object, got {type(m).__name__}")
        rk = next((k for k in role_keys if k in m), None)
        ck = next((k for k in content_keys if k in m), None)
        if rk is None or ck is None:
            raise DataError(f"`{key}` message {i} needs a role key ({'/'.join(role_keys)}) and a text key "
                            f"({'/'.join(content_keys)}); has {sorted(m)}. Map yours with data.fields.role/content")
        role = _ROLES.get(m[rk]) if isinstance(m[rk], str) else None
        if role is None:
            raise DataError(f"`{key}` message {i}: role {m[rk]!r} is not supported (system, user/human, "
                            f"assistant/gpt); tool and function turns cannot be trained here")
        if not isinstance(m[ck], str):
            raise DataError(f"`{key}` message {i}: `{ck}` must be a string, got {type(m[ck]).__name__}")
        if role == "system" and i != 0:
            raise DataError(f"`{key}` message {i}: a system message is only allowed first")
        pairs.append((role, check_text(m[ck], f"`{key}` message {i}")))
    return pairs


def _conversation(pairs: list, system: Optional[str]):
    """Split a conversation into (system, context, response); the response is the last assistant turn."""
    if pairs and pairs[0][0] == "system":
        if system is not None:
            raise DataError("a system message in the conversation and a separate system field: keep one")
        system, pairs = pairs[0][1], pairs[1:]
    if not pairs or pairs[-1][0] != "assistant":
        raise DataError("a conversation must end with an assistant message (the trained response)")
    context = pairs[:-1]
    if not context or context[-1][0] != "user":
        raise DataError("the assistant response must follow a user message")
    for (a, _), (b, _) in zip(context, context[1:]):
        if a == b:
            raise DataError(f"two {a} messages in a row: turns must alternate user/assistant")
    return system, context, pairs[-1][1]


def parse_record(record, fmt: str, fields, source: str) -> Example:
    if not isinstance(record, dict):
        raise DataError(f"expected a JSON object, got {type(record).__name__}")
    if fmt == "auto":
        fmt = detect_format(record, fields) or ""
        if not fmt:
            raise DataError(
                f"cannot tell the format of this record (keys: {sorted(record)}); expected prompt/response, "
                f"prompt/completion (TRL), instruction/output (alpaca), messages (chat) or conversations "
                f"(ShareGPT). Set data.format and data.fields to map your field names.")
    system = None
    if fmt in ("prompt_response", "prompt_completion") and isinstance(record.get(fields.prompt), list):
        if fmt == "prompt_response":
            raise DataError(f"field `{fields.prompt}` is a list of messages: use format prompt_completion")
        pairs = _messages(record[fields.prompt], fields.prompt, fields, sharegpt=False)
        completion = record.get(fields.completion)
        if isinstance(completion, str):
            pairs.append(("assistant", check_text(completion, f"field `{fields.completion}`")))
        else:
            done = _messages(completion, fields.completion, fields, sharegpt=False)
            if [r for r, _ in done] != ["assistant"]:
                raise DataError(f"field `{fields.completion}` must be one assistant message")
            pairs += done
        system, messages, response = _conversation(pairs, None)
    elif fmt in ("prompt_response", "prompt_completion"):
        key = fields.response if fmt == "prompt_response" else fields.completion
        prompt, response = _text(record, fields.prompt), _text(record, key)
        system = _text(record, fields.system, required=False)
        messages = [("user", prompt)]
    elif fmt == "alpaca":
        instruction, response = _text(record, fields.instruction), _text(record, fields.output)
        extra = _text(record, fields.input, required=False)
        prompt = instruction + (f"\n\n{extra}" if extra else "")
        system = _text(record, fields.system, required=False)
        messages = [("user", prompt)]
    elif fmt in ("chat", "sharegpt"):
        key = fields.messages if fmt == "chat" else fields.conversations
        pairs = _messages(record.get(key), key, fields, sharegpt=fmt == "sharegpt")
        system, messages, response = _conversation(pairs, _text(record, fields.system, required=False))
    else:  # pragma: no cover - guarded by the config schema
        raise DataError(f"unknown format {fmt!r}")
    if not response.strip():
        raise DataError("empty response")
    if not messages[-1][1].strip():
        raise DataError("empty prompt")
    full = ((("system", system),) if system is not None else ()) + tuple(messages)
    return Example(full, response, source, {"format": fmt})


class TrainSet(list):
    """The examples of one split, concatenated over its sources; ``parts`` says which slice came from
    which source and with which mixing weight (the batch source samples by these weights)."""

    def __init__(self, examples=(), parts=()):
        super().__init__(examples)
        self.parts: list[tuple[int, int, float, str]] = list(parts)  # (start, stop, weight, name)


@dataclass
class LoadReport:
    path: str
    loaded: int = 0
    skipped: int = 0
    formats: dict = field(default_factory=dict)
    errors: list = field(default_factory=list)  # first few "file:line: reason" strings
    sources: list = field(default_factory=list)  # per source: {path, loaded, skipped, weight}


SKIP_HINT = "(set data.on_error: skip to skip bad lines and count them)"


def _load_one(src, on_error: str, report: LoadReport) -> list[Example]:
    """The examples of one source. ``raise``: its first bad record raises (file:line); the caller
    reads on the other sources to report theirs in the same message."""
    examples, skipped = [], 0
    for loc, raw in iter_rows(src):
        if raw is None:  # blank line
            continue
        try:
            if isinstance(raw, DataError):
                raise raw
            ex = parse_record(raw, src.format, src.fields, loc)
        except DataError as exc:
            msg = f"{loc}: {exc}"
            if on_error == "raise":
                # each source may carry its own format/fields; data.format/data.fields are only the default
                named = (f"\n  (read as format: {src.format}; a source takes its own format and fields, e.g. "
                         f"data.eval: {{path: ..., format: auto}}, data.format being only the default)"
                         if src.format != "auto" else "")
                raise _BadRecord(msg + named) from None
            skipped += 1
            if len(report.errors) < 20:
                report.errors.append(msg)
            log.warning("skipping %s", msg)
            continue
        kind = ex.meta["format"]
        report.formats[kind] = report.formats.get(kind, 0) + 1
        examples.append(ex)
    report.skipped += skipped
    report.sources.append({"path": source_name(src), "loaded": len(examples), "skipped": skipped, "weight": src.weight})
    if not examples:
        first = next((e for e in report.errors if e.startswith(str(src.path))), None)
        raise DataError(f"{source_name(src)}: no usable examples ({skipped} skipped)"
                        + (f"; first: {first}" if first else ""))
    return examples


class _BadRecord(DataError):
    """A bad record under ``on_error: raise`` (the skip hint is added once, to the whole message)."""


def load_examples(spec, data_cfg, on_error: Optional[str] = None) -> tuple[TrainSet, LoadReport]:
    """Parse every record of a split: a path, a ``DataSource`` or a list of them (``data.train``).

    ``on_error=raise`` stops each source at its first bad record (file:line); ``skip`` skips and counts
    it. Every source is read, and one :class:`DataError` names every bad one (not the first per run).
    `validate`, `preview`, `train` and `eval` all read through here, so they agree on what is usable.
    """
    out, report, bad, records = _read_split(spec, data_cfg, on_error)
    _raise_bad(bad, records)
    return out, report


def _read_split(spec, data_cfg, on_error: Optional[str]):
    """(examples, report, messages of the bad sources, whether a bad record is among them)."""
    on_error = on_error or data_cfg.on_error
    sources = data_cfg.resolve(spec)
    report = LoadReport(", ".join(source_name(s) for s in sources))
    out = TrainSet()
    bad, records = [], False
    for src in sources:
        start = len(out)
        try:
            out.extend(_load_one(src, on_error, report))
        except DataError as exc:
            bad.append(str(exc))
            records = records or isinstance(exc, _BadRecord)
            continue
        out.parts.append((start, len(out), src.weight, source_name(src)))
    report.loaded = len(out)
    return out, report, bad, records


def _raise_bad(bad: list[str], records: bool) -> None:
    if bad:
        raise DataError("\n".join(bad) + (f"\n  {SKIP_HINT}" if records else ""))


SPLITS = ("train", "eval")


def load_splits(data_cfg, on_error: Optional[str] = None) -> dict[str, tuple[TrainSet, LoadReport]]:
    """``data.train`` and ``data.eval`` (when set) read as :func:`load_examples` reads each: ``{split:
    (examples, report)}``. Both splits are read before anything is raised, so one :class:`DataError`
    names every bad source of the job. ``neurosym validate`` and the Run read through here, so what
    validate accepts is what training loads."""
    loaded, bad, records = {}, [], False
    for split in SPLITS:
        spec = getattr(data_cfg, split)
        if spec:
            out, report, errors, bad_record = _read_split(spec, data_cfg, on_error)
            loaded[split] = (out, report)
            bad, records = bad + errors, records or bad_record   # file:line first, as train says it
    _raise_bad(bad, records)
    return loaded

"""The system prompt's history: every version, the step it appeared at, and how the eval loss did under it.

Versions come from the newest complete checkpoint's ``state.json`` (``components.prompts.versions``)
and from the ``prompt`` records of ``events.jsonl`` (which may run past the newest checkpoint); when
neither has version 0, it is the config's ``data.system_prompt`` at step 0. A version's eval score is
the last ``eval_loss`` recorded while it was current: an eval record's ``prompt_version`` when it has
one, else the version whose step range ``[step, next version's step)`` holds the eval's step.
"""
from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Optional

from neurosym.observe.events import read_events
from neurosym.persist.checkpoint import STATE_FILE, latest_checkpoint
from neurosym.persist.rundir import RunDir


# C0/C1 controls (ESC, CR, BEL, backspace...), DEL, and the Unicode format characters that reorder or
# hide text on a terminal (bidi overrides and isolates, zero-width joiners, BOM). Newline and tab stay.
_UNSAFE = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u200b-\u200f\u2028-\u202e\u2060-\u206f\ufeff\ufff9-\ufffb]")


def terminal_safe(text: Optional[str]) -> str:
    """``text`` as it may be printed to a terminal: every control or invisible formatting character
    shown as an escape (``\\x1b``, ``\\u202e``), so what a teacher wrote cannot move the cursor,
    recolour or hide text. Teacher-written prompts are untrusted: print them through this."""
    if text is None:
        return ""

    def esc(m: re.Match) -> str:
        c = ord(m.group())
        return f"\\x{c:02x}" if c < 0x100 else f"\\u{c:04x}"

    out = _UNSAFE.sub(esc, str(text))
    # a lone surrogate (possible in JSON text) cannot be encoded for the terminal: escaped too
    return "".join(f"\\u{ord(ch):04x}" if 0xD800 <= ord(ch) <= 0xDFFF else ch for ch in out)


def _num(value) -> Optional[float]:
    """A finite float, or ``None`` (events store non-finite floats as strings like ``"nan"``)."""
    if value is None or isinstance(value, bool):
        return None
    try:
        x = float(value)
    except (TypeError, ValueError):
        return None
    return x if math.isfinite(x) else None


def _int(value) -> Optional[int]:
    if value is None or isinstance(value, bool):
        return None
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def run_events(run_dir: Path) -> list[dict]:
    """The records of ``run_dir/events.jsonl`` (empty when there is none yet)."""
    path = RunDir(run_dir).events
    return [e for e in read_events(path) if isinstance(e, dict)] if path.exists() else []


def _state_prompts(run_dir: Path, ckpt: Optional[Path] = None) -> tuple[list[dict], Optional[str]]:
    ckpt = latest_checkpoint(Path(run_dir)) if ckpt is None else Path(ckpt)
    if ckpt is None or not (ckpt / STATE_FILE).exists():
        return [], None
    try:
        state = json.loads((ckpt / STATE_FILE).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return [], None
    prompts = (state.get("components") or {}).get("prompts") or {}
    versions = [v for v in prompts.get("versions") or [] if isinstance(v, dict)]
    return versions, prompts.get("current")


def _config_prompt(run_dir: Path) -> Optional[str]:
    path = RunDir(run_dir).config
    if not path.exists():
        return None
    try:
        from neurosym.config.schema import load_config
        return load_config(path, check_files=False).data.system_prompt
    except Exception:  # a config that no longer validates must not hide the history
        return None


def prompt_versions(run_dir: Path, events: Optional[list[dict]] = None) -> list[dict]:
    """``[{"version", "step", "text"}]`` by version, merged from state.json, events and the config."""
    run_dir = Path(run_dir)
    events = run_events(run_dir) if events is None else events
    found: dict[int, dict] = {}
    state_versions, _ = _state_prompts(run_dir)
    prompt_events = [e for e in events if e.get("kind") == "prompt"]
    for rec in state_versions + prompt_events:  # events last: they may be newer than the checkpoint
        version = _int(rec.get("version"))
        if version is None:
            continue
        found[version] = {"version": version, "step": _int(rec.get("step")) or 0,
                          "text": rec.get("text") if isinstance(rec.get("text"), str) else ""}
    if 0 not in found:
        text = _config_prompt(run_dir)
        if text is not None:
            found[0] = {"version": 0, "step": 0, "text": text}
    return [found[v] for v in sorted(found)]


def prompt_history(run_dir: str | Path) -> list[dict]:
    """Every system-prompt version of the run, oldest first, as dicts with

    ``version``, ``step`` (when it became current), ``text``, ``eval_loss`` (the last eval loss
    recorded while it was current, or ``None``), ``n_evals`` (eval points under it), ``train_steps``
    (train records under it, when they carry ``prompt_version``) and ``current`` (the newest version).
    """
    run_dir = Path(run_dir)
    events = run_events(run_dir)
    versions = prompt_versions(run_dir, events)
    if not versions:
        return []
    starts = [(v["step"], v["version"]) for v in versions]

    def version_at(step: int) -> int:
        current = versions[0]["version"]
        for start, version in starts:
            if start <= step:
                current = version
        return current

    by_version = {v["version"]: {**v, "eval_loss": None, "n_evals": 0, "train_steps": 0, "current": False}
                  for v in versions}
    for e in sorted((e for e in events if e.get("kind") in ("eval", "train")), key=lambda e: _int(e.get("step")) or 0):
        version = _int(e.get("prompt_version"))
        if version is None:
            version = version_at(_int(e.get("step")) or 0)
        row = by_version.get(version)
        if row is None:
            continue
        if e["kind"] == "train":
            row["train_steps"] += 1
            continue
        loss = _num(e.get("eval_loss"))
        if loss is not None:
            row["eval_loss"] = loss
            row["n_evals"] += 1
    out = [by_version[v["version"]] for v in versions]
    out[-1]["current"] = True
    return out


def learned_prompt(run_dir: str | Path, checkpoint: str | Path | None = None) -> Optional[str]:
    """The system prompt the run learned: the one current in ``checkpoint`` (a ``step-N`` folder;
    default the newest complete one), which is the prompt its adapter was trained under. A run with
    no checkpoint yet gives its newest recorded version (events, else ``data.system_prompt``).
    ``None`` when the run has no system prompt at all."""
    run_dir = Path(run_dir)
    ckpt = Path(checkpoint) if checkpoint is not None else latest_checkpoint(run_dir)
    if ckpt is not None and (ckpt / STATE_FILE).exists():
        try:
            state = json.loads((ckpt / STATE_FILE).read_text(encoding="utf-8"))
            prompts = (state.get("components") or {}).get("prompts")
        except (OSError, ValueError, AttributeError):
            prompts = None
        if isinstance(prompts, dict) and "current" in prompts:
            current = prompts["current"]
            return current if isinstance(current, str) and current.strip() else None
    versions = prompt_versions(run_dir)
    text = versions[-1]["text"] if versions else None
    return text if isinstance(text, str) and text.strip() else None


def data_system_summary(examples) -> dict:
    """What system messages the training rows carried themselves: how many rows, how many with their
    own system message, how many distinct ones, and the first of them."""
    own = [ex.system for ex in examples if ex.system is not None]
    distinct = list(dict.fromkeys(own))
    return {"rows": len(examples), "with_system": len(own), "distinct": len(distinct),
            "first": distinct[0] if distinct else None}


def _fenced(text: str) -> str:
    fence = "```"
    while fence in text:
        fence += "`"
    return f"{fence}text\n{text}\n{fence}\n"


def learned_prompt_card(text: Optional[str], data: Optional[dict] = None) -> str:
    """A Markdown section stating the system prompt(s) the adapter was trained under, for a model card
    (README.md of a PEFT adapter or a merged model): the learned one (which a row with its own system
    message does not get: the row keeps its own) and what the data carried (``data``:
    :func:`data_system_summary` of the training rows; None when unknown)."""
    rows, own = (data or {}).get("rows", 0), (data or {}).get("with_system", 0)
    carried = ""
    if own:
        share = "Every training row" if own == rows else f"{own} of {rows} training rows"
        if data.get("distinct") == 1:
            carried = (f"{share} carried its own system message, the same in each; "
                       f"{'they were' if own == rows else 'those rows were'} trained under it:\n\n"
                       + _fenced(data["first"]) + "\n")
        else:
            carried = (f"{share} carried its own system message ({data['distinct']} different ones); each such "
                       f"row was trained under its own: give a request the system message its kind of data "
                       f"carries.\n\n")
    if not text:
        if own == rows and rows:
            return "## System prompt\n\nNo task system prompt was set or learned. " + carried
        rest = (f"The other {rows - own} rows were trained without a system prompt."
                if own else "This run trained without a system prompt; use none at inference.")
        return "## System prompt\n\n" + carried + rest + "\n"
    if own == rows and rows:
        return ("## System prompt\n\n" + carried + "The task system prompt below (`system_prompt.txt`) was set "
                "but reached no training row, since each kept its own:\n\n" + _fenced(text))
    where = f" (the {rows - own} rows without their own)" if own else ""
    return ("## System prompt\n\n" + carried +
            f"This adapter was trained{where} under the system prompt below (learned by neurosym's symbolic "
            "route); give it as the system message at inference. `system_prompt.txt` holds the same text.\n\n"
            + _fenced(text))


def format_prompt_history(history: list[dict], width: int = 100) -> str:
    """The history as text: one header line per version, then its prompt indented."""
    if not history:
        return "no system prompt: data.system_prompt is not set and no rewrite was accepted"
    lines = []
    for row in history:
        score = (f"eval loss {row['eval_loss']:.4f} ({row['n_evals']} eval{'s' if row['n_evals'] != 1 else ''})"
                 if row.get("eval_loss") is not None else "no eval")
        mark = "  [current]" if row.get("current") else ""
        lines.append(f"v{row['version']:<3} step {row['step']:<6} {score}{mark}")
        text = terminal_safe(row.get("text") or "")
        for para in (text.splitlines() or [""]):
            while len(para) > width:
                cut = para.rfind(" ", 0, width)
                cut = cut if cut > 0 else width
                lines.append("     " + para[:cut])
                para = para[cut:].lstrip()
            lines.append(("     " + para).rstrip())
        lines.append("")
    return "\n".join(lines).rstrip("\n")


__all__ = ["prompt_history", "prompt_versions", "format_prompt_history", "run_events", "learned_prompt",
           "learned_prompt_card", "data_system_summary", "terminal_safe"]

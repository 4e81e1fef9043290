"""Checks a rewritten prompt must pass before it becomes a training example.

:func:`check_rewrite` returns the reason a rewrite is refused, or ``None`` when it is accepted:

* ``empty``: nothing but whitespace;
* ``too_long``: more than ``max_chars`` characters;
* ``duplicate``: equal, after whitespace/case normalisation (:func:`prompt_key`), to the parent's
  prompt or to a prompt in ``seen``;
* ``answer_leak``: the reference answer appears in the new prompt but not in the parent's prompt.
  Two tests, either one is a leak: the whole reference (normalised, case-insensitive, on word
  boundaries); and, when the reference ends in a number (``"... #### 46"``, ``"46."``), that number
  as a number token of the new prompt (``46`` matches ``46``, ``46.0`` and ``1e1`` style values equal
  to it, never ``146``, ``4.6`` or ``460``).

Pure functions; no I/O.
"""
from __future__ import annotations

import re
from typing import Iterable, Optional

REASONS = ("empty", "too_long", "duplicate", "answer_leak")

_WS = re.compile(r"\s+")
# A number token: integers with optional thousands separators, decimals, scientific notation.
# Not preceded by a word character or a dot/digit (so "146" is one token and "x46" none).
_NUMBER = re.compile(r"(?<![\w.])[-+]?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?:[eE][-+]?\d+)?(?![\w]|\.\d)")
_TRAILING = re.compile(r"[\s.!?;:,)\]}\"'*`$%]*\Z")


def prompt_key(text: str) -> str:
    """The normalised form prompts are compared in: whitespace runs collapsed, stripped, casefolded."""
    return _WS.sub(" ", str(text)).strip().casefold()


def _numbers(text: str) -> set[float]:
    out = set()
    for m in _NUMBER.finditer(text):
        try:
            out.add(abs(float(m.group(0).replace(",", ""))))
        except ValueError:  # pragma: no cover - the pattern only matches float-parsable text
            pass
    return out


def final_number(reference: str) -> Optional[float]:
    """The number the reference ends with (trailing punctuation allowed), else ``None``."""
    text = str(reference)
    last = None
    for m in _NUMBER.finditer(text):
        last = m
    if last is None or not _TRAILING.fullmatch(text[last.end():]):
        return None
    try:
        return abs(float(last.group(0).replace(",", "")))
    except ValueError:  # pragma: no cover
        return None


def _contains_phrase(haystack: str, needle: str) -> bool:
    """``needle`` in ``haystack`` after normalisation, not inside a longer word or number."""
    needle = prompt_key(needle)
    if not needle:
        return False
    pattern = r"(?<![\w.])" + re.escape(needle) + r"(?![\w]|[.,]\d)"
    return re.search(pattern, prompt_key(haystack)) is not None


def leaks_answer(new_prompt: str, reference: str, original: str = "", check_number: bool = True) -> bool:
    """True when ``reference`` (or, with ``check_number``, its final number) shows in ``new_prompt``
    but not in ``original``."""
    if _contains_phrase(new_prompt, reference) and not _contains_phrase(original, reference):
        return True
    number = final_number(reference) if check_number else None
    if number is not None and number in _numbers(new_prompt) and number not in _numbers(original):
        return True
    return False


def is_duplicate(new_prompt: str, seen: Iterable[str], *others: str) -> bool:
    """``new_prompt`` equals (after :func:`prompt_key`) one of ``others`` or of ``seen``.

    ``seen`` may hold raw prompts or keys already normalised by :func:`prompt_key` (a key is found
    by a membership test, a raw prompt by a scan of a snapshot, so another thread may add to it).
    """
    key = prompt_key(new_prompt)
    if any(key == prompt_key(o) for o in others):
        return True
    if hasattr(seen, "__contains__") and (key in seen or new_prompt in seen):
        return True
    return any(key == prompt_key(s) for s in list(seen))


def check_rewrite(new_prompt: Optional[str], parent, seen: Iterable[str], max_chars: int) -> Optional[str]:
    """The reason to refuse ``new_prompt`` as a rewrite of ``parent`` (an :class:`Example`), or ``None``.

    Checked in order: ``empty``, ``too_long``, ``duplicate``, ``answer_leak``.
    """
    if new_prompt is None or not str(new_prompt).strip():
        return "empty"
    if len(new_prompt) > max_chars:
        return "too_long"
    if is_duplicate(new_prompt, seen, parent.prompt):
        return "duplicate"
    if leaks_answer(new_prompt, parent.response, parent.prompt):
        return "answer_leak"
    return None


__all__ = ["REASONS", "check_rewrite", "prompt_key", "leaks_answer", "is_duplicate", "final_number"]

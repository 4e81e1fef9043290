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
  to it, never ``146``, ``4.6`` or ``460``);
* ``lost_facts``: a number or a named entity of the parent's prompt is missing from the rewrite
  (:func:`missing_facts`). A rewrite keeps the question: "Read the question slowly and do the
  arithmetic step by step." is no rewrite of "What is 12 plus 5?".

Pure functions; no I/O.
"""
from __future__ import annotations

import re
from typing import Iterable, Optional

REASONS = ("empty", "too_long", "duplicate", "answer_leak", "lost_facts")

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


_NUMBER_WORDS = {w: float(i) for i, w in enumerate(
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen "
    "seventeen eighteen nineteen twenty".split())}
_NUMBER_WORDS.update({w: float(10 * i) for i, w in enumerate("thirty forty fifty sixty seventy eighty ninety".split(), 3)})
_NUMBER_WORDS.update({"hundred": 100.0, "thousand": 1000.0, "dozen": 12.0, "half": 0.5, "twice": 2.0, "double": 2.0})
_WORD = re.compile(r"[^\W\d_][\w'’-]*")
# Capitalised words that are not names: sentence starters, question words, pronouns, units, months
# are names in a question ("in April") and so are kept, but these are grammar.
_NOT_NAMES = frozenset("""
a an the i if in on at of for to by from with without as and or but so then than that this these those
there here it its it's he she they we you his her their our your my me him them us who whom whose which what
when where why how is are was were be been being do does did can could will would shall should may might must
has have had not no yes each every all any some both either neither one two three four five six seven eight
nine ten after before during while until since because although though suppose assume let given find
compute calculate solve answer write give show explain consider determine evaluate simplify round express
use using please question problem step note q a what's how's let's mr mrs ms dr st
""".split())


def _word_set(text: str) -> set[str]:
    return {w.strip("'’-").casefold() for w in _WORD.findall(text)}


def named_entities(text: str) -> list[str]:
    """Capitalised words of ``text`` that look like names (people, places, products, months), in
    order. Inside a sentence any capitalised word but grammar (see ``_NOT_NAMES``) counts; the first
    word of a sentence ("Yesterday, ...") counts only when the text names it again."""
    text = str(text)
    found: list[tuple[str, bool]] = []   # (word, starts a sentence)
    for m in _WORD.finditer(text):
        w = re.sub(r"['’]s$", "", m.group(0).strip("'’-"))
        before = text[:m.start()].rstrip(" \t\"'“(")
        initial = before == "" or before[-1] in ".!?:\n"
        found.append((w, initial))
    counts: dict[str, int] = {}
    for w, _ in found:
        counts[w] = counts.get(w, 0) + 1
    out: list[str] = []
    for w, initial in found:
        if len(w) < 2 or not w[0].isupper() or w.casefold() in _NOT_NAMES or w in out:
            continue
        if initial and counts[w] < 2:
            continue
        out.append(w)
    return out


def missing_facts(new_prompt: str, original: str) -> list[str]:
    """The numbers and named entities of ``original`` that ``new_prompt`` does not keep.

    A number is kept when the rewrite has a number token of the same value (``1,200`` = ``1200``)
    or spells it (``five``, ``twelve``, ``dozen``); a name when the rewrite has the word
    (case-insensitive, a possessive ``Natalia's`` counts)."""
    new_numbers = _numbers(new_prompt) | {v for w, v in _NUMBER_WORDS.items() if w in _word_set(new_prompt)}
    missing = []
    for m in _NUMBER.finditer(str(original)):
        try:
            value = abs(float(m.group(0).replace(",", "")))
        except ValueError:  # pragma: no cover
            continue
        if value not in new_numbers and m.group(0) not in missing:
            missing.append(m.group(0))
    words = _word_set(new_prompt) | {re.sub(r"['’]s$", "", w) for w in _word_set(new_prompt)}
    missing += [name for name in named_entities(original) if name.casefold() not in words]
    return missing


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

    Checked in order: ``empty``, ``too_long``, ``duplicate``, ``answer_leak``, ``lost_facts``.
    """
    if new_prompt is None or not str(new_prompt).strip():
        return "empty"
    if len(new_prompt) > max_chars:
        return "too_long"
    if is_duplicate(new_prompt, seen, parent.prompt):
        return "duplicate"
    if leaks_answer(new_prompt, parent.response, parent.prompt):
        return "answer_leak"
    if missing_facts(new_prompt, parent.prompt):
        return "lost_facts"
    return None


__all__ = ["REASONS", "check_rewrite", "prompt_key", "leaks_answer", "is_duplicate", "final_number",
           "missing_facts", "named_entities"]

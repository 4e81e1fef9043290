"""The testbed's simulated teacher: a ``teacher.provider: python`` callable that reads the prompts
TextGrad and neurosym send and answers them like a careful LLM would in this world.

    teacher:
      provider: python
      callable: experiments.testbed.teacher:simulated
      model: simulated?noise=0.3&seed=1      # noise: share of evaluations with a wrong or no diagnosis

What it knows is what any capable LLM knows: the format instructions of this world (the operator
phrases in :mod:`world`) and how to compare two strings. It never reads the world's entity tables, the
hidden error type or any file: every answer is a function of the messages it is sent (and of the noise
seed), which is also why the response cache can replay it.

* **evaluation** (neurosym's batched evaluation, ``EVAL_SYSTEM``): one ``ROW n: verdict - feedback`` line
  per row, comparing the student's answer with the reference. Equal: ``correct``. Same value once case,
  whitespace, punctuation and separators are normalised (or reversed), different format: ``form``, naming
  each missing (or unwanted) instruction. Different value: ``content``, "NEEDS NEW KNOWLEDGE" (no prompt
  can supply a fact the student never saw).
* **backward** (TextGrad's gradient prompts, if asked): passes the diagnoses found in the context on.
* **optimizer** (``TGD``): adds the instructions most feedback asks for to the system prompt (in the
  order the student learned them), removes unwanted ones, and answers between the optimizer's tags.
* **example rewrite** (neurosym's ``REWRITE_SYSTEM``, one request for several rows): appends each row's
  missing instructions to its question; for a knowledge error it declines (``NO_REWRITE``), since
  rewording cannot teach a fact; a row it sees no fix for gets no reply.

With ``noise=p``, a row's evaluation is replaced, with probability ``p`` (decided by a hash of that row
and the seed, so not by the rest of the batch), by a wrong diagnosis (``form`` with an instruction that
is not missing) or by no diagnosis (a line without a verdict).
"""
from __future__ import annotations

import hashlib
import random
import re
from collections import Counter
from urllib.parse import parse_qs, urlsplit

try:  # imported as experiments.testbed.teacher (teacher.callable) or as a top-level module (scripts)
    from .world import INSTRUCTION, OP_ORDER
except ImportError:  # pragma: no cover - script use
    from world import INSTRUCTION, OP_ORDER  # type: ignore

REWRITE_SYSTEM_START = "You rewrite training questions for a small student language model"
EVAL_START = "You evaluate a student language model's answers"
MISSING = 'Missing instruction: "{}"'
UNWANTED = 'Unwanted instruction: "{}"'
KNOWLEDGE = "NEEDS NEW KNOWLEDGE"
PHRASE_TO_OP = {v: k for k, v in INSTRUCTION.items()}
_MISSING_RE = re.compile(r'Missing instruction: "([^"]+)"')
_UNWANTED_RE = re.compile(r'Unwanted instruction: "([^"]+)"')


def _tag(text: str, name: str) -> str | None:
    m = re.search(rf"<{name}>(.*?)</{name}>", text, re.S)
    return m.group(1).strip() if m else None


def settings(model: str) -> tuple[float, int]:
    """(noise, seed) from a model string such as ``simulated?noise=0.3&seed=1``."""
    q = parse_qs(urlsplit(model or "").query)
    return float(q.get("noise", ["0"])[0]), int(q.get("seed", ["0"])[0])


# ---- reading answers ------------------------------------------------------------------------------
def features(text: str) -> tuple[set, str]:
    """(format operators visible in ``text``, the bare value)."""
    s, ops = text.strip(), set()
    if s.endswith("!"):
        ops.add("exclaim"); s = s[:-1]
    if len(s) >= 2 and s[0] == "[" and s[-1] == "]":
        ops.add("bracket"); s = s[1:-1]
    if len(s) >= 2 and s[0] == '"' and s[-1] == '"':
        ops.add("quote"); s = s[1:-1]
    m = re.fullmatch(r"(city|colour|number): (.*)", s, re.S | re.I)
    if m:
        ops.add("prefix"); s = m.group(2)
    if "_" in s:
        ops.add("underscore")
    if any(c.isalpha() for c in s) and s == s.upper():
        ops.add("upper")
    return ops, s


def _canon(value: str) -> str:
    """Case, whitespace, punctuation and separators normalised away."""
    return " ".join(re.sub(r"[\W_]+", " ", value.lower()).split())


def _reads(text: str) -> int:
    """1 if ``text`` reads forward (it starts with a capital: ``Lowen Bay``, ``LOWEN_BAY``), -1 if it is a
    capitalised name written backwards (``yaB newoL``), 0 if its case does not tell (``sea green``, ``42``)."""
    letters = [c for c in text if c.isalpha()]
    if not letters:
        return 0
    if letters[0].islower() and letters[-1].isupper():
        return -1
    return 1 if letters[0].isupper() else 0


def diagnose(answer: str, reference: str, asked: frozenset = frozenset()) -> tuple[str, list[str], list[str]]:
    """("correct"|"format"|"knowledge", missing operators, unwanted operators). ``asked``: the
    operators the student's system prompt asks for. When one string is the other reversed, the
    reversed one is the one that reads less forward (:func:`_reads`); when their case does not tell
    (lower-case words), the reference if the prompt did not ask for reversal, else the answer; for
    digits alone, the answer."""
    if answer.strip() == reference.strip():
        return "correct", [], []
    a_ops, a_val = features(answer)
    r_ops, r_val = features(reference)
    if _canon(a_val) == _canon(r_val):
        pass
    elif _canon(a_val)[::-1] == _canon(r_val) and _canon(a_val):
        a_reads, r_reads = _reads(a_val), _reads(r_val)
        letters = any(c.isalpha() for c in a_val)
        if a_reads > r_reads or (a_reads == r_reads and letters and "reverse" not in asked):
            r_ops = r_ops | {"reverse"}   # the reference is written backwards: the instruction is missing
        else:
            a_ops = a_ops | {"reverse"}   # the answer is: the instruction is unwanted
    else:
        return "knowledge", [], []
    missing = [o for o in OP_ORDER if o in r_ops - a_ops]
    unwanted = [o for o in OP_ORDER if o in a_ops - r_ops]
    if not missing and not unwanted:  # e.g. different spacing: call it a format slip without a fix
        return "format", [], []
    return "format", missing, unwanted


# ---- the four kinds of request --------------------------------------------------------------------
ROW_RE = re.compile(r"<ROW (\d+)>\s*<QUESTION>(.*?)</QUESTION>\s*<REFERENCE_ANSWER>(.*?)</REFERENCE_ANSWER>\s*"
                    r"<STUDENT_ANSWER>(.*?)</STUDENT_ANSWER>", re.S)


def row_rng(seed: int, system: str, row: tuple) -> random.Random:
    """The noise of one row: a hash of the seed, the request's instructions and the row alone."""
    digest = hashlib.sha256("\x00".join([str(seed), system, *row]).encode()).digest()
    return random.Random(int.from_bytes(digest[:8], "big"))


def verdict(answer: str, reference: str, rng: random.Random, noise: float, asked: frozenset = frozenset()) -> str:
    """One row's ``verdict - feedback`` (or, noisy, a wrong one or none)."""
    kind, missing, unwanted = diagnose(answer, reference, asked)
    if noise and rng.random() < noise:
        if rng.random() < 0.5:
            return "The answer does not look right, but I cannot tell what went wrong."
        wrong = rng.choice([o for o in OP_ORDER if o not in missing])
        return ("form - The value is correct but the format differs from the reference answer. "
                + MISSING.format(INSTRUCTION[wrong]))
    if kind == "correct":
        return "correct - The student's answer is correct and in the same format as the reference answer."
    if kind == "knowledge":
        return (f"content - The value is wrong: the student does not know this fact. {KNOWLEDGE}: no instruction "
                "in the system prompt can supply a fact the student has never seen.")
    lines = ["form - The value is correct but the format differs from the reference answer."]
    lines += [MISSING.format(INSTRUCTION[o]) for o in missing]
    lines += [UNWANTED.format(INSTRUCTION[o]) for o in unwanted]
    return " ".join(lines)


def evaluate(system: str, user: str, seed: int, noise: float) -> str:
    """The batched evaluation: one ``ROW n: ...`` line per row."""
    prompt = _tag(user, "SYSTEM_PROMPT") or ""
    asked = frozenset(o for o, phrase in INSTRUCTION.items() if phrase in prompt)
    return "\n".join(f"ROW {n}: " + verdict(a.strip(), r.strip(), row_rng(seed, system, (q, r, a)), noise, asked)
                     for n, q, r, a in ROW_RE.findall(user))


def feedback(text: str) -> str:
    """Backward: pass on the diagnoses found in the context."""
    missing, unwanted = _MISSING_RE.findall(text), _UNWANTED_RE.findall(text)
    out = []
    for phrase in dict.fromkeys(missing):
        out.append(f"Adding the instruction to the system prompt would fix the format. {MISSING.format(phrase)}")
    for phrase in dict.fromkeys(unwanted):
        out.append(f"Removing this instruction would fix the format. {UNWANTED.format(phrase)}")
    if KNOWLEDGE in text:
        out.append(f"{KNOWLEDGE}: the answer's value is wrong; a prompt edit cannot fix this, the model's "
                   "weights must learn the fact.")
    return " ".join(out) or "The answer is correct; no change is needed."


def optimize(user: str, start: str, end: str) -> str:
    """TGD: the current prompt plus the instructions most feedback asks for, minus unwanted ones."""
    current = _tag(user, "VARIABLE") or ""
    if "(...)" in current:
        current = _tag(user, "LM_SYSTEM_PROMPT") or current
    missing = Counter(p for p in _MISSING_RE.findall(user) if p in PHRASE_TO_OP)
    unwanted = Counter(p for p in _UNWANTED_RE.findall(user) if p in PHRASE_TO_OP)
    top = max([*missing.values(), *unwanted.values(), 0])
    add = {PHRASE_TO_OP[p] for p, n in missing.items() if 2 * n >= top}
    drop = {PHRASE_TO_OP[p] for p, n in unwanted.items() if 2 * n >= top}
    sentences = [s.strip() + "." for s in current.split(".") if s.strip()]
    have = {PHRASE_TO_OP[s] for s in sentences if s in PHRASE_TO_OP}
    other = [s for s in sentences if s not in PHRASE_TO_OP]
    ops = (have | add) - drop
    new = " ".join(other + [INSTRUCTION[o] for o in OP_ORDER if o in ops])
    return f"{start}{new}{end}"


REWRITE_ROW_RE = re.compile(r"<ROW (\d+)>\s*<QUESTION>(.*?)</QUESTION>.*?<EVALUATION>(.*?)</EVALUATION>", re.S)


def rewrite(user: str) -> str:
    """The batched rewrite: per row, the question plus its missing instructions, a decline for a
    knowledge error, nothing for a row it sees no fix for."""
    replies = []
    for n, question, evaluation in REWRITE_ROW_RE.findall(user):
        missing = [p for p in dict.fromkeys(_MISSING_RE.findall(evaluation)) if p in PHRASE_TO_OP]
        if KNOWLEDGE in evaluation:  # declines as neurosym's rewrite prompt asks
            body = f"NO_REWRITE. {KNOWLEDGE}: rewording the question cannot teach the student a fact it has never seen."
        elif missing:
            body = " ".join([question.strip()] + missing)
        else:
            continue
        replies.append(f"<REWRITTEN_PROMPT id={n}>{body}</REWRITTEN_PROMPT>")
    return "\n".join(replies) or "I cannot see how to make these questions clearer."


def simulated(messages: list[dict], *, model: str = "simulated", temperature: float = 0.0,
              max_tokens: int = 1024, **_: object) -> str:
    """The teacher: ``messages`` (system + user) -> reply text."""
    system = "\n".join(str(m.get("content", "")) for m in messages if m.get("role") == "system")
    user = "\n".join(str(m.get("content", "")) for m in messages if m.get("role") != "system")
    noise, seed = settings(model)
    if system.startswith(REWRITE_SYSTEM_START):
        return rewrite(user)
    if system.startswith(EVAL_START):
        return evaluate(system, user, seed, noise)
    m = re.search(r"between (\S+) \{improved variable\} (\S+) tags", system)
    if m:  # TextGrad's optimizer system prompt names its tags
        return optimize(user, m.group(1), m.group(2))
    return feedback(system + "\n" + user)


SENT: list[list[dict]] = []  # what :func:`recorded` was sent (compare.py's leak audit reads it)


def recorded(messages: list[dict], **kwargs: object) -> str:
    """:func:`simulated`, keeping a copy of every request in :data:`SENT` (same process only)."""
    SENT.append([dict(m) for m in messages])
    return simulated(messages, **kwargs)  # type: ignore[arg-type]

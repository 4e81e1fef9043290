"""The gate: a ``LogitsProcessor`` that writes a compiled network's answer when the text asks for it, and
is otherwise silent.

At every decoding step and for every row, the gate decodes the last tokens of the row (a trailing
window, grown only while an expression reaches its start) and reads what the text ends with:

* ``<expression> =`` or ``<expression> = <part of its answer>``: if the whole expression is one the
  compiled operations compute (``expr.parse_expression``: the longest expression ending at ``=``, its
  precedence, separators, and no unit, date, score or phone number around it), the gate computes it by
  composing compiled calls and forces the token that writes the next piece of the answer (β = 1).
  Anything else (``3 * 4 + 2 =`` with no multiply, ``Final score 3-2 =``) leaves the row to the LM;
* ``<expression> = <the whole answer>`` (maybe followed by ``.`` or ``,``): the number is ended: every
  token that would extend it (starts with a digit, or a separator then a digit) is forbidden, so the LM
  cannot turn ``5789`` into ``57899999``;
* ``<expression>`` with no ``=`` yet: tokens that would write ``=`` together with what follows it
  (``=-4``, ``= 5`` in SentencePiece-like vocabularies) are forbidden, so the trigger is always a
  position the gate sees. ``=`` alone, ``=`` ending a token, or ``= `` stay allowed.

Every decision is per row: a row whose expression is unsupported (too long for the compiled network,
an operator without a network) is left to the LM while the other rows are forced.

Composition with other logits processors. ``generate`` runs the processors it builds itself
(``bad_words_ids``, ``no_repeat_ngram_size``, ``repetition_penalty``, ``min_new_tokens``, ...) before
the ones passed in ``logits_processor``, and the sampling warpers after. The gate therefore sees their
bans as ``-inf`` and honours them: a forced token must be one they allow (another tokenization of the
same piece is tried first). If the first piece of an answer is banned, the gate does not start the
answer (silent). If a later piece is banned, the gate overrides the ban and warns: an answer cut in the
middle would be a wrong number, which is what the gate exists to prevent. Penalties (repetition,
length) change scores, not which token is forced, so on a forced step they have no effect. The gate
only ever adds ``-inf``: warpers and sampling after it keep exactly one candidate on a forced row.

Encoder-decoder models (T5, BART). ``generate`` shows a logits processor only the decoder's tokens, so a
trigger at the end of the encoder input (``Q: 12+5=``, the decoder starting empty) would go unseen. Give
the gate the encoder input with ``gate.set_encoder_input(input_ids, attention_mask)`` before
``generate``: while the decoder has written no ``=`` of its own, each row's text is the encoder input's
trailing text followed by what the decoder has written, so the answer is forced from the decoder's
first token and then ended like any other. Once the decoder writes an ``=``, its own text decides
alone (an expression never straddles the two). Rows expanded by ``num_beams`` or
``num_return_sequences`` map back to their encoder row.
"""
from __future__ import annotations

import re
import warnings
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Literal

import torch
from transformers import LogitsProcessor, StoppingCriteria

from neurosym.conn.errors import ConnInputError
from neurosym.conn.expr import NeedMoreText, Refused, evaluate, parse_expression
from neurosym.conn.ops import OPS, ConnOp, get_op

ANSWER_ALPHABET = set("0123456789-abcdefghijklmnopqrstuvwxyz")
_EXTENDS_DIGITS = re.compile(r"[0-9]|[.,_\u2009\u202f][0-9]")
_EXTENDS_WORD = re.compile(r"[0-9A-Za-z]|[.,_\u2009\u202f][0-9A-Za-z]")
_SPANS_TRIGGER = re.compile(r"=[^ ]|= .")


@dataclass
class GateEvent:
    """An expression the gate read: row, operation (or ``chain``), operands, answer (None: left to the LM)."""

    row: int
    op: str
    operands: tuple[str, ...]
    answer: str | None
    reason: str = ""
    calls: tuple[str, ...] = ()  # the compiled calls that computed it, e.g. ("add(12, 5) -> 17", ...)


@dataclass(frozen=True)
class GateDecision:
    """What the gate does at one step for one row: force ``rest`` (the rest of the answer), end the
    answer (forbid tokens extending it), or guard (forbid tokens spanning ``=``)."""

    kind: Literal["force", "end", "guard"]
    rest: str = ""
    answer: str = ""
    started: bool = False  # part of the answer is already written
    words: bool = False  # the answer has letters (reverse): forbid word characters after it


@dataclass
class _Rules:
    ops: dict[str, ConnOp]
    infix: dict[str, str]  # operator symbol -> op name
    calls: list[tuple[str, re.Pattern[str]]] = field(default_factory=list)


def make_rules(ops: Iterable[str] | None = None, triggers: dict[str, str] | None = None,
               max_lens: dict[str, int] | None = None) -> _Rules:
    """The compiled operations the gate uses and how text calls each (infix symbol or trigger regex).

    ``triggers`` overrides or adds a regular expression per op (one group per operand, matched against
    the text right before ``=``); an op registered with neither an infix symbol nor a trigger, and given
    none here, raises ``ConnInputError``.
    """
    triggers, max_lens = dict(triggers or {}), dict(max_lens or {})
    names = list(OPS) if ops is None else list(ops)
    if not names:
        raise ConnInputError("the gate needs at least one operation (leave the gate out to let the LM decide alone)")
    unknown = [n for n in [*names, *triggers, *max_lens] if n not in OPS]
    if unknown:
        raise ConnInputError(f"unknown operation(s) {', '.join(unknown)} for the gate; registered: {', '.join(OPS)} "
                             "(add your own with neurosym.conn.register)")
    rules = _Rules({}, {})
    for name in names:
        spec = OPS[name]
        rules.ops[name] = get_op(name, max_lens.get(name))
        pattern = triggers.get(name, spec.trigger)
        if name in triggers or (pattern is not None and spec.infix is None):
            try:
                compiled = re.compile(r"(?:" + pattern + r")[ \t]*\Z")
            except re.error as err:
                raise ConnInputError(f"trigger for {name} {pattern!r} is not a regular expression: {err}") from None
            if compiled.groups != spec.arity:
                raise ConnInputError(f"trigger for {name} {pattern!r} has {compiled.groups} group(s); "
                                     f"{name} takes {spec.arity} operand(s)")
            rules.calls.append((name, compiled))
        elif spec.infix is not None:
            rules.infix[spec.infix] = name
        else:
            raise ConnInputError(f"operation {name!r} has no trigger: register it with infix=... or trigger=..., "
                                 f"or pass triggers={{{name!r}: r'...'}} to the gate")
    return rules


class ConnGate(LogitsProcessor):
    """Force the compiled networks' answers into ``model.generate`` where the text asks for them.

    >>> gate = ConnGate(tokenizer, ops=["add", "subtract"])
    >>> model.generate(**inputs, logits_processor=LogitsProcessorList([gate]))

    ``gate.betas`` holds, for every step, the per-row β (1 = the network chose the token);
    ``gate.events`` records every expression answered or left to the LM, with the reason.
    ``on_unsupported="raise"`` raises ``ConnInputError`` instead of leaving a too-long operand to the LM.
    With an encoder-decoder model, call ``gate.set_encoder_input(enc["input_ids"], enc["attention_mask"])``
    before each ``generate`` (see the module docstring).
    """

    def __init__(self, tokenizer, ops: Iterable[str] | None = None, triggers: dict[str, str] | None = None,
                 max_lens: dict[str, int] | None = None, on_unsupported: Literal["lm", "raise"] = "lm",
                 window: int | None = None):
        if on_unsupported not in ("lm", "raise"):
            raise ValueError(f"on_unsupported must be 'lm' or 'raise', got {on_unsupported!r}")
        self.tokenizer = tokenizer
        self.rules = make_rules(ops, triggers, max_lens)
        self.on_unsupported = on_unsupported
        texts = self._token_texts(tokenizer)
        self.pieces: dict[str, list[int]] = {}
        for i, text in texts.items():
            body = text[1:] if text.startswith(" ") else text
            if text and set(body) <= ANSWER_ALPHABET:
                self.pieces.setdefault(text, []).append(i)
        needed = {c for op in self.rules.ops.values() for v in op.program.classes if v for c in str(v)}
        missing = sorted(needed - {t.strip() for t in self.pieces if len(t.strip()) == 1})
        if missing:
            raise ValueError(f"the tokenizer has no single token for {''.join(missing)!r}, so the gate could not "
                             "write every answer; use a tokenizer with single-character digit tokens")

        def ids_where(pattern: re.Pattern[str]) -> torch.Tensor:
            return torch.tensor(sorted(i for i, t in texts.items() if pattern.match(t)), dtype=torch.long)

        self._extends_digits = ids_where(_EXTENDS_DIGITS)
        self._extends_word = ids_where(_EXTENDS_WORD)
        self._spans_trigger = torch.tensor(sorted(i for i, t in texts.items() if _SPANS_TRIGGER.search(t)),
                                           dtype=torch.long)
        longest = max(op.max_len for op in self.rules.ops.values()) + 2
        # tokens decoded per row per step: a trigger plus its longest answer fit even one character per token
        self.window = window or 2 * longest + 32
        self._longest_answer = longest
        self.events: list[GateEvent] = []
        self.betas: list[torch.Tensor] = []
        self._answers: dict[tuple, tuple[str | None, str]] = {}
        self._encoder_texts: list[str] | None = None

    def set_encoder_input(self, input_ids: torch.Tensor | None, attention_mask: torch.Tensor | None = None):
        """The encoder input of an encoder-decoder ``generate`` (what was passed as ``input_ids``), so a
        trigger at its end is answered by the decoder; ``None`` forgets it (a decoder-only model again).
        Padding (``attention_mask`` 0) and special tokens are dropped. Returns the gate."""
        if input_ids is None:
            self._encoder_texts = None
            return self
        if input_ids.dim() != 2:
            raise ValueError(f"input_ids must be [batch, length], got shape {tuple(input_ids.shape)}")
        ids = input_ids.cpu()
        mask = attention_mask.cpu().bool() if attention_mask is not None else torch.ones_like(ids, dtype=torch.bool)
        self._encoder_texts = [self._decode(row[keep].tolist()) for row, keep in zip(ids, mask)]
        return self

    # -- the vocabulary, read once ---------------------------------------------------------------
    def _token_texts(self, tokenizer) -> dict[int, str]:
        """What each token writes when it follows other text (a SentencePiece ``▁1`` writes " 1")."""
        special = set(tokenizer.all_special_ids)
        ids = [i for i in range(len(tokenizer)) if i not in special]
        anchor = tokenizer.convert_tokens_to_ids("=") if "=" in tokenizer.get_vocab() else ids[0]
        head = self._decode([anchor])
        out = {}
        for i, text in zip(ids, tokenizer.batch_decode([[anchor, i] for i in ids], skip_special_tokens=True,
                                                       clean_up_tokenization_spaces=False)):
            if text.startswith(head):
                out[i] = text[len(head):]
        return out

    def _decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=True, clean_up_tokenization_spaces=False)

    # -- reading the text --------------------------------------------------------------------------
    def _compute(self, before: str, complete: bool, row: int) -> tuple[str, bool] | None:
        """(answer, spaced) for the expression that ``before`` ends with, or None (silent)."""
        expr = None
        try:
            expr = parse_expression(before, complete)
        except Refused as why:
            return self._refuse(("refused", before[-40:]), row, "expression", (before[-40:].strip(),), str(why))
        if expr is not None:
            key: tuple = ("infix", expr.items)
            if key not in self._answers:
                calls: list[str] = []

                def call(name: str, a: str, b: str) -> str:
                    out = self._run(name, (a, b))
                    calls.append(f"{name}({a}, {b}) -> {out}")
                    return out

                try:
                    answer = evaluate(expr, self.rules.infix, call)
                except Refused as why:
                    return self._refuse(key, row, "chain" if len(expr.items) > 3 else self._op_of(expr),
                                        self._operands(expr), str(why))
                self._answers[key] = (answer, "")
                self.events.append(GateEvent(row, "chain" if len(calls) > 1 else self._op_of(expr),
                                             self._operands(expr), answer, calls=tuple(calls)))
            answer = self._answers[key][0]
            return (answer, expr.spaced) if answer is not None else None
        line = before[before.rfind("\n") + 1:]
        for name, pattern in self.rules.calls:
            m = pattern.search(line)
            if m is None:
                continue
            if m.start() == 0 and not complete and len(line) == len(before):
                raise NeedMoreText()
            if m.start() > 0 and not line[m.start() - 1].isspace():
                return self._refuse(("call", name, line[max(0, m.start() - 1):]), row, name, m.groups(),
                                    f"{line[m.start() - 1]!r} is glued to the trigger")
            key = ("call", name, m.groups())
            if key not in self._answers:
                try:
                    answer = self._run(name, m.groups())
                except Refused as why:
                    return self._refuse(key, row, name, m.groups(), str(why))
                self._answers[key] = (answer, "")
                self.events.append(GateEvent(row, name, m.groups(), answer,
                                             calls=(f"{name}({', '.join(m.groups())}) -> {answer}",)))
            answer = self._answers[key][0]
            return (answer, before.endswith((" ", "\t"))) if answer is not None else None
        return None

    def _op_of(self, expr) -> str:
        return self.rules.infix.get(expr.items[1], expr.items[1]) if len(expr.items) == 3 else "chain"

    @staticmethod
    def _operands(expr) -> tuple[str, ...]:
        return tuple(expr.items[0::2]) if len(expr.items) == 3 else (expr.text,)

    def _run(self, name: str, operands: tuple[str, ...]) -> str:
        try:
            return self.rules.ops[name](*operands)
        except ConnInputError as err:
            if self.on_unsupported == "raise":
                raise
            raise Refused(str(err)) from None

    def _refuse(self, key: tuple, row: int, op: str, operands: tuple[str, ...], reason: str) -> None:
        if key not in self._answers:
            self._answers[key] = (None, reason)
            self.events.append(GateEvent(row, op, tuple(operands), None, reason))
            if "compiled maximum" in reason:
                warnings.warn(f"CoNN gate: {reason}; the language model writes this answer instead", stacklevel=3)
        return None

    def decide(self, text: str, complete: bool = True, row: int = 0) -> GateDecision | None:
        """What the gate does after ``text`` (None: the LM decides). ``complete=False`` says ``text`` is a
        trailing window; ``NeedMoreText`` is raised when the decision needs text before it."""
        eq = text.rfind("=")
        if eq >= 0:
            after = text[eq + 1:]
            if len(after) <= self._longest_answer + 3 and "\n" not in after:
                found = self._compute(text[:eq], complete, row)
                if found is not None:
                    answer, spaced = found
                    words = any(c.isalpha() for c in answer)
                    if after == "":
                        return GateDecision("force", (" " if spaced else "") + answer, answer)
                    written = after[1:] if after.startswith(" ") else after
                    if written != answer and answer.startswith(written):
                        return GateDecision("force", answer[len(written):], answer, started=bool(written))
                    if written == answer or (written[:-1] == answer and written[-1] in ".,_\u2009\u202f"):
                        return GateDecision("end", answer=answer, words=words)
        tail = text.rstrip(" ")
        if tail and (tail[-1].isdigit() or tail[-1] == ")") and len(tail) - len(text) >= -1:
            try:
                parsed = parse_expression(text, complete) is not None
            except Refused:
                parsed = False
            if parsed or any(p.search(text[text.rfind("\n") + 1:]) for _, p in self.rules.calls):
                return GateDecision("guard")
        return None

    def remaining(self, text: str, row: int = 0) -> str | None:
        """The part of an answer still to be written at the end of ``text``, or None (β = 0)."""
        d = self.decide(text, True, row)
        return d.rest if d is not None and d.kind == "force" else None

    def _read(self, ids: torch.Tensor, row: int, rows: int = 1) -> tuple[GateDecision | None, list[int], str]:
        """Decide on the last ``window`` tokens of ``ids`` (a 1-D tensor), doubling while that is too few.
        Returns the decision and the decoded tokens (the decoder's own, for ``_force`` to check against)."""
        prefix = self._encoder_text(row, rows)
        size = self.window
        while True:
            tail = ids[-size:].tolist()
            text = self._decode(tail)
            complete = size >= len(ids)
            try:
                if prefix is not None and complete and "=" not in text:
                    return self._decide_after(prefix, text, row), tail, text
                return self.decide(text, complete, row), tail, text
            except NeedMoreText:
                size *= 2

    def _encoder_text(self, row: int, rows: int) -> str | None:
        """The encoder input of decoder row ``row`` of ``rows`` (beams and returned sequences are expanded
        row by row: ``rows`` is a multiple of the encoder batch)."""
        if self._encoder_texts is None:
            return None
        n = len(self._encoder_texts)
        if rows % n:
            raise ValueError(f"the decoder has {rows} rows, which is not a multiple of the {n} encoder rows given "
                             "to set_encoder_input; give the gate the encoder input of this generate call")
        return self._encoder_texts[row // (rows // n)]

    def _decide_after(self, prefix: str, text: str, row: int) -> GateDecision | None:
        """Decide on the encoder input's trailing text followed by the decoder's text (which has no ``=``)."""
        chars = 4 * self.window
        while True:
            try:
                d = self.decide(prefix[-chars:] + text, chars >= len(prefix), row)
                break
            except NeedMoreText:
                chars *= 2
        if d is not None and d.kind == "force" and not text and d.rest.startswith(" "):
            d = GateDecision("force", d.rest[1:], d.answer)  # the decoder's first token: no space to write before it
        return d

    def _force(self, tail: list[int], text: str, d: GateDecision, scores: torch.Tensor, row: int) -> int | None:
        """The token that writes the longest next piece of ``d.rest`` and that earlier processors allow."""
        fallback = None
        for size in range(len(d.rest), 0, -1):
            for token in self.pieces.get(d.rest[:size], ()):
                if self._decode(tail + [token]) != text + d.rest[:size]:
                    continue  # decoded in context it writes something else (an added space)
                if torch.isfinite(scores[token]):
                    return token
                fallback = fallback if fallback is not None else token
        if fallback is None:
            warnings.warn(f"CoNN gate: no token of this tokenizer writes {d.rest[:1]!r} after {text[-20:]!r}; "
                          "the language model continues", stacklevel=3)
            return None
        if not d.started:
            self.events.append(GateEvent(row, "blocked", (d.answer,), None,
                                         "another logits processor bans the answer's first token"))
            return None
        warnings.warn(f"CoNN gate: another logits processor bans the next piece {d.rest!r} of the answer "
                      f"{d.answer!r}; the gate writes it anyway (a cut answer would be a wrong number)", stacklevel=3)
        return fallback

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        beta = torch.zeros(input_ids.shape[0], dtype=torch.bool)
        out = scores
        rows = input_ids.cpu()
        for row in range(rows.shape[0]):
            d, tail, text = self._read(rows[row], row, rows.shape[0])
            if d is None:
                continue
            if out is scores:
                out = scores.clone()
            if d.kind == "force":
                token = self._force(tail, text, d, scores[row], row)
                if token is None:
                    continue
                out[row] = float("-inf")
                out[row, token] = 0.0
                beta[row] = True
            else:
                banned = (self._extends_word if d.words else self._extends_digits) if d.kind == "end" \
                    else self._spans_trigger
                out[row, banned.to(out.device)] = float("-inf")
        self.betas.append(beta)
        return out


class StopWhenAnswered(StoppingCriteria):
    """Stop a row as soon as the gate has written a complete answer (for evaluations that read only the
    answer: the LM's continuation after it is not generated)."""

    def __init__(self, gate: ConnGate):
        self.gate = gate

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor, **kwargs) -> torch.BoolTensor:
        done = torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)
        if not self.gate.betas:
            return done
        rows = input_ids.cpu()
        for row in range(rows.shape[0]):
            if self.gate.betas[-1][row]:  # the gate wrote the last token; is anything left to write?
                d, _, _ = self.gate._read(rows[row], row, rows.shape[0])
                done[row] = d is None or d.kind != "force"
        return done

"""The gate: a ``LogitsProcessor`` that hands the next tokens to a compiled network when a rule fires.

At every decoding step, for every row of the batch, the gate decodes the text so far and looks for the
last *trigger* (``123+456=``, ``parity(0110)=``, ...) of each rule. If the text is a trigger followed by
a proper prefix of the network's answer, the gate sets β = 1: it masks every logit but the token that
writes the next piece of the answer. Otherwise (no trigger, or the answer is complete, or the LM has
written something else) β = 0 and the LM's logits pass through unchanged.

The gate is stateless: it reads its decision off the text, so it works with any tokenizer (numbers
split into several tokens, or several digits per token), with batches (left padding: pad tokens are
special tokens and disappear when decoding), beam search and sampling. The network runs on the
operands extracted from the text (on CPU; it is small), once per trigger (answers are cached).

A trigger whose operands exceed the network's compiled maximum is not answered by the network: by
default the gate warns and leaves the answer to the LM (``on_unsupported="lm"``); with
``on_unsupported="raise"`` it raises ``ConnInputError`` instead.
"""
from __future__ import annotations

import re
import warnings
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

import torch
from transformers import LogitsProcessor, StoppingCriteria

from neurosym.conn.errors import ConnInputError
from neurosym.conn.ops import OPS, ConnOp, get_op

_NOT_AFTER = r"(?<![\w.+\-*/])"  # an operand starts a number: not mid-number, not after another operator
DEFAULT_TRIGGERS: dict[str, str] = {
    "add": _NOT_AFTER + r"(\d+) ?\+ ?(\d+) ?= ?",
    "subtract": _NOT_AFTER + r"(\d+) ?- ?(\d+) ?= ?",
    "parity": r"\bparity\(([01]+)\) ?= ?",
    "reverse": r"\breverse\(([0-9a-z]+)\) ?= ?",
}
ANSWER_ALPHABET = set("0123456789-abcdefghijklmnopqrstuvwxyz")
TEXT_WINDOW = 2048  # characters searched for a trigger (far more than a trigger plus its answer)


@dataclass(frozen=True)
class Rule:
    """A compiled operation and the regular expression whose groups are its operands."""

    op: ConnOp
    trigger: re.Pattern[str]


@dataclass
class GateEvent:
    """A trigger the gate saw: which row, which rule, the operands, and the answer (None if refused)."""

    row: int
    op: str
    operands: tuple[str, ...]
    answer: str | None
    reason: str = ""


def make_rules(ops: Iterable[str] = tuple(OPS), triggers: dict[str, str] | None = None,
               max_lens: dict[str, int] | None = None) -> list[Rule]:
    """Rules for the named operations, with default triggers unless overridden."""
    triggers, max_lens = triggers or {}, max_lens or {}
    rules = []
    for name in ops:
        if name not in OPS:
            raise ConnInputError(f"unknown operation {name!r} for the gate; choose from {', '.join(OPS)}")
        rules.append(Rule(get_op(name, max_lens.get(name)), re.compile(triggers.get(name, DEFAULT_TRIGGERS[name]))))
    return rules


class ConnGate(LogitsProcessor):
    """Force the compiled networks' answers into ``model.generate`` (β = 1) when a trigger is reached.

    >>> gate = ConnGate(tokenizer, ops=["add", "subtract"])
    >>> model.generate(**inputs, logits_processor=LogitsProcessorList([gate]))

    ``gate.betas`` holds, for every step, the per-row β (1 = the network chose the token);
    ``gate.events`` records every trigger answered or refused.
    """

    def __init__(self, tokenizer, ops: Iterable[str] = tuple(OPS), triggers: dict[str, str] | None = None,
                 max_lens: dict[str, int] | None = None,
                 on_unsupported: Literal["lm", "raise"] = "lm"):
        if on_unsupported not in ("lm", "raise"):
            raise ValueError(f"on_unsupported must be 'lm' or 'raise', got {on_unsupported!r}")
        self.tokenizer = tokenizer
        self.rules = make_rules(ops, triggers, max_lens)
        self.on_unsupported = on_unsupported
        self.pieces = self._answer_pieces(tokenizer)
        needed = {c for r in self.rules for v in r.op.program.classes if v for c in str(v)}
        missing = sorted(needed - set(self.pieces))
        if missing:
            raise ValueError(f"the tokenizer has no single token for {''.join(missing)!r}, so the gate could not "
                             "write every answer; use a tokenizer with single-character digit tokens")
        self.events: list[GateEvent] = []
        self.betas: list[torch.Tensor] = []
        self._answers: dict[tuple[str, tuple[str, ...]], str | None] = {}

    @staticmethod
    def _answer_pieces(tokenizer) -> dict[str, list[int]]:
        """Every token that decodes to answer characters only (no spaces): piece -> token ids."""
        special = set(tokenizer.all_special_ids)
        ids = [i for i in range(len(tokenizer)) if i not in special]
        pieces: dict[str, list[int]] = {}
        for i, text in zip(ids, tokenizer.batch_decode([[i] for i in ids])):
            if text and set(text) <= ANSWER_ALPHABET:
                pieces.setdefault(text, []).append(i)
        return pieces

    def _answer(self, row: int, rule: Rule, operands: tuple[str, ...]) -> str | None:
        key = (rule.op.name, operands)
        if key not in self._answers:
            try:
                self._answers[key] = rule.op(*operands)
                self.events.append(GateEvent(row, rule.op.name, operands, self._answers[key]))
            except ConnInputError as err:
                if self.on_unsupported == "raise":
                    raise
                warnings.warn(f"CoNN gate: {err}; the language model writes this answer instead", stacklevel=2)
                self._answers[key] = None
                self.events.append(GateEvent(row, rule.op.name, operands, None, str(err)))
        return self._answers[key]

    def remaining(self, text: str, row: int = 0) -> str | None:
        """The part of an answer still to be written at the end of ``text``, or None (β = 0)."""
        offset = max(0, len(text) - TEXT_WINDOW)
        tail = text[offset:]
        best: tuple[int, Rule, re.Match[str]] | None = None
        for rule in self.rules:
            for m in rule.trigger.finditer(tail):
                if offset and m.start() == 0:
                    continue  # the window may have cut this trigger's first operand
                if best is None or m.end() > best[0]:
                    best = (m.end(), rule, m)
        if best is None:
            return None
        end, rule, m = best
        written = tail[end:]
        answer = self._answer(row, rule, m.groups())
        if answer is None or not answer.startswith(written) or written == answer:
            return None
        return answer[len(written):]

    def next_token(self, ids: list[int], row: int = 0) -> int | None:
        """The token that writes the next piece of the answer after ``ids``, or None to let the LM choose."""
        text = self.tokenizer.decode(ids, skip_special_tokens=True)
        rest = self.remaining(text, row)
        if not rest:
            return None
        for size in range(len(rest), 0, -1):  # longest piece first
            for token in self.pieces.get(rest[:size], ()):
                # the piece must extend the text verbatim (some tokenizers add a space when decoding in context)
                if self.tokenizer.decode(ids + [token], skip_special_tokens=True) == text + rest[:size]:
                    return token
        warnings.warn(f"CoNN gate: no token of this tokenizer writes {rest[:1]!r} after {text[-20:]!r}; "
                      "the language model continues", stacklevel=2)
        return None

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        beta = torch.zeros(input_ids.shape[0], dtype=torch.bool)
        forced = scores
        for row, ids in enumerate(input_ids.tolist()):
            token = self.next_token(ids, row)
            if token is None:
                continue
            if forced is scores:
                forced = scores.clone()
            forced[row] = float("-inf")
            forced[row, token] = 0.0
            beta[row] = True
        self.betas.append(beta)
        return forced


class StopWhenAnswered(StoppingCriteria):
    """Stop a row as soon as the gate has written a complete answer (for evaluations that read only the
    answer: the LM's continuation after it is not generated)."""

    def __init__(self, gate: ConnGate):
        self.gate = gate

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor, **kwargs) -> torch.BoolTensor:
        done = torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)
        if not self.gate.betas:
            return done
        for row, ids in enumerate(input_ids.tolist()):
            if self.gate.betas[-1][row]:  # the gate wrote the last token; is anything left to write?
                text = self.gate.tokenizer.decode(ids, skip_special_tokens=True)
                done[row] = self.gate.remaining(text, row) is None
        return done

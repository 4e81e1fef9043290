"""The compiled operations: what each accepts, how its operands become tokens, and how it is called.

``get_op("add")("123", "456") == "579"``. An operation validates its operands (alphabet, length up to
the maximum it was compiled for) and raises ``ConnInputError`` otherwise; it never answers beyond its
maximum. The answer is read off the network's output as the concatenation of the written symbols.
"""
from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from neurosym.conn import programs
from neurosym.conn.compiler import CompiledProgram, compile_program
from neurosym.conn.errors import ConnInputError
from neurosym.conn.program import SOp


@dataclass(frozen=True)
class OpSpec:
    """An operation before compilation."""

    name: str
    arity: int
    alphabet: str  # characters allowed in an operand
    operator: str  # joins the operands in the network's input ("" for one operand)
    build: Callable[[int], SOp]  # max operand length -> program output
    default_max_len: int
    what: str  # operand description for error messages
    example: tuple[str, ...]


OPS: dict[str, OpSpec] = {
    "parity": OpSpec("parity", 1, "01", "", programs.parity, 64, "a bit string (0/1)", ("0110101",)),
    "reverse": OpSpec("reverse", 1, programs.REVERSE_ALPHABET, "", programs.reverse, 64,
                      "a string of digits and lowercase letters", ("31415",)),
    "add": OpSpec("add", 2, programs.DIGITS, "+", programs.add, 32, "a non-negative decimal integer",
                  ("123", "456")),
    "subtract": OpSpec("subtract", 2, programs.DIGITS, "-", programs.subtract, 32,
                       "a non-negative decimal integer", ("456", "123")),
}


class ConnOp:
    """A compiled operation: validates operands, runs the network, decodes the answer."""

    def __init__(self, spec: OpSpec, max_len: int, program: CompiledProgram):
        self.spec = spec
        self.max_len = max_len
        self.program = program

    @property
    def name(self) -> str:
        return self.spec.name

    def validate(self, operands: Sequence[str]) -> None:
        spec = self.spec
        if len(operands) != spec.arity:
            raise ConnInputError(f"{spec.name} takes {spec.arity} operand(s), got {len(operands)}: "
                                 f"e.g. {spec.name} {' '.join(spec.example)}")
        for x in operands:
            if not isinstance(x, str) or not x:
                raise ConnInputError(f"{spec.name}: every operand must be a non-empty string, got {x!r}")
            bad = sorted(set(x) - set(spec.alphabet))
            if bad:
                raise ConnInputError(f"{spec.name}: operand {x!r} must be {spec.what}; "
                                     f"characters {''.join(bad)!r} are not allowed")
            if len(x) > self.max_len:
                raise ConnInputError(f"{spec.name}: operand of length {len(x)} exceeds the compiled maximum of "
                                     f"{self.max_len}; compile a larger network (get_op({spec.name!r}, "
                                     f"max_len={len(x)}) or --max-len {len(x)})")

    def tokens(self, operands: Sequence[str]) -> list[str]:
        self.validate(operands)
        return list(self.spec.operator.join(operands))

    def batch(self, operand_lists: Sequence[Sequence[str]], batch_size: int = 256) -> list[str]:
        """Answers for many inputs: validated first, then run in batches of similar length (right-padded)."""
        seqs = [self.tokens(ops) for ops in operand_lists]
        order = sorted(range(len(seqs)), key=lambda i: -len(seqs[i]))  # longest first: later batches reuse memory
        answers: list[str] = [""] * len(seqs)
        for start in range(0, len(order), batch_size):
            chunk = order[start:start + batch_size]
            for i, out in zip(chunk, self.program([seqs[i] for i in chunk])):
                answers[i] = "".join(sym for sym in out if sym)
        return answers

    def __call__(self, *operands: str) -> str:
        return self.batch([operands])[0]

    def stats(self) -> dict[str, int]:
        return {"max_len": self.max_len, **self.program.stats()}


@functools.lru_cache(maxsize=None)
def _compiled(name: str, max_len: int) -> CompiledProgram:
    return compile_program(OPS[name].build(max_len))


def get_op(name: str, max_len: int | None = None) -> ConnOp:
    """The compiled operation ``name`` (one of ``OPS``) for operands up to ``max_len`` (default per op).

    Compiled networks are cached per (name, max_len); compiling takes well under a second.
    """
    if name not in OPS:
        raise ConnInputError(f"unknown operation {name!r}; choose one of {', '.join(OPS)}")
    spec = OPS[name]
    max_len = spec.default_max_len if max_len is None else max_len
    if max_len < 1:
        raise ConnInputError(f"max_len must be at least 1, got {max_len}")
    return ConnOp(spec, max_len, _compiled(name, max_len))

"""The compiled operations and their registry: what each accepts, how its operands become tokens, its trigger.

``get_op("add")("123", "456") == "579"``. An operation validates its operands (alphabet, length up to
the maximum it was compiled for) and raises ``ConnInputError`` otherwise; it never answers beyond its
maximum. The answer is read off the network's output as the concatenation of the written symbols.

``register(...)`` adds an operation of your own (a program builder ``max_len -> SOp``) with the trigger
that calls it in text: either an infix symbol (it then joins arithmetic expressions, ``a # b =``) or a
regular expression whose groups are the operands (``mirror\\(([a-z]+)\\)``, matched against the text just
before ``=``). ``conn run``, ``conn info``, ``generate --conn`` and ``ConnGate`` all read this registry.
"""
from __future__ import annotations

import functools
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from neurosym.conn import programs
from neurosym.conn.compiler import CompiledProgram, compile_program
from neurosym.conn.errors import ConnInputError
from neurosym.conn.program import SOp

# Compiling grows with max_len squared (attention over positions, MLP tables over position pairs):
# ~1 s at 64, minutes and gigabytes at 2,000. Above this the CLI and get_op refuse with a message.
MAX_COMPILE_LEN = 256


@dataclass(frozen=True)
class OpSpec:
    """An operation before compilation, and how text calls it.

    ``infix``: the operator symbol that calls it between two non-negative integers (``+``), with its
    ``precedence`` (higher binds tighter; ``+``/``-`` are 1). ``trigger``: a regular expression for the
    text just before ``=``, one group per operand (``parity\\(([01]+)\\)``). At most one of the two.
    """

    name: str
    arity: int
    alphabet: str  # characters allowed in an operand
    operator: str  # joins the operands in the network's input ("" for one operand)
    build: Callable[[int], SOp]  # max operand length -> program output
    default_max_len: int
    what: str  # operand description for error messages
    example: tuple[str, ...]
    infix: str | None = None
    precedence: int = 1
    trigger: str | None = None


OPS: dict[str, OpSpec] = {}


def register(name: str, build: Callable[[int], SOp], *, arity: int, alphabet: str, default_max_len: int,
             operator: str = "", what: str = "", example: Sequence[str] = (), infix: str | None = None,
             precedence: int = 1, trigger: str | None = None, replace: bool = False) -> OpSpec:
    """Register a compiled operation under ``name`` for ``get_op``, the CLI and the gate.

    >>> register("mirror", my_program, arity=1, alphabet="abc", default_max_len=16,
    ...          trigger=r"\\bmirror\\(([abc]+)\\)", example=("abc",))

    ``build(max_len)`` returns the program's output SOp; the network input is the operands joined by
    ``operator``. Raises ``ConnInputError`` for a name already taken (unless ``replace=True``), an
    infix symbol already used, or a trigger that does not compile or has the wrong number of groups.
    """
    if not re.fullmatch(r"[A-Za-z_][\w-]*", name or ""):
        raise ConnInputError(f"operation name {name!r} must be a word (letters, digits, _ or -)")
    if name in OPS and not replace:
        raise ConnInputError(f"operation {name!r} is already registered; pass replace=True to replace it")
    if arity < 1 or (infix is not None and arity != 2):
        raise ConnInputError(f"{name}: arity must be >= 1 (exactly 2 for an infix operator), got {arity}")
    if infix is not None and trigger is not None:
        raise ConnInputError(f"{name}: give an infix symbol or a trigger, not both")
    if infix is not None:
        from neurosym.conn.expr import OPERATOR_CHARS

        if len(infix) != 1 or infix not in OPERATOR_CHARS:
            raise ConnInputError(f"{name}: infix must be one of {' '.join(OPERATOR_CHARS)}, got {infix!r}")
        taken = [s.name for s in OPS.values() if s.infix == infix and s.name != name]
        if taken:
            raise ConnInputError(f"{name}: infix {infix!r} already calls {taken[0]!r}")
    if trigger is not None:
        try:
            groups = re.compile(trigger).groups
        except re.error as err:
            raise ConnInputError(f"{name}: trigger {trigger!r} is not a valid regular expression: {err}") from None
        if groups != arity:
            raise ConnInputError(f"{name}: trigger {trigger!r} has {groups} group(s); it needs one per operand "
                                 f"({arity})")
    if default_max_len < 1 or default_max_len > MAX_COMPILE_LEN:
        raise ConnInputError(f"{name}: default_max_len must be in 1..{MAX_COMPILE_LEN}, got {default_max_len}")
    spec = OpSpec(name, arity, alphabet, operator, build, default_max_len, what or f"characters from {alphabet!r}",
                  tuple(example), infix, precedence, trigger)
    OPS[name] = spec
    if replace:
        _compiled.cache_clear()
    return spec


def unregister(name: str) -> None:
    """Remove a registered operation (and its compiled networks from the cache)."""
    OPS.pop(name, None)
    _compiled.cache_clear()


register("parity", programs.parity, arity=1, alphabet="01", default_max_len=64, what="a bit string (0/1)",
         example=("0110101",), trigger=r"\bparity\(([01]+)\)")
register("reverse", programs.reverse, arity=1, alphabet=programs.REVERSE_ALPHABET, default_max_len=64,
         what="a string of digits and lowercase letters", example=("31415",),
         trigger=r"\breverse\(([0-9a-z]+)\)")
register("add", programs.add, arity=2, alphabet=programs.DIGITS, default_max_len=32, operator="+",
         what="a non-negative decimal integer", example=("123", "456"), infix="+")
register("subtract", programs.subtract, arity=2, alphabet=programs.DIGITS, default_max_len=32, operator="-",
         what="a non-negative decimal integer", example=("456", "123"), infix="-")


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
def _compiled(name: str, max_len: int, margin: float = 1.0) -> CompiledProgram:
    return compile_program(OPS[name].build(max_len), margin=margin)


def get_op(name: str, max_len: int | None = None, margin: float = 1.0) -> ConnOp:
    """The compiled operation ``name`` (one of ``OPS``) for operands up to ``max_len`` (default per op).

    Compiled networks are cached per (name, max_len, margin); compiling takes well under a second.
    ``margin`` > 1 compiles the MLPs with scaled margins (see ``compile_program``; for bfloat16 use
    ``precision.compile_for``, which also verifies and casts a copy of its own).
    """
    if name not in OPS:
        raise ConnInputError(f"unknown operation {name!r}; choose one of {', '.join(OPS)}")
    spec = OPS[name]
    max_len = spec.default_max_len if max_len is None else max_len
    if max_len < 1:
        raise ConnInputError(f"max_len must be at least 1, got {max_len}")
    if max_len > MAX_COMPILE_LEN:
        raise ConnInputError(f"max_len {max_len} is above the limit of {MAX_COMPILE_LEN}: compiling grows with the "
                             f"square of the length (minutes and gigabytes at 2,000); for longer inputs split them "
                             f"and compose calls")
    return ConnOp(spec, max_len, _compiled(name, max_len, float(margin)))

"""Read the expression that ends at an ``=`` and compute it with compiled operations, or refuse.

The gate must be right or silent, so this module decides what the text *asks*, not just whether a
pattern matches somewhere. ``parse_expression(before)`` reads backwards from the end of the text before
``=`` the longest expression it can: numbers (``1,234`` and ``1 234`` with a thin space are one number;
a badly grouped one is not read) joined by operators (``+ - − * × / ÷ ^``). The result is refused
(``Refused`` with the reason) when

* something is glued to its first number (``x12+5``, ``3.5+1``, ``$5+3``, ``10:30-5``, ``-3+5``), or the
  word before it continues it (``4 x 3 + 2``, ``5 plus 3 + 2``) or labels its numbers (``score 3-2``);
* the spacing is mixed (``3-2 =``: a tight hyphen before a spaced ``=`` reads as a range, a score or a
  phone number, not a subtraction); operators and ``=`` must be all tight or all spaced;
* a number has a leading zero, or the numbers have the shape of a phone number or a date (``555-1234``,
  ``2024-01-05``);

and ``evaluate`` refuses an operator no compiled operation implements (``3 * 4 + 2`` without a
multiply), so a longer expression is never answered as its last part. Precedence is the usual one
(``^`` over ``* /`` over ``+ -``, left to right within a level); the value of a chain is computed by
composing compiled calls, ``+``/``-`` with signs by choosing ``add`` or ``subtract`` on magnitudes.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

OPERATOR_CHARS = "+-−*×/÷^"
NORMAL = {"−": "-", "×": "*", "÷": "/"}
GROUP_SEPARATORS = ",\u2009\u202f"  # thousands separators inside one number: comma, thin space, narrow nbsp
SPACES = " \t"
# A word right before the expression that continues it (the expression is longer than what we read) or
# says its numbers are labels, scores or codes rather than quantities to compute.
CONTINUING_WORDS = {"x", "times", "plus", "minus", "by", "of", "over", "divided", "multiplied", "mod", "and",
                    "to", "from", "between"}
LABEL_WORDS = {"score", "scores", "scored", "final", "call", "phone", "tel", "fax", "ext", "room", "page",
               "pages", "pp", "p", "vs", "round", "chapter", "section", "version", "v", "no", "id", "zip",
               "isbn", "flight", "route", "code", "pin", "dial", "record", "won", "lost", "drew", "beat"}
PHONE_OR_DATE = {(3, 4), (3, 3, 4), (4, 2, 2), (2, 2, 4), (4, 1, 1), (1, 1, 4), (1, 3, 3, 4), (3, 2, 4)}


class Refused(Exception):
    """The text does not ask for something the compiled operations compute: the gate stays silent."""


class NeedMoreText(Exception):
    """The expression reaches the start of the text window: decode more before deciding."""


@dataclass(frozen=True)
class Expression:
    """An infix expression: numbers (digit strings) and operators alternate; ``spaced`` is its style."""

    items: tuple[str, ...]
    spaced: bool

    @property
    def text(self) -> str:
        return (" " if self.spaced else "").join(self.items)


def _read_number(s: str, end: int) -> int:
    """Start of the number that ends at ``s[end - 1]`` (digits, maybe grouped by one kind of separator).

    Raises ``Refused`` for a badly grouped number (``1,2345``): its reading is ambiguous.
    """
    i = end
    while i > 0 and s[i - 1].isdigit():
        i -= 1
    if i == end:
        raise ValueError("no number")
    if i >= 2 and s[i - 1] in GROUP_SEPARATORS and s[i - 2].isdigit():
        sep = s[i - 1]
        if end - i != 3:
            # "1,2345": the comma is not a thousands separator; "f(1,23" is glued either way
            raise Refused(f"{s[i - 2:end]!r} is not a number with {sep!r} grouping")
        while True:
            j = i - 1  # at the separator
            k = j
            while k > 0 and s[k - 1].isdigit():
                k -= 1
            if j - k == 3 and k >= 2 and s[k - 1] == sep and s[k - 2].isdigit():
                i = k
                continue
            if 1 <= j - k <= 3 and not (k >= 1 and s[k - 1] in GROUP_SEPARATORS and k >= 2 and s[k - 2].isdigit()):
                return k
            raise Refused(f"{s[k:end]!r} is not a consistently grouped number")
    return i


def parse_expression(before: str, complete: bool = True) -> Expression | None:
    """The arithmetic expression that ``before`` (the text up to an ``=``) ends with.

    None if it does not end with an expression of at least one operator; ``Refused`` if it does but the
    expression is not one to compute (see the module docstring); ``NeedMoreText`` if the expression
    starts at the very beginning of ``before`` and ``complete`` is False (the text window cut it).
    """
    end = len(before)
    eq_space = 0
    while end > 0 and before[end - 1] in SPACES:
        end -= 1
        eq_space += 1
    if end == 0 or not before[end - 1].isdigit():
        return None
    numbers: list[str] = []
    ops: list[str] = []
    gaps: list[int] = []  # spaces on each side of each operator
    pos = end
    start = _read_number(before, pos)
    numbers.append(before[start:pos])
    pos = start
    while True:
        j = pos
        while j > 0 and before[j - 1] in SPACES:
            j -= 1
        if j == 0 and not complete:
            raise NeedMoreText()
        if j == 0 or before[j - 1] not in OPERATOR_CHARS:
            break
        op = before[j - 1]
        k = j - 1
        while k > 0 and before[k - 1] in SPACES:
            k -= 1
        if k == 0 and not complete:
            raise NeedMoreText()
        if k == 0 or not before[k - 1].isdigit():
            raise Refused(f"operator {op!r} has no number on its left (a sign or something else is glued there)")
        try:
            start = _read_number(before, k)
        except ValueError:  # pragma: no cover - checked above
            raise Refused("no number") from None
        gaps += [j - 1 - k, pos - j]
        ops.append(NORMAL.get(op, op))
        numbers.append(before[start:k])
        pos = start
    if not ops:
        return None
    if pos == 0 and not complete:
        raise NeedMoreText()
    if pos > 0 and not before[pos - 1].isspace():
        raise Refused(f"{before[pos - 1]!r} is glued to the expression")
    line = before[:pos].rstrip(SPACES)
    word = "" if not line or line[-1] == "\n" else line.rsplit(None, 1)[-1].lower().rstrip(":,;")
    if word in CONTINUING_WORDS or (word and (word[-1] in OPERATOR_CHARS or word[-1].isdigit())):
        raise Refused(f"{word!r} before the expression continues it")
    if word in LABEL_WORDS:
        raise Refused(f"after {word!r} the numbers are a label, score or code, not a sum")
    spaced = eq_space > 0
    if any((g > 0) != spaced for g in gaps):
        raise Refused("mixed spacing around the operators and '=' (a range, score or phone number, not a sum)")
    numbers.reverse()
    ops.reverse()
    digits = [n.translate({ord(c): None for c in GROUP_SEPARATORS}) for n in numbers]
    if any(len(d) > 1 and d[0] == "0" for d in digits):
        raise Refused("a number with a leading zero (a code or a date)")
    if set(ops) <= {"-", "/"} and not spaced and tuple(len(d) for d in digits) in PHONE_OR_DATE:
        raise Refused("the shape of a phone number or a date")
    items: list[str] = [digits[0]]
    for op, d in zip(ops, digits[1:]):
        items += [op, d]
    return Expression(tuple(items), spaced)


PRECEDENCE = {"+": 1, "-": 1, "*": 2, "/": 2, "^": 3}


def negate(v: str) -> str:
    return v[1:] if v.startswith("-") else v if v == "0" else "-" + v


Call = Callable[[str, str, str], str]  # (op name, left, right) -> answer; raises Refused


def evaluate(expr: Expression, infix: dict[str, str], call: Call) -> str:
    """The value of ``expr`` with the usual precedence, every step a compiled call.

    ``infix`` maps an operator symbol to the operation name that computes it; ``call(name, a, b)`` runs
    it. ``+`` and ``-`` on signed intermediate values use ``add``/``subtract`` on magnitudes; any other
    operator needs non-negative operands. Raises ``Refused`` naming what is missing.
    """
    for op in expr.items[1::2]:
        if op not in infix:
            raise Refused(f"no compiled operation computes {op!r}")

    def apply(op: str, a: str, b: str) -> str:
        if op in "+-" and infix.get(op) in ("add", "subtract"):
            subtracts_zero = op == "-" and b.lstrip("-") == "0"
            if op == "-":
                b = negate(b)
            a_neg, b_neg = a.startswith("-"), b.startswith("-")
            if subtracts_zero:  # "-0" has no sign: a - 0 is subtract(a, 0), not add (5-0 was refused)
                b_neg = not a_neg
            ma, mb = a.lstrip("-"), b.lstrip("-")
            if a_neg == b_neg:
                if "+" not in infix or infix["+"] != "add":
                    raise Refused("this chain needs add, which is not gated")
                total = call("add", ma, mb)
                return negate(total) if a_neg else total
            if "-" not in infix or infix["-"] != "subtract":
                raise Refused("this chain needs subtract, which is not gated")
            return call("subtract", mb, ma) if a_neg else call("subtract", ma, mb)
        if a.startswith("-") or b.startswith("-"):
            raise Refused(f"{infix[op]} takes non-negative operands")
        return call(infix[op], a, b)

    values: list[str] = [expr.items[0]]
    pending: list[str] = []
    for op, number in zip(expr.items[1::2], expr.items[2::2]):
        while pending and (PRECEDENCE.get(pending[-1], 1) > PRECEDENCE.get(op, 1)
                           or (PRECEDENCE.get(pending[-1], 1) == PRECEDENCE.get(op, 1) and op != "^")):
            b, a = values.pop(), values.pop()
            values.append(apply(pending.pop(), a, b))
        pending.append(op)
        values.append(number)
    while pending:
        b, a = values.pop(), values.pop()
        values.append(apply(pending.pop(), a, b))
    return values[0]

"""The four programs: parity, reverse, add, subtract, written in the language of ``program.py``.

Each function returns the output SOp of a program over inputs of at most ``max_len`` tokens. The
output holds one symbol per position and ``""`` where nothing is written; the answer is the
concatenation of the written symbols, left to right (``ops.py`` does the encoding and decoding).
"""
from __future__ import annotations

from neurosym.conn.program import (EQ, GE, GT, LT, Aggregate, Map, Select, SelectorWidth, SequenceMap,
                                   SOp, inputs, select_key)

DIGITS = "0123456789"
REVERSE_ALPHABET = DIGITS + "abcdefghijklmnopqrstuvwxyz"


def parity(max_len: int) -> SOp:
    """Parity of a bit string: count the 1s (selector width), take it mod 2, write it at position 0."""
    tokens, indices = inputs(tuple("01"), max_len)
    ones = SelectorWidth(select_key(tokens, lambda t: t == "1"), label="ones")
    first = Map(lambda i: i == 0, indices, label="first")
    return SequenceMap(lambda n, f: str(n % 2) if f else "", ones, first, label="parity")


def reverse(max_len: int, alphabet: str = REVERSE_ALPHABET) -> SOp:
    """Reverse: position i copies the token at position n-1-i, where n-1-i = #positions to my right."""
    tokens, indices = inputs(tuple(alphabet), max_len)
    opposite = SelectorWidth(Select(indices, indices, GT), label="opposite")
    return Aggregate(Select(indices, opposite, EQ), tokens, label="reverse")


def _columns(tokens: SOp, indices: SOp, op: str) -> tuple[SOp, SOp, SOp]:
    """For input ``a<op>b``: each position's column (0 = rightmost) and the digits of a and b in that column.

    The column of position i is the number of positions to its right. A digit of ``a`` sits left of
    the operator; its place value is the number of a-digits to its right. The digit of ``b`` in column c
    is the token at column c itself when that position lies right of the operator.
    """
    right = Select(indices, indices, GT)
    operator = select_key(tokens, lambda t: t == op)
    col = SelectorWidth(right, label="col")
    in_a = Aggregate(operator & right, tokens, label="in_a")  # the operator, if it lies to my right
    in_b = Aggregate(operator & Select(indices, indices, LT), tokens, label="in_b")
    is_a = select_key(in_a, lambda f: f == op)
    a_place = SelectorWidth(right & is_a, label="a_place")
    a_digit = Aggregate(Select(a_place, col, EQ) & is_a, tokens, label="a_digit")
    b_digit = SequenceMap(lambda t, f: t if f == op and t in DIGITS else None, tokens, in_b, label="b_digit")
    return col, a_digit, b_digit


def _digit(d) -> int:
    """A column's digit; "no digit" (a shorter operand) is 0. Other tokens never reach here on valid input."""
    return int(d) if d is not None and d in DIGITS else 0


def _combine(high: str, low: str | None) -> str:
    """Carry status of two adjacent blocks of columns: the higher block decides unless it propagates."""
    return high if high != "P" or low is None else low


def _prefix_status(col: SOp, status: SOp, max_len: int) -> SOp:
    """Kogge-Stone scan: after rounds with shifts 1, 2, 4, ... (each an attention + MLP layer) the status of
    column c is that of columns 0..c together, for every c < max_len."""
    shift = 1
    while shift < max_len:
        below = Aggregate(Select(col, col, lambda k, q, s=shift: k == q - s), status, label=f"below_{shift}")
        status = SequenceMap(_combine, status, below, label=f"status_{shift}")
        shift *= 2
    return status


def _blank_leading_zeros(col: SOp, digit: SOp, lead: SOp | None = None) -> SOp:
    """Write a digit only at or right of the highest non-zero column (column 0 always shows)."""
    last = Map(lambda c: c == 0, col, label="last")
    keep = SequenceMap(lambda d, is_last: d != 0 or is_last, digit, last, label="keep")
    kept_left = SelectorWidth(Select(col, col, GE) & select_key(keep, lambda k: k), label="kept_left")
    shown = Map(lambda n: n > 0, kept_left, label="shown")
    if lead is None:
        return SequenceMap(lambda d, s: str(d) if s else "", digit, shown, label="result")
    return SequenceMap(lambda d, s, m: str(d) if s else m, digit, shown, lead, label="result")


def add(max_digits: int) -> SOp:
    """``a+b`` for non-negative integers of up to ``max_digits`` digits each.

    Per column: s = a + b, status G (generates a carry, s > 9), P (propagates one, s == 9) or K. A
    prefix scan gives each column the status of everything below; the carry into column c is "G"
    in column c-1's scanned status. The sum digit is (s + carry) mod 10.
    """
    max_len = 2 * max_digits + 1
    tokens, indices = inputs(tuple(DIGITS + "+"), max_len)
    col, a_digit, b_digit = _columns(tokens, indices, "+")
    total = SequenceMap(lambda a, b: _digit(a) + _digit(b), a_digit, b_digit, label="column_sum")
    status = Map(lambda s: "G" if s > 9 else "P" if s == 9 else "K", total, label="status")
    scanned = _prefix_status(col, status, max_len)
    carry = Aggregate(Select(col, col, lambda k, q: k == q - 1), scanned, label="carry_in")
    digit = SequenceMap(lambda s, c: (s + (c == "G")) % 10, total, carry, label="sum_digit")
    return _blank_leading_zeros(col, digit)


def subtract(max_digits: int) -> SOp:
    """``a-b`` for non-negative integers of up to ``max_digits`` digits; ``-`` leads when b > a.

    Per column: d = a - b, status G (generates a borrow, d < 0), P (propagates one, d == 0) or K. The
    scanned status of the highest column is the sign: G means a < b. Then the network computes b - a
    instead, whose statuses are the same with G and K swapped, and writes "-" at position 0 (which is
    always left of the highest result column).
    """
    max_len = 2 * max_digits + 1
    tokens, indices = inputs(tuple(DIGITS + "-"), max_len)
    col, a_digit, b_digit = _columns(tokens, indices, "-")
    diff = SequenceMap(lambda a, b: _digit(a) - _digit(b), a_digit, b_digit, label="column_diff")
    status = Map(lambda d: "G" if d < 0 else "P" if d == 0 else "K", diff, label="status")
    scanned = _prefix_status(col, status, max_len)
    sign = Aggregate(select_key(indices, lambda i: i == 0), scanned, label="sign")  # column n-1 sees all
    borrow = Aggregate(Select(col, col, lambda k, q: k == q - 1), scanned, label="borrow_in")

    def column_digit(d: int, b: str | None, s: str) -> int:
        if s == "G":  # a < b: compute b - a, whose borrows are the swapped statuses
            return (-d - (b == "K")) % 10
        return (d - (b == "G")) % 10

    digit = SequenceMap(column_digit, diff, borrow, sign, label="diff_digit")
    first = Map(lambda i: i == 0, indices, label="first")
    lead = SequenceMap(lambda f, s: "-" if f and s == "G" else "", first, sign, label="minus")
    return _blank_leading_zeros(col, digit, lead)


__all__ = ["parity", "reverse", "add", "subtract", "DIGITS", "REVERSE_ALPHABET"]

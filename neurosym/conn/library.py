"""The programs of Tracr's ``lib.py``, written in this package's language (``program.py``).

Each ``make_*`` takes the input vocabulary and the maximum length and returns the output SOp; compile
it with ``compile_program`` (``causal=True`` for the ones marked causal-safe: they mean the same in a
decoder). Categorical outputs read as values; numerical ones (``frac_prevs``, ``pair_balance``) as
numbers. ``tests/test_conn_library.py`` checks each against a plain-Python reference on every input up
to a short length.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence

from neurosym.conn.program import (EQ, LT, TRUE, Aggregate, LinearSequenceMap, Map, Select, SelectorWidth,
                                   SequenceMap, SOp, Value, inputs)


def make_length(vocab: Sequence[Value], max_len: int) -> SOp:
    """Every position holds the input's length (selector width of an all-true selector)."""
    tokens, _ = inputs(vocab, max_len)
    return SelectorWidth(Select(tokens, tokens, TRUE), label="length")


def make_reverse(vocab: Sequence[Value], max_len: int) -> SOp:
    """The input reversed: position i copies position length - 1 - i."""
    tokens, indices = inputs(vocab, max_len)
    length = SelectorWidth(Select(tokens, tokens, TRUE), label="length")
    opposite = SequenceMap(lambda n, i: n - 1 - i, length, indices, label="opp_idx")
    return Aggregate(Select(indices, opposite, EQ), tokens, label="reverse")


def make_hist(vocab: Sequence[Value], max_len: int) -> SOp:
    """How many times each position's token occurs in the input."""
    tokens, _ = inputs(vocab, max_len)
    return SelectorWidth(Select(tokens, tokens, EQ), label="hist")


def make_sort_unique(vocab: Sequence[Value], max_len: int) -> SOp:
    """The tokens sorted ascending (tokens must be distinct): each goes to the count of smaller ones."""
    tokens, indices = inputs(vocab, max_len)
    target = SelectorWidth(Select(tokens, tokens, LT), label="target_pos")
    return Aggregate(Select(target, indices, EQ), tokens, label="sort")


def make_sort(vocab: Sequence[Value], max_len: int) -> SOp:
    """The tokens (numbers) sorted ascending, ties kept in input order: key = token + index / max_len."""
    tokens, indices = inputs(vocab, max_len)
    keys = SequenceMap(lambda t, i: t + i / max_len / (1 + max_len), tokens, indices, label="keys")
    target = SelectorWidth(Select(keys, keys, LT), label="target_pos")
    return Aggregate(Select(target, indices, EQ), tokens, label="sort")


def make_sort_freq(vocab: Sequence[Value], max_len: int) -> SOp:
    """The tokens sorted by how often they occur (most frequent first), ties in input order."""
    tokens, indices = inputs(vocab, max_len)
    hist = SelectorWidth(Select(tokens, tokens, EQ), label="hist")
    keys = SequenceMap(lambda h, i: -h + i / (max_len + 1), hist, indices, label="keys")
    target = SelectorWidth(Select(keys, keys, LT), label="target_pos")
    return Aggregate(Select(target, indices, EQ), tokens, label="sort_freq")


def make_frac_prevs(vocab: Sequence[Value], max_len: int, is_counted: Callable[[Value], bool]) -> SOp:
    """Fraction of the positions up to here whose token is counted (numerical; causal-safe)."""
    tokens, indices = inputs(vocab, max_len)
    return _frac_prevs(tokens, indices, is_counted, "frac_prevs")


def _frac_prevs(tokens: SOp, indices: SOp, is_counted: Callable[[Value], bool], label: str) -> SOp:
    bools = Map(lambda t: int(bool(is_counted(t))), tokens, numerical=True, label=f"{label}_bools")
    return Aggregate(Select(indices, indices, lambda k, q: k <= q), bools, label=label)


def _pair_balance(tokens: SOp, indices: SOp, open_token: str, close_token: str) -> SOp:
    opens = _frac_prevs(tokens, indices, lambda t: t == open_token, f"opens_{open_token}")
    closes = _frac_prevs(tokens, indices, lambda t: t == close_token, f"closes_{close_token}")
    return LinearSequenceMap(opens, closes, 1, -1, label=f"balance_{open_token}{close_token}")


def make_pair_balance(vocab: Sequence[Value], max_len: int, open_token: str = "(", close_token: str = ")") -> SOp:
    """Fraction of opening minus fraction of closing tokens up to here (numerical; causal-safe)."""
    tokens, indices = inputs(vocab, max_len)
    return _pair_balance(tokens, indices, open_token, close_token)


def make_shuffle_dyck(vocab: Sequence[Value], max_len: int, pairs: Sequence[str] = ("()",)) -> SOp:
    """1 where every pair type is balanced (never negative, zero at the end), else 0, at every position."""
    tokens, indices = inputs(vocab, max_len)
    balances = [_pair_balance(tokens, indices, p[0], p[1]) for p in pairs]
    negative = [Map(lambda b: b < 0, b, label=f"neg_{i}") for i, b in enumerate(balances)]
    zero = [Map(lambda b: b == 0, b, label=f"zero_{i}") for i, b in enumerate(balances)]
    any_negative = negative[0] if len(negative) == 1 else Map(lambda *n: any(n), *negative, label="any_negative")
    all_zero = zero[0] if len(zero) == 1 else Map(lambda *z: all(z), *zero, label="all_zero")
    as_number = Map(lambda n: int(n), any_negative, numerical=True, label="any_negative_num")
    has_neg = Aggregate(Select(indices, indices, TRUE), as_number, label="has_neg")
    length = SelectorWidth(Select(tokens, tokens, TRUE), label="length")
    last = Map(lambda n: n - 1, length, label="last")
    last_zero = Aggregate(Select(indices, last, EQ), all_zero, label="last_zero")
    not_has_neg = Map(lambda h: h == 0, has_neg, label="not_has_neg")
    return SequenceMap(lambda z, n: int(bool(z) and n), last_zero, not_has_neg, label="shuffle_dyck")


def make_shuffle_dyck2(vocab: Sequence[Value], max_len: int) -> SOp:
    return make_shuffle_dyck(vocab, max_len, ("()", "{}"))


def shift_by(offset: int, sop: SOp, indices: SOp) -> SOp:
    """``sop`` moved ``offset`` positions right, None-padded (causal-safe for offset >= 0)."""
    return Aggregate(Select(indices, indices, lambda k, q: q == k + offset), sop, label=f"shift_by_{offset}")


def make_detect_pattern(vocab: Sequence[Value], max_len: int, pattern: Sequence[Value]) -> SOp:
    """True at the last position of each occurrence of ``pattern``; None where it cannot end yet."""
    tokens, indices = inputs(vocab, max_len)
    detectors = []
    for i, element in enumerate(reversed(pattern)):
        d = Map(lambda t, e=element: t == e, tokens, label=f"is_{element}_{i}")
        detectors.append(d if i == 0 else shift_by(i, d, indices))
    found = detectors.pop()
    while detectors:
        found = SequenceMap(lambda a, b: None if a is None or b is None else a and b, found, detectors.pop(),
                            label=f"and_{len(detectors)}")
    return found


def make_count_less_freq(vocab: Sequence[Value], max_len: int, n: int) -> SOp:
    """How many positions hold a token that occurs at most ``n`` times."""
    tokens, _ = inputs(vocab, max_len)
    hist = SelectorWidth(Select(tokens, tokens, EQ), label="hist")
    return SelectorWidth(Select(hist, hist, lambda k, q: k <= n), label="count_less_freq")


def make_count(vocab: Sequence[Value], max_len: int, token: Value) -> SOp:
    """How many times ``token`` occurs, at every position."""
    tokens, _ = inputs(vocab, max_len)
    return SelectorWidth(Select(tokens, tokens, lambda k, q: k == token), label=f"count_{token}")


def make_nary_sequencemap(fn: Callable[..., Value], *sops: SOp) -> SOp:
    """``fn`` of several SOps at each position: one SequenceMap (the compiler takes n inputs directly)."""
    return SequenceMap(fn, *sops, label="nary")


__all__ = ["make_length", "make_reverse", "make_hist", "make_sort_unique", "make_sort", "make_sort_freq",
           "make_frac_prevs", "make_pair_balance", "make_shuffle_dyck", "make_shuffle_dyck2", "shift_by",
           "make_detect_pattern", "make_count_less_freq", "make_count", "make_nary_sequencemap"]

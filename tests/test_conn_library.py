"""Tracr's lib.py programs in our language: compiled, and checked on every input up to a short length
against plain-Python references; selector or/not; causal (decoder) compilation; numerical linear maps."""
from __future__ import annotations

import itertools
from collections import Counter
from fractions import Fraction

import pytest

from experiments.conn_vs_tracr import balanced  # the benchmark's Dyck reference
from neurosym.conn import library as lib
from neurosym.conn.compiler import compile_program
from neurosym.conn.program import EQ, Aggregate, Select, evaluate, inputs, select_key

N = 6  # every input up to this length


def every(vocab, max_len=N, distinct=False):
    for n in range(1, max_len + 1):
        for s in itertools.product(vocab, repeat=n):
            if not distinct or len(set(s)) == n:
                yield list(s)


def frac_prevs(s, tok):
    return [Fraction(s[:i + 1].count(tok), i + 1) for i in range(len(s))]


def sort_freq(s):
    counts = Counter(s)
    return [t for _, t in sorted(((-counts[t], i), t) for i, t in enumerate(s))]


def detect(s, pattern):
    k = len(pattern)
    return [None if i < k - 1 else list(s[i - k + 1:i + 1]) == list(pattern) for i in range(len(s))]


CASES = {
    # name: (program, vocab, reference, distinct inputs only)
    "length": (lambda: lib.make_length(tuple("ab"), N), "ab", lambda s: [len(s)] * len(s), False),
    "reverse": (lambda: lib.make_reverse(tuple("abc"), N), "abc", lambda s: s[::-1], False),
    "hist": (lambda: lib.make_hist(tuple("abc"), N), "abc", lambda s: [s.count(t) for t in s], False),
    "sort_unique": (lambda: lib.make_sort_unique(tuple(range(7)), N), range(7), sorted, True),
    "sort": (lambda: lib.make_sort(tuple(range(4)), N), range(4), sorted, False),
    "sort_freq": (lambda: lib.make_sort_freq(tuple("abc"), N), "abc", sort_freq, False),
    "count_less_freq": (lambda: lib.make_count_less_freq(tuple("abc"), N, 2), "abc",
                        lambda s: [sum(s.count(t) <= 2 for t in s)] * len(s), False),
    "count": (lambda: lib.make_count(tuple("abc"), N, "a"), "abc", lambda s: [s.count("a")] * len(s), False),
    "detect_pattern": (lambda: lib.make_detect_pattern(tuple("abc"), N, "ab"), "abc", lambda s: detect(s, "ab"),
                       False),
    "shuffle_dyck": (lambda: lib.make_shuffle_dyck(tuple("()a"), N), "()a", lambda s: balanced(s, ["()"]), False),
    "shuffle_dyck2": (lambda: lib.make_shuffle_dyck2(tuple("(){}"), N), "(){}",
                      lambda s: balanced(s, ["()", "{}"]), False),
}


@pytest.mark.parametrize("name", list(CASES))
def test_library_program_is_exact_on_every_short_input(name):
    build, vocab, reference, distinct = CASES[name]
    compiled = compile_program(build())
    strings = list(every(vocab, distinct=distinct))
    got = compiled(strings)
    wrong = [(s, g, reference(s)) for s, g in zip(strings, got) if g != reference(s)]
    assert not wrong, f"{len(wrong)}/{len(strings)} wrong, e.g. {wrong[:3]}"


@pytest.mark.parametrize("causal", [False, True])
def test_numerical_programs_frac_prevs_and_pair_balance(causal):
    frac = compile_program(lib.make_frac_prevs(tuple("ab("), N, lambda t: t == "("), causal=causal)
    balance = compile_program(lib.make_pair_balance(tuple("()a"), N), causal=causal)
    strings = list(every("()a"))
    for s, f, b in zip(strings, frac([["(" if t == "(" else "a" for t in s] for s in strings]),
                       balance(strings)):
        want_f = frac_prevs(["(" if t == "(" else "a" for t in s], "(")
        want_b = [o - c for o, c in zip(frac_prevs(s, "("), frac_prevs(s, ")"))]
        assert max(abs(x - float(w)) for x, w in zip(f, want_f)) < 1e-6
        assert max(abs(x - float(w)) for x, w in zip(b, want_b)) < 1e-6, (s, b, want_b)


def test_sizes_stay_small_where_a_table_would_explode():
    """pair_balance is a linear map (2 MLP units), not a table over every pair of fractions."""
    s = compile_program(lib.make_pair_balance(tuple("()a"), 16)).stats()
    assert s["max_mlp_hidden"] <= 4 and s["d_model"] < 40
    dyck = compile_program(lib.make_shuffle_dyck2(tuple("(){}"), 16)).stats()
    assert dyck["parameters"] < 20_000


def test_causal_compilation_sees_only_the_prefix():
    """``length`` compiled as a decoder is the length so far; non-causal it is the whole length."""
    out = lib.make_length(tuple("ab"), N)
    causal, full = compile_program(out, causal=True), compile_program(out)
    for s in every("ab", 4):
        assert causal([s])[0] == [i + 1 for i in range(len(s))] == evaluate(out, s, causal=True)[out]
        assert full([s])[0] == [len(s)] * len(s)
    # a prefix's outputs do not depend on what follows it
    assert causal([list("abba")])[0][:2] == causal([list("ab")])[0]


def test_selector_or_and_not():
    tokens, indices = inputs(tuple("abc"), N)
    same = Select(tokens, tokens, EQ)
    neighbour = Select(indices, indices, lambda k, q: abs(k - q) == 1)
    is_a = select_key(tokens, lambda t: t == "a")
    from neurosym.conn.program import SelectorWidth

    programs = [SelectorWidth(same | neighbour, label="or"), SelectorWidth(~same, label="not"),
                SelectorWidth(~(same | is_a) & neighbour, label="mixed"),
                Aggregate(~Select(indices, indices, lambda k, q: k != 0), tokens, label="first")]
    for out in programs:
        compiled = compile_program(out)
        strings = list(every("abc", 5))
        for s, got in zip(strings, compiled(strings)):
            assert got == evaluate(out, s)[out], (out.label, s)
    s = list("abca")
    assert evaluate(programs[0], s)[programs[0]] == [3, 3, 3, 3]  # same token or next to me (me included)


def test_conn_vs_tracr_script_prints_our_side_and_how_to_get_tracrs(capsys, monkeypatch):
    """experiments/conn_vs_tracr.py without Tracr: says how to install it, and our rows are all right."""
    import importlib.util
    import sys
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "experiments" / "conn_vs_tracr.py"
    spec = importlib.util.spec_from_file_location("conn_vs_tracr", path)
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    monkeypatch.setitem(sys.modules, "tracr", None)  # import tracr fails, as where it is not installed
    assert script.main(["--max-len", "4", "--programs", "length", "pair_balance", "detect_pattern", "sort_freq",
                        "nary_sequencemap", "--per-length", "2"]) == 0
    out = capsys.readouterr().out
    assert "Tracr is not installed" in out and "--tracr-python" in out
    rows = [line.split() for line in out.splitlines() if line.split()[:2][1:] == ["4"]]
    assert [r[0] for r in rows] == ["length", "pair_balance", "detect_pattern", "sort_freq", "nary_sequencemap"]
    assert all(r[-1] == "8/8" for r in rows), rows

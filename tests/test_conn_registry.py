"""The public op registry (``neurosym.conn.register``) and the expression reader the gate relies on."""
from __future__ import annotations

import pytest

from neurosym.conn import OPS, ConnGate, ConnInputError, get_op, register, unregister
from neurosym.conn.expr import Expression, Refused, evaluate, parse_expression
from neurosym.conn.programs import reverse
from neurosym.model.tiny import build_tokenizer


@pytest.fixture
def mirror():
    register("mirror", lambda n: reverse(n, alphabet="abc"), arity=1, alphabet="abc", default_max_len=6,
             example=("abc",))
    yield "mirror"
    unregister("mirror")


def test_registered_op_runs_and_the_gate_takes_a_trigger_for_it(mirror):
    assert get_op("mirror")("abb") == "bba"
    with pytest.raises(ConnInputError, match="has no trigger"):
        ConnGate(build_tokenizer(), ops=["mirror"])  # was a KeyError on DEFAULT_TRIGGERS
    gate = ConnGate(build_tokenizer(), ops=["mirror", "add"], triggers={"mirror": r"\bm\[([abc]+)\]"})
    assert gate.remaining("say m[cab]=") == "bac"
    assert gate.remaining("say 1+2=") == "3"
    assert gate.remaining("xm[cab]=") is None  # glued to a word


@pytest.mark.parametrize("kwargs,match", [
    (dict(name="add"), "already registered"),
    (dict(name="two words"), "must be a word"),
    (dict(infix="+", arity=2), "already calls 'add'"),
    (dict(infix="%", arity=2), "infix must be one of"),
    (dict(trigger=r"f\((a)\)(b)"), "has 2 group"),
    (dict(trigger=r"f\(("), "not a valid regular expression"),
    (dict(default_max_len=5000), "default_max_len must be in 1..256"),
])
def test_register_refuses_what_would_fail_later(kwargs, match):
    args = dict(name="newop", build=lambda n: reverse(n, alphabet="ab"), arity=1, alphabet="ab", default_max_len=4)
    args.update(kwargs)
    name = args.pop("name")
    build = args.pop("build")
    before = dict(OPS)
    with pytest.raises(ConnInputError, match=match):
        register(name, build, **args)
    assert OPS == before  # a refused registration changes nothing


def test_get_op_caps_max_len():
    with pytest.raises(ConnInputError, match="above the limit of 256"):
        get_op("add", 2000)


def test_precedence_and_signs_compose_calls():
    calls = []

    def call(name, a, b):
        calls.append(name)
        a_, b_ = int(a), int(b)
        return str({"add": a_ + b_, "subtract": a_ - b_, "mul": a_ * b_}[name])

    infix = {"+": "add", "-": "subtract", "*": "mul"}
    assert evaluate(Expression(("3", "*", "4", "+", "2"), True), infix, call) == "14"
    assert evaluate(Expression(("2", "+", "3", "*", "4"), True), infix, call) == "14"
    assert evaluate(Expression(("10", "-", "3", "-", "2"), True), infix, call) == "5"
    assert evaluate(Expression(("3", "-", "5", "-", "4"), True), infix, call) == "-6"  # -2 - 4 = -(2 + 4)
    assert calls[-2:] == ["subtract", "add"]  # magnitudes only: the networks take no signs
    with pytest.raises(Refused, match=r"computes '\*'"):
        evaluate(Expression(("3", "*", "4", "+", "2"), True), {"+": "add"}, call)


@pytest.mark.parametrize("before,items", [
    ("Q: 12 + 5 + 7 ", ("12", "+", "5", "+", "7")),
    ("1,234,567-1", ("1234567", "-", "1")),
    ("a\n3×4", ("3", "*", "4")),
    ("so 8 − 2 ", ("8", "-", "2")),
])
def test_parse_reads_the_whole_expression(before, items):
    assert parse_expression(before).items == items


@pytest.mark.parametrize("before", ["x12+5", "3.5+1", "$5+3", "-3+5", "10:30-5", "4 x 3 + 2 ", "score 3-2",
                                    "3-2 ", "555-1234", "2024-01-05", "1,23+4", "1,2345+5", "007+1", "1 234+5"])
def test_parse_refuses_what_is_not_a_sum(before):
    with pytest.raises(Refused):
        parse_expression(before)


def test_parse_without_an_operator_is_not_an_expression():
    assert parse_expression("the year 2024") is None and parse_expression("x = ") is None

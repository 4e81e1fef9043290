"""The compiler: each primitive compiles to attention/MLP weights that reproduce the interpreter exactly."""
from __future__ import annotations

import itertools
import operator

import pytest
import torch
from torch import nn

from neurosym.conn.compiler import compile_program
from neurosym.conn.errors import ConnInputError
from neurosym.conn.model import MLP, Attention, AttentionHead, CompiledTransformer
from neurosym.conn.program import (EQ, GT, LT, Aggregate, LinearMap, Map, ProgramError, Select, SelectorWidth,
                                   SequenceMap, evaluate, inputs, select_key)

VOCAB = tuple("abc")
MAX_LEN = 5


def all_strings(alphabet, max_len):
    for n in range(1, max_len + 1):
        yield from (list(s) for s in itertools.product(alphabet, repeat=n))


def shift_right():
    """Each position copies its left neighbour's token (None at position 0)."""
    tokens, indices = inputs(VOCAB, MAX_LEN)
    return Aggregate(Select(indices, indices, lambda k, q: k == q - 1), tokens, label="prev")


def count_a_left():
    """How many 'a' lie strictly left of each position (selector width of a conjunction)."""
    tokens, indices = inputs(VOCAB, MAX_LEN)
    return SelectorWidth(Select(indices, indices, LT) & select_key(tokens, lambda t: t == "a"), label="a_left")


def sorted_pair():
    """A sequence map over (token, previous token): are they in order?"""
    tokens, indices = inputs(VOCAB, MAX_LEN)
    prev = Aggregate(Select(indices, indices, lambda k, q: k == q - 1), tokens)
    return SequenceMap(lambda t, p: "start" if p is None else ("up" if p <= t else "down"), tokens, prev)


def majority_a_prefix():
    """Numerical mean (fraction of 'a' in the prefix), discretised by a numerical-input Map."""
    tokens, indices = inputs(VOCAB, MAX_LEN)
    is_a = Map(lambda t: int(t == "a"), tokens, numerical=True)
    frac = Aggregate(Select(indices, indices, lambda k, q: k <= q), is_a, label="frac_a")
    return Map(lambda f: f > 0.5, frac, label="majority")


def last_token():
    """A query-independent selection copied to every position (the token at the last position)."""
    tokens, indices = inputs(VOCAB, MAX_LEN)
    right = SelectorWidth(Select(indices, indices, GT))
    return Aggregate(select_key(right, lambda r: r == 0), tokens)


PROGRAMS = [shift_right, count_a_left, sorted_pair, majority_a_prefix, last_token]


@pytest.mark.parametrize("build", PROGRAMS, ids=lambda f: f.__name__)
def test_compiled_program_equals_interpreter_on_every_input(build):
    out = build()
    compiled = compile_program(out)
    strings = list(all_strings(VOCAB, MAX_LEN))  # 363 inputs, every position checked
    got = compiled(strings)
    for s, g in zip(strings, got):
        assert g == evaluate(out, s)[out], "".join(s)


def test_every_intermediate_value_is_in_the_residual_stream():
    out = count_a_left()
    compiled = compile_program(out)
    tokens = list("abaca")
    trace = compiled.trace(tokens)
    want = evaluate(out, tokens)
    assert trace["a_left"] == want[out] == [0, 1, 1, 2, 2]
    assert trace["tokens"] == tokens and trace["indices"] == [0, 1, 2, 3, 4]


def test_outputs_are_exactly_one_hot():
    """Exact, not approximately: every real position's scores are a 0/1 vector with a single 1."""
    compiled = compile_program(majority_a_prefix())
    strings = list(all_strings(VOCAB, MAX_LEN))
    ids, mask = compiled.encode(strings)
    logits = compiled.model(ids, mask)[:, 1:][mask[:, 1:]]
    assert torch.equal(logits, torch.nn.functional.one_hot(logits.argmax(-1), logits.shape[-1]).float())


def test_forward_is_only_attention_and_mlp_arithmetic():
    """Trace the forward graph: the only modules called are the Linear/Embedding weights, the only
    functions are tensor ops; no Python callable from the program survives compilation."""
    compiled = compile_program(count_a_left())
    gm = torch.fx.symbolic_trace(compiled.model)
    module_types = {type(gm.get_submodule(n.target)) for n in gm.graph.nodes if n.op == "call_module"}
    assert module_types == {nn.Linear, nn.Embedding}
    functions = {n.target for n in gm.graph.nodes if n.op == "call_function"}
    methods = {n.target for n in gm.graph.nodes if n.op == "call_method"}
    assert functions <= {torch.arange, torch.cat, torch.softmax, torch.nn.functional.hardtanh, operator.matmul,
                         operator.add, operator.invert, operator.getitem, getattr}, functions
    assert methods <= {"transpose", "masked_fill", "index_add_"}, methods
    strings = [list("abaca"), list("cc")]
    ids, mask = compiled.encode(strings)
    assert torch.equal(gm(ids, mask), compiled.model(ids, mask))
    # the module holds tensors only: its state is its parameters and index buffers
    allowed = (CompiledTransformer, Attention, AttentionHead, MLP, nn.Linear, nn.Embedding, nn.ModuleList)
    assert all(isinstance(m, allowed) for m in compiled.model.modules())


def test_weights_carry_the_computation():
    """Zeroing one layer's weights changes the answer: nothing outside the weights computes it."""
    compiled = compile_program(count_a_left())
    strings = [list("aaab"), list("abca")]
    before = compiled(strings)
    assert before == [[0, 1, 2, 3], [0, 1, 1, 1]]
    for p in compiled.model.layers[0].parameters():
        p.zero_()
    assert compiled(strings) != before


def test_batching_and_padding_do_not_change_results():
    out = sorted_pair()
    compiled = compile_program(out)
    strings = [list("cba"), list("a"), list("abcab")]
    assert compiled(strings) == [compiled([s])[0] for s in strings]


def test_network_refuses_inputs_longer_than_compiled():
    compiled = compile_program(shift_right())
    with pytest.raises(ConnInputError, match="compiled maximum length 5"):
        compiled([list("abcabc")])
    with pytest.raises(ConnInputError, match="not in this network's vocabulary"):
        compiled([list("abz")])


def test_program_errors_are_explicit():
    tokens, indices = inputs(VOCAB, MAX_LEN)
    mixed = Aggregate(Select(indices, indices, lambda k, q: True), tokens, label="mixed")
    with pytest.raises(ProgramError, match="different values"):
        evaluate(mixed, list("ab"))
    numeric = Map(lambda t: 1, tokens, numerical=True)
    assert compile_program(numeric)([list("ab")]) == [[1.0, 1.0]]  # a numerical output reads as numbers
    with pytest.raises(ProgramError, match="must be numerical SOps"):
        LinearMap((tokens,), (1.0,))
    with pytest.raises(ProgramError, match="all be categorical"):
        SequenceMap(lambda a, b: a, numeric, tokens)
    with pytest.raises(ProgramError, match="0/1 values"):
        Aggregate(Select(indices, indices, EQ), Map(lambda t: 2, tokens, numerical=True))

"""Precision: networks are exact by construction in float32; below it they run only as far as verified."""
from __future__ import annotations

import argparse

import pytest
import torch

from neurosym.conn import ConnInputError
from neurosym.conn.cli import register
from neurosym.conn.compiler import compile_program
from neurosym.conn.ops import OPS, ConnOp
from neurosym.conn.precision import compile_for, verify
from neurosym.conn.program import ProgramError


def fresh(name: str, max_len: int) -> ConnOp:
    """A network of our own (not the shared cache): these tests cast it."""
    return ConnOp(OPS[name], max_len, compile_program(OPS[name].build(max_len)))


def test_float32_is_exact_with_margin_one_and_bf16_margin_is_measured():
    op = fresh("parity", 64)
    e32, e16 = verify(op, "fp32"), verify(op, "bf16")
    assert (e32.longest, e32.margin, e32.reason) == (64, 1.0, "")
    assert e16.longest == 64 and 0 < e16.margin < 1  # exact at 64, with a thinner margin (0.0625)


def test_lower_precision_refuses_unverified_and_too_long_inputs():
    op = fresh("reverse", 128)
    assert op.program.precision == "float32"
    op.program.model.to(torch.bfloat16)
    with pytest.raises(ConnInputError, match="has not been verified"):
        op("abc")
    e = verify(op, "bf16")
    assert 0 < e.longest < 128 and "significant bits" in e.reason  # 72 here: the steps near 1/96 blur
    assert op("abc123") == "321cba"  # within the verified length: runs, and is right
    with pytest.raises(ConnInputError, match=f"exact only up to {e.longest} tokens"):
        op("a" * (e.longest + 8))
    op.program.model.to(torch.float32)
    assert op("a" * 100 + "b") == "b" + "a" * 100  # back in float32: exact at every compiled length


def test_float16_overflow_is_named():
    e = verify(fresh("parity", 128), "fp16")
    assert e.longest == 0 and "overflow float16" in e.reason


def test_conn_info_prints_margins_and_exact_lengths(capsys):
    parser = argparse.ArgumentParser(prog="neurosym")
    register(parser.add_subparsers())
    args = parser.parse_args(["conn", "info", "parity", "--max-len", "128"])
    assert args.func(args) == 0
    lines = capsys.readouterr().out.splitlines()
    header = lines.index(next(line for line in lines if line.startswith("op") and "margin fp32" in line))
    row = lines[header + 1].split()
    assert row[0] == "parity"
    assert row[1:3] == ["1", "128"]          # fp32: margin 1, exact up to 128
    assert float(row[3]) > 0 and 0 < int(row[4]) < 128  # bf16: exact up to a shorter length
    assert int(row[6]) == 0 and "overflow" in lines[header + 1]  # fp16: nothing
    assert "bf16x8" in lines[header] and int(row[8]) == 128 > int(row[4])  # scaled margins: exact at every length


def test_scaled_margins_compute_the_same_function():
    """margin=8 changes how far units sit from their band, never what the network computes (float32)."""
    import itertools

    from neurosym.conn import library as lib

    programs = [lib.make_sort_freq(tuple("abc"), 5), lib.make_shuffle_dyck2(tuple("(){}"), 5),
                lib.make_pair_balance(tuple("()a"), 5), lib.make_detect_pattern(tuple("abc"), 5, "ab")]
    for out in programs:
        plain, scaled = compile_program(out), compile_program(out, margin=8.0)
        strings = [list(s) for n in range(1, 6) for s in itertools.product(plain.vocab, repeat=n)]
        if out.kind == "numerical":  # pair_balance: a linear map, whose units the margin leaves alone
            got, want = torch.tensor(sum(scaled(strings), [])), torch.tensor(sum(plain(strings), []))
            assert torch.allclose(got, want, atol=1e-6)
        else:
            assert scaled(strings) == plain(strings), out.label
    for name, operands in [("add", ("98765", "4321")), ("subtract", ("123", "4567")), ("reverse", ("abc123",))]:
        op = ConnOp(OPS[name], 16, compile_program(OPS[name].build(16), margin=8.0))
        assert op(*operands) == fresh(name, 16)(*operands)
    with pytest.raises(ProgramError, match="margin must be at least 1"):
        compile_program(programs[0], margin=0.5)


def test_compile_for_bf16_runs_longer_inputs_exactly_and_refuses_beyond():
    plain = fresh("reverse", 128)
    e_plain = verify(plain, "bf16")
    op, e = compile_for("reverse", "bf16", 128)
    assert op.program.model.unembed.weight.dtype == torch.bfloat16 and op.program.margin == 8.0
    assert e.longest > e_plain.longest  # 88 against 72 here
    text = ("0123456789abcdefghijklmnopqrstuvwxyz" * 3)[:e.longest]
    assert op(text) == text[::-1]  # in bfloat16, longer than the plain network may run
    with pytest.raises(ConnInputError, match=f"exact only up to {e.longest} tokens"):
        op(text + "ab")

"""The four compiled operations are exact for every input up to their maximum and refuse the rest."""
from __future__ import annotations

import itertools
import random

import pytest
import torch

from neurosym.conn import ConnInputError, get_op
from neurosym.conn.program import evaluate

TRUTH = {
    "parity": lambda x: str(x.count("1") % 2),
    "reverse": lambda x: x[::-1],
    "add": lambda a, b: str(int(a) + int(b)),
    "subtract": lambda a, b: str(int(a) - int(b)),
}


def check(name: str, cases: list[tuple[str, ...]], max_len: int | None = None) -> None:
    got = get_op(name, max_len).batch(cases)
    wrong = [(c, g, TRUTH[name](*c)) for c, g in zip(cases, got) if g != TRUTH[name](*c)]
    assert not wrong, f"{len(wrong)}/{len(cases)} wrong, e.g. {wrong[:5]}"


def test_default_networks_and_sizes():
    sizes = {name: get_op(name).stats() for name in TRUTH}
    assert {n: s["max_len"] for n, s in sizes.items()} == {"parity": 64, "reverse": 64, "add": 32, "subtract": 32}
    assert sizes["parity"]["layers"] == 3 and sizes["reverse"]["layers"] == 3
    for s in sizes.values():
        assert s["layers"] == s["attention_layers"] + s["mlp_layers"] and s["d_model"] > 0


def test_examples():
    assert get_op("parity")("0110101") == "0"
    assert get_op("parity")("0111") == "1"
    assert get_op("reverse")("31415") == "51413"
    assert get_op("add")("123", "456") == "579"
    assert get_op("subtract")("456", "123") == "333"


# --- exhaustive for short inputs ---------------------------------------------------------------

def test_parity_exhaustive_up_to_12_bits():
    check("parity", [("".join(b),) for n in range(1, 13) for b in itertools.product("01", repeat=n)])


def test_reverse_exhaustive_short():
    alphabet = get_op("reverse").spec.alphabet
    cases = [("".join(s),) for n in (1, 2) for s in itertools.product(alphabet, repeat=n)]
    cases += [("".join(s),) for n in range(3, 8) for s in itertools.product("0z7", repeat=n)]
    check("reverse", cases)


@pytest.mark.parametrize("name", ["add", "subtract"])
def test_arithmetic_exhaustive_up_to_two_digits(name):
    check(name, [(str(a), str(b)) for a in range(100) for b in range(100)])


@pytest.mark.parametrize("name", ["add", "subtract"])
def test_arithmetic_exhaustive_with_leading_zeros(name):
    numbers = ["0", "00", "01", "10", "09", "90", "99", "009", "900", "999", "1000"]
    check(name, list(itertools.product(numbers, repeat=2)))


# --- random up to the compiled maximum ---------------------------------------------------------

def random_number(rng: random.Random, digits: int) -> str:
    return str(rng.randrange(10 ** (digits - 1) if digits > 1 else 0, 10 ** digits))


def carry_heavy(rng: random.Random, digits: int) -> str:
    """Numbers made of 9s and 0s: long carry/borrow chains."""
    return str(int("".join(rng.choice("99990") for _ in range(digits)) or "0"))


@pytest.mark.parametrize("name", ["add", "subtract"])
def test_arithmetic_random_up_to_max(name):
    rng = random.Random(f"{name}-1")
    top = get_op(name).max_len
    cases = []
    for _ in range(1000):
        make = carry_heavy if rng.random() < 0.3 else random_number
        cases.append((make(rng, rng.randint(1, top)), make(rng, rng.randint(1, top))))
    cases += [("9" * top, "9" * top), ("1" + "0" * (top - 1), "1"), ("1", "1" + "0" * (top - 1)), ("0", "9" * top)]
    check(name, cases)


def test_parity_and_reverse_random_up_to_max():
    rng = random.Random(2)
    for name in ("parity", "reverse"):
        op = get_op(name)
        lengths = [rng.randint(1, op.max_len) for _ in range(1500)] + [op.max_len] * 100
        check(name, [("".join(rng.choice(op.spec.alphabet) for _ in range(n)),) for n in lengths])


def test_larger_compiled_maximum():
    """Beyond the default maximum a larger network is compiled on request, and is exact there too."""
    rng = random.Random(3)
    check("parity", [("".join(rng.choice("01") for _ in range(n)),) for n in (65, 100, 128) for _ in range(20)], 128)
    check("add", [(random_number(rng, 40), random_number(rng, 40)) for _ in range(20)], 40)


# --- refusals and the definition of subtract ---------------------------------------------------

def test_subtract_writes_a_leading_minus_when_b_exceeds_a():
    sub = get_op("subtract")
    assert sub("123", "456") == "-333"
    assert sub("0", "7") == "-7"
    assert sub("1", "1000") == "-999"
    assert sub("5", "5") == "0"
    assert sub("100", "99") == "1"


@pytest.mark.parametrize("name,operands", [("parity", ("1" * 65,)), ("reverse", ("a" * 65,)),
                                           ("add", ("1" * 33, "1")), ("subtract", ("1", "9" * 33))])
def test_too_long_is_refused_not_answered(name, operands):
    with pytest.raises(ConnInputError, match="exceeds the compiled maximum") as err:
        get_op(name)(*operands)
    assert "max_len" in str(err.value)  # says how to fix it


@pytest.mark.parametrize("name,operands,match", [
    ("parity", ("0120",), "characters '2'"),
    ("reverse", ("ABC",), "not allowed"),
    ("add", ("12", "-3"), "non-negative decimal integer"),
    ("add", ("12",), "takes 2 operand"),
    ("subtract", ("", "3"), "non-empty"),
    ("multiply", ("2", "3"), "unknown operation"),
])
def test_invalid_input_is_refused(name, operands, match):
    with pytest.raises(ConnInputError, match=match):
        get_op(name)(*operands)


def test_compiled_network_matches_its_program_position_by_position():
    """The network's per-position output is the interpreter's (not only the decoded answer)."""
    from neurosym.conn import programs

    out = programs.subtract(4)
    program = get_op("subtract", 4).program
    for a, b in [("1000", "1"), ("7", "9999"), ("4321", "4321"), ("0", "0")]:
        tokens = list(f"{a}-{b}")
        assert program([tokens])[0] == evaluate(out, tokens)[out]


def test_exact_one_hot_outputs_at_max_length():
    op = get_op("add")
    rng = random.Random(4)
    tokens = [op.tokens((random_number(rng, 32), random_number(rng, 32))) for _ in range(8)]
    logits = op.program.logits(tokens)[:, 1:]
    assert torch.equal(logits, torch.nn.functional.one_hot(logits.argmax(-1), logits.shape[-1]).float())

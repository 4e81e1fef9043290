"""A small RASP-like language for programs that a transformer executes exactly.

A program is a graph of *sequence operations* (``SOp``, after RASP): each one holds one value per
position of the input. The primitives are

* ``Tokens`` and ``Indices``: the input token and its position (0 for the first real token);
* ``Select(keys, queries, predicate)``: which key positions each query position attends to,
  ``predicate(key_value, query_value) -> bool`` (``select_key`` when only the key matters); selectors
  combine with ``&``;
* ``Aggregate(selector, sop)``: the mean of ``sop`` over the selected positions. For a categorical
  ``sop`` every selected position must hold the same value (usually exactly one is selected): the mean
  of identical one-hot vectors is that one-hot vector. When nothing is selected the result is ``None``
  (categorical) or ``0`` (numerical);
* ``Map(fn, sop)`` and ``SequenceMap(fn, *sops)``: an elementwise function, compiled to an MLP lookup
  table over every combination of input values;
* ``SelectorWidth(selector)``: how many positions are selected (RASP's selector width), built from a
  numerical aggregate and a ``Map``;
* ``LinearMap(sops, coefficients, bias)`` / ``LinearSequenceMap(x, y, a, b)``: a numerical linear map of
  numerical SOps (``a*x + b*y``), compiled to a few MLP units however many values its inputs take.

Selectors combine with ``&`` (and), ``|`` (or) and ``~`` (not). ``&`` of parts adds their attention
scores; ``|`` and ``~`` first gather the keys (and queries) of every part into one tuple-valued SOp
(a ``SequenceMap``, one extra MLP layer when there are several) and select on the combined predicate.

Every ``SOp`` knows the finite set of values it can take (``values``), computed when it is built by
running ``fn`` over its inputs' value sets: this is what the compiler turns into one-hot dimensions
and lookup tables. ``None`` is the "no value" of an aggregate that selected nothing; maps receive it
like any other value.

``evaluate`` is a plain-Python interpreter of the same semantics, used by the tests to check the
compiled transformer position by position. The compiled model never calls it.
"""
from __future__ import annotations

import itertools
from collections.abc import Callable, Hashable, Sequence
from fractions import Fraction
from typing import Literal

Value = Hashable
Kind = Literal["categorical", "numerical"]


class ProgramError(ValueError):
    """A program that cannot be compiled or evaluated (the message says which SOp and why)."""


def _sort_key(v: Value) -> tuple:
    """Deterministic order for value sets: None first, then numbers, then strings/other."""
    if v is None:
        return (0, 0, "")
    if isinstance(v, bool):
        return (1, int(v), "")
    if isinstance(v, (int, float, Fraction)):
        return (2, float(v), "")
    return (3, 0, repr(v))


def sorted_values(values) -> tuple:
    return tuple(sorted(set(values), key=_sort_key))


class SOp:
    """A sequence operation: one value per position. Subclasses set ``inputs``, ``values``, ``kind``."""

    _counter = itertools.count()

    def __init__(self, inputs: tuple[SOp, ...], values: Sequence[Value], kind: Kind, max_len: int,
                 label: str | None = None):
        self.inputs = inputs
        self.values = sorted_values(values)
        self.kind: Kind = kind
        self.max_len = max_len
        self.id = next(SOp._counter)
        self.label = label or f"{type(self).__name__.lower()}_{self.id}"
        if kind == "numerical" and any(not isinstance(v, (int, float, Fraction)) for v in self.values):
            raise ProgramError(f"{self.label}: a numerical SOp can only hold numbers, got {self.values[:5]}")

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.label}, {len(self.values)} values)"


class Tokens(SOp):
    """The input tokens; ``vocab`` lists every token the compiled model accepts."""

    def __init__(self, vocab: Sequence[Value], max_len: int):
        vocab = tuple(vocab)
        if len(set(vocab)) != len(vocab) or None in vocab:
            raise ProgramError(f"vocab must be distinct, non-None tokens, got {list(vocab)}")
        super().__init__((), vocab, "categorical", max_len, "tokens")


class Indices(SOp):
    """The position of each token: 0, 1, ..., ``max_len - 1``."""

    def __init__(self, max_len: int):
        if max_len < 1:
            raise ProgramError(f"max_len must be >= 1, got {max_len}")
        super().__init__((), range(max_len), "categorical", max_len, "indices")


def inputs(vocab: Sequence[Value], max_len: int) -> tuple[Tokens, Indices]:
    """The two inputs of every program."""
    return Tokens(vocab, max_len), Indices(max_len)


class Map(SOp):
    """``fn`` applied at every position to the values of one or more SOps (a lookup-table MLP).

    With several inputs this is RASP's SequenceMap; all inputs must then be categorical. A single
    numerical input is allowed (it is discretised by the compiler). ``numerical=True`` makes the output
    a single number instead of a one-hot category.
    """

    def __init__(self, fn: Callable[..., Value], *sops: SOp, numerical: bool = False, label: str | None = None):
        if not sops:
            raise ProgramError("Map needs at least one input SOp")
        if len(sops) > 1 and any(s.kind == "numerical" for s in sops):
            raise ProgramError("SequenceMap inputs must all be categorical; discretise a numerical SOp "
                               "with a one-input Map first")
        self.fn = fn
        max_len = max(s.max_len for s in sops)
        self.table = {combo: fn(*combo) for combo in itertools.product(*(s.values for s in sops))}
        kind: Kind = "numerical" if numerical else "categorical"
        if numerical and any(v is None for v in self.table.values()):
            raise ProgramError(f"{label or 'Map'}: a numerical map must not return None")
        super().__init__(tuple(sops), self.table.values(), kind, max_len, label)


def SequenceMap(fn: Callable[..., Value], *sops: SOp, label: str | None = None) -> Map:  # noqa: N802
    """RASP's SequenceMap: ``fn(a, b, ...)`` of several categorical SOps at the same position."""
    if len(sops) < 2:
        raise ProgramError("SequenceMap needs at least two SOps; use Map for one")
    return Map(fn, *sops, label=label)


class Select:
    """Attention pattern: query position q attends to key position k iff ``predicate(key[k], query[q])``.

    ``queries=None`` makes a key-only predicate ``predicate(key[k])``. ``a & b`` selects where both do
    (the compiler adds their attention scores).
    """

    def __init__(self, keys: SOp, queries: SOp | None, predicate: Callable[..., bool]):
        if keys.kind != "categorical" or (queries is not None and queries.kind != "categorical"):
            raise ProgramError("Select keys and queries must be categorical SOps")
        self.parts: tuple[tuple[SOp, SOp | None, Callable[..., bool]], ...] = ((keys, queries, predicate),)

    def __and__(self, other: Select) -> Select:
        both = Select.__new__(Select)
        both.parts = self.parts + other.parts
        return both

    def __or__(self, other: Select) -> Select:
        return _combine([self, other], lambda a, b: a or b)

    def __invert__(self) -> Select:
        return _combine([self], lambda a: not a)

    def selects(self, key_values: dict[SOp, Value], query_values: dict[SOp, Value]) -> bool:
        for keys, queries, pred in self.parts:
            ok = pred(key_values[keys]) if queries is None else pred(key_values[keys], query_values[queries])
            if not ok:
                return False
        return True

    @property
    def sops(self) -> tuple[SOp, ...]:
        out: list[SOp] = []
        for keys, queries, _ in self.parts:
            out += [keys] + ([queries] if queries is not None else [])
        return tuple(out)


def _joint(sops: list[SOp]) -> SOp:
    """One SOp holding all of ``sops``' values at each position (a tuple when there are several)."""
    if len(sops) == 1:
        return sops[0]
    return Map(lambda *v: tuple(v), *sops, label="joint_" + "_".join(x.label for x in sops))


def _combine(selectors: list[Select], how: Callable[..., bool]) -> Select:
    """A single-part selector equal to ``how(selector_1(k, q), ...)`` (or / not of selectors)."""
    keys: list[SOp] = []
    queries: list[SOp] = []
    for sel in selectors:
        for k, q, _ in sel.parts:
            keys += [k] if k not in keys else []
            queries += [q] if q is not None and q not in queries else []
    joint_k, joint_q = _joint(keys), (_joint(queries) if queries else None)

    def unpack(joint: SOp, sops: list[SOp], value: Value) -> dict[SOp, Value]:
        return {sops[0]: value} if len(sops) == 1 else dict(zip(sops, value))

    def predicate(kv: Value, qv: Value = None) -> bool:
        kd = unpack(joint_k, keys, kv)
        qd = unpack(joint_q, queries, qv) if queries else {}
        return how(*(sel.selects(kd, qd) for sel in selectors))

    if joint_q is None:
        return Select(joint_k, None, lambda kv: predicate(kv))
    return Select(joint_k, joint_q, predicate)


def select_key(keys: SOp, predicate: Callable[[Value], bool]) -> Select:
    """A selector that depends on the key only, e.g. ``select_key(tokens, lambda t: t == "+")``."""
    return Select(keys, None, predicate)


def _farey(max_len: int) -> set[Fraction]:
    """Every mean of up to ``max_len`` values in {0, 1}: the fractions j/w with w <= max_len."""
    return {Fraction(j, w) for w in range(1, max_len + 1) for j in range(w + 1)}


class Aggregate(SOp):
    """Mean of ``sop`` over the positions ``selector`` selects (one attention head).

    Categorical: every selected position must hold the same value; the result is that value, or
    ``None`` when nothing is selected. Numerical: ``sop`` must take values in {0, 1}; the result is the
    fraction of selected positions holding 1 (0 when nothing is selected).
    """

    def __init__(self, selector: Select, sop: SOp, label: str | None = None):
        self.selector = selector
        self.sop = sop
        max_len = max(s.max_len for s in (sop, *selector.sops))
        if sop.kind == "categorical":
            values = set(sop.values) | {None}
        else:
            if not set(sop.values) <= {0, 1}:
                raise ProgramError(f"numerical Aggregate needs 0/1 values, {sop.label} has {sop.values[:5]}")
            values = _farey(max_len)
        super().__init__((*selector.sops, sop), values, sop.kind, max_len, label)


class LinearMap(SOp):
    """``bias + sum(c_i * x_i)`` of numerical SOps at each position: a numerical output compiled to one
    MLP unit per input plus one for the bias, whatever the inputs' value sets (RASP's numerical Map with
    a linear function, and Tracr's ``LinearSequenceMap``)."""

    def __init__(self, sops: Sequence[SOp], coefficients: Sequence[float], bias: float = 0,
                 label: str | None = None):
        sops, coefficients = tuple(sops), tuple(coefficients)
        if not sops or len(sops) != len(coefficients):
            raise ProgramError("LinearMap needs one coefficient per input SOp")
        if any(x.kind != "numerical" for x in sops):
            raise ProgramError("LinearMap inputs must be numerical SOps (make one with Map(..., numerical=True))")
        self.coefficients, self.bias = coefficients, bias
        values = {bias}
        for x, c in zip(sops, coefficients):
            values = {v + c * w for v in values for w in x.values}
        super().__init__(sops, values, "numerical", max(x.max_len for x in sops), label)

    def fn(self, *xs: Value) -> Value:
        return self.bias + sum(c * x for c, x in zip(self.coefficients, xs))


def LinearSequenceMap(x: SOp, y: SOp, a: float, b: float, label: str | None = None) -> LinearMap:  # noqa: N802
    """``a * x + b * y`` of two numerical SOps (Tracr's LinearSequenceMap)."""
    return LinearMap((x, y), (a, b), label=label)


class BosFraction(SOp):
    """1 / (number of selected positions + 1): attention that always selects the BOS position too and
    averages the BOS indicator. Only used to build ``SelectorWidth``."""

    def __init__(self, selector: Select, label: str | None = None):
        self.selector = selector
        max_len = max(s.max_len for s in selector.sops)
        super().__init__(selector.sops, {Fraction(1, w + 1) for w in range(max_len + 1)}, "numerical", max_len,
                         label)


def SelectorWidth(selector: Select, label: str | None = None) -> Map:  # noqa: N802
    """How many positions ``selector`` selects at each query (0..max_len): attention + discretising MLP."""
    frac = BosFraction(selector, label=f"{label}_frac" if label else None)
    return Map(lambda x: round(1 / x) - 1, frac, label=label)


# Predicates, written predicate(key, query).
def EQ(k: Value, q: Value) -> bool:  # noqa: N802
    return k == q


def GT(k: Value, q: Value) -> bool:  # noqa: N802
    """Key index greater than query index (the key lies to the right)."""
    return k is not None and q is not None and k > q


def LT(k: Value, q: Value) -> bool:  # noqa: N802
    return k is not None and q is not None and k < q


def GE(k: Value, q: Value) -> bool:  # noqa: N802
    return k is not None and q is not None and k >= q


def TRUE(k: Value, q: Value) -> bool:  # noqa: N802
    return True


def graph(output: SOp) -> list[SOp]:
    """Every SOp the output depends on, inputs first (a topological order)."""
    order: list[SOp] = []
    seen: set[int] = set()

    def visit(s: SOp) -> None:
        if s.id in seen:
            return
        seen.add(s.id)
        for i in s.inputs:
            visit(i)
        order.append(s)

    visit(output)
    return order


def evaluate(output: SOp, tokens: Sequence[Value], causal: bool = False) -> dict[SOp, list[Value]]:
    """Interpret the program on one input in plain Python; returns every SOp's values by position.

    The reference semantics for the compiler (tests compare the two); never used by the compiled model.
    ``causal=True``: a query position selects only among keys at or before it (a decoder).
    """
    n = len(tokens)
    vals: dict[SOp, list[Value]] = {}
    for s in graph(output):
        if n > s.max_len:
            raise ProgramError(f"input of length {n} is longer than max_len={s.max_len}")
        if isinstance(s, Tokens):
            bad = [t for t in tokens if t not in s.values]
            if bad:
                raise ProgramError(f"tokens {bad} are not in the vocabulary {list(s.values)}")
            vals[s] = list(tokens)
        elif isinstance(s, Indices):
            vals[s] = list(range(n))
        elif isinstance(s, (Map, LinearMap)):
            vals[s] = [s.fn(*(vals[i][p] for i in s.inputs)) for p in range(n)]
        elif isinstance(s, (Aggregate, BosFraction)):
            out = []
            for q in range(n):
                qv = {i: vals[i][q] for i in s.selector.sops}
                keys = range(q + 1) if causal else range(n)
                chosen = [k for k in keys if s.selector.selects({i: vals[i][k] for i in s.selector.sops}, qv)]
                if isinstance(s, BosFraction):
                    out.append(Fraction(1, len(chosen) + 1))
                elif s.kind == "numerical":
                    out.append(Fraction(sum(vals[s.sop][k] for k in chosen), len(chosen)) if chosen else 0)
                else:
                    picked = {vals[s.sop][k] for k in chosen}
                    if len(picked) > 1:
                        raise ProgramError(f"{s.label}: categorical aggregate at position {q} selects keys with "
                                           f"different values {sorted_values(picked)}; select one key or "
                                           "aggregate a numerical SOp")
                    out.append(picked.pop() if picked else None)
            vals[s] = out
        else:  # pragma: no cover - every SOp type is handled above
            raise ProgramError(f"cannot evaluate {s!r}")
    return vals

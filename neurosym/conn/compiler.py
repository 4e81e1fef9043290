"""Compile a RASP-like program (``program.py``) into a ``CompiledTransformer`` with analytic weights.

Residual stream. Dimension ``ONE`` is 1 at real positions and 0 at BOS (it carries every constant
term); ``BOS`` is 1 at BOS only. Each categorical SOp owns one dimension per value (one-hot; ``None`` is
the all-zero block); each numerical SOp owns one dimension. Blocks are written once, by the layer that
computes the SOp, so the final stream holds every intermediate value.

Schedule. Aggregates are attention heads, maps are MLPs. Each SOp goes into the first layer of its
type after all of its inputs; SOps in the same layer run in parallel (several heads, or one wider MLP).

Attention (``Aggregate``, ``BosFraction``). A query scores a key ``scale`` if every part of the
selector holds and at most 0 otherwise; BOS scores ``scale / 2`` (so it wins only when nothing is
selected, and then contributes its all-zero value: "no value"), or ``scale`` for ``BosFraction``
(BOS always counts, giving 1 / (selected + 1)). With ``scale`` = 1000 the unselected keys get weight
``exp(-500)``, which is exactly 0 in float32: a selection is hard, not approximately so. The scores are
a bilinear form: key features are value indicators of the key SOps, query features are
``scale * predicate(key value, query value)`` summed over the query's value indicators.

MLP (``Map``). Categorical inputs: one hidden unit per combination of input values, with
pre-activation ``4 * (sum of the k indicators - (k - 1/2))``, i.e. +2 when all k match and <= -2
otherwise; ``hardtanh`` to [0, 1] makes it exactly 1 or 0, and the output layer writes the table entry.
A numerical input with values v_0 < ... < v_K is discretised with one step per gap, centred between
v_i and v_(i+1) and steep enough (slope 4 / gap) to sit at +-2 on either side; the output is
``f(v_0) + sum of steps * (f(v_(i+1)) - f(v_i))``. Every pre-activation also gets a large negative
``BOS`` term so MLPs write nothing at BOS.

BOS. Its query attends only to itself (an extra ``10 * scale`` score), so attention copies BOS's own
zero values back: BOS's blocks stay zero, which the "no value" default relies on. The one exception is
a ``BosFraction`` (1 at BOS), read only by its discretising MLP, which ignores BOS.
"""
from __future__ import annotations

import contextlib
from collections import defaultdict
from dataclasses import dataclass, field
from functools import cached_property
from fractions import Fraction
from typing import Sequence

import torch

from neurosym.conn.errors import ConnInputError
from neurosym.conn.model import BOS, MLP, ONE, Attention, AttentionHead, CompiledTransformer
from neurosym.conn.program import (Aggregate, BosFraction, Indices, LinearMap, Map, ProgramError, SOp, Tokens,
                                   Value, graph)

BOS_ID, PAD_ID = 0, 1  # input ids; vocabulary tokens start at 2
LinearForm = dict[int, float]  # residual dimension -> coefficient
# Adjacent numerical values must differ by this fraction of their size, so that float32 rounding
# (relative 6e-8) stays far inside the half-gap margin of a discretising step.
MIN_RELATIVE_GAP = 2.0 ** -20


@dataclass(frozen=True)
class Block:
    """Where one SOp lives in the residual stream."""

    start: int
    values: tuple  # one dimension per non-None value (categorical); () for numerical
    kind: str

    @property
    def size(self) -> int:
        return len(self.values) if self.kind == "categorical" else 1

    @cached_property
    def _offset(self) -> dict[Value, int]:
        return {v: i for i, v in enumerate(self.values)}

    def dim(self, value: Value) -> int:
        return self.start + self._offset[value]

    def indicator(self, value: Value) -> LinearForm:
        """Linear form equal to 1 where the SOp holds ``value`` and 0 elsewhere (and 0 at BOS)."""
        if value is not None:
            return {self.dim(value): 1.0}
        return {ONE: 1.0, **{self.start + i: -1.0 for i in range(self.size)}}


def _add(acc: LinearForm, form: LinearForm, coef: float = 1.0) -> LinearForm:
    for dim, c in form.items():
        acc[dim] = acc.get(dim, 0.0) + coef * c
    return acc


def _rows(forms: list[LinearForm], dims: list[int]) -> torch.Tensor:
    """Stack linear forms into a weight matrix [len(forms), len(dims)] over residual dimensions ``dims``."""
    col = {d: j for j, d in enumerate(dims)}
    w = torch.zeros(len(forms), len(dims), dtype=torch.float64)
    for r, form in enumerate(forms):
        for dim, c in form.items():
            w[r, col[dim]] += c
    return w


def _support(forms: list[LinearForm]) -> list[int]:
    """The residual dimensions a set of linear forms touches (what a layer reads or writes)."""
    return sorted({dim for form in forms for dim in form})


@dataclass
class Layout:
    blocks: dict[int, Block] = field(default_factory=dict)
    labels: dict[int, str] = field(default_factory=dict)
    d_model: int = 2

    def add(self, sop: SOp) -> None:
        values = tuple(v for v in sop.values if v is not None) if sop.kind == "categorical" else ()
        block = Block(self.d_model, values, sop.kind)
        self.blocks[sop.id] = block
        self.labels[sop.id] = sop.label if sop.label not in self.labels.values() else f"{sop.label}#{sop.id}"
        self.d_model += block.size

    def __getitem__(self, sop: SOp) -> Block:
        return self.blocks[sop.id]


def schedule(nodes: list[SOp]) -> dict[int, int]:
    """Layer slot of each SOp: inputs -1, attention at even slots, MLPs at odd slots, as early as possible."""
    slot: dict[int, int] = {}
    for s in nodes:
        if isinstance(s, (Tokens, Indices)):
            slot[s.id] = -1
            continue
        after = max((slot[i.id] for i in s.inputs), default=-1) + 1
        want_even = isinstance(s, (Aggregate, BosFraction))
        slot[s.id] = after if (after % 2 == 0) == want_even else after + 1
    return slot


def _head(s: Aggregate | BosFraction, layout: Layout, scale: float) -> tuple[AttentionHead, list[int]]:
    """One attention head for ``s`` and the residual dimensions it writes."""
    parts = s.selector.parts
    key_forms: list[LinearForm] = []
    query_forms: list[LinearForm] = []
    for keys, queries, pred in parts:
        for kv in keys.values:
            key_forms.append(layout[keys].indicator(kv))
            if queries is None:
                query_forms.append({ONE: scale * float(bool(pred(kv)))})
            else:
                q: LinearForm = {}
                for qv in queries.values:
                    if pred(kv, qv):
                        _add(q, layout[queries].indicator(qv), scale)
                query_forms.append(q)
    key_forms.append({ONE: 1.0})  # non-BOS keys: all parts must hold, so subtract (parts - 1)
    query_forms.append({ONE: -scale * (len(parts) - 1)})
    key_forms.append({BOS: 1.0})  # BOS: the default (scale/2), always counted (scale), or BOS's own query
    query_forms.append({ONE: scale * (1.0 if isinstance(s, BosFraction) else 0.5), BOS: 10 * scale})

    out = layout[s]
    if isinstance(s, BosFraction):
        value_forms, out_dims = [{BOS: 1.0}], [out.start]
    elif s.kind == "numerical":
        value_forms, out_dims = [{layout[s.sop].start: 1.0}], [out.start]
    else:
        src = layout[s.sop]
        value_forms = [{src.dim(v): 1.0} for v in src.values]
        out_dims = [out.dim(v) for v in src.values]

    query_dims, key_dims, value_dims = _support(query_forms), _support(key_forms), _support(value_forms)
    head = AttentionHead(query_dims, key_dims, value_dims, len(key_forms), len(value_forms))
    head.q.weight.copy_(_rows(query_forms, query_dims))
    head.k.weight.copy_(_rows(key_forms, key_dims))
    head.ov.weight.copy_(_rows(value_forms, value_dims))
    return head, out_dims


def _output_vector(s: Map, layout: Layout, value: Value) -> LinearForm:
    """What the MLP writes for output ``value``: a one-hot dimension, a number, or nothing (None/0)."""
    block = layout[s]
    if s.kind == "numerical":
        return {block.start: float(value)} if value else {}
    return {} if value is None else {block.dim(value): 1.0}


def _linear_units(s: LinearMap, layout: Layout) -> list[tuple[LinearForm, LinearForm]]:
    """A linear map: per input x in [lo, hi] a unit (x - lo) / (hi - lo), which stays inside [0, 1] so the
    clamp never bites, written back scaled by c * (hi - lo); one unit (1 at real positions, 0 at BOS)
    carries the constant bias + sum c * lo. A large negative BOS term keeps every unit at 0 on BOS."""
    out = layout[s].start
    constant = float(s.bias)
    units: list[tuple[LinearForm, LinearForm]] = []
    for x, c in zip(s.inputs, s.coefficients):
        lo, hi = float(min(x.values)), float(max(x.values))
        constant += c * lo
        if hi == lo or c == 0:
            continue
        w = 1.0 / (hi - lo)
        units.append(({layout[x].start: w, ONE: -lo * w, BOS: -(abs(lo * w) + 2.0)}, {out: c * (hi - lo)}))
    if constant:
        units.append(({ONE: 2.0, BOS: -2.0}, {out: constant}))
    return units


def _map_units(s: Map, layout: Layout) -> list[tuple[LinearForm, LinearForm]]:
    """Hidden units of one Map as (input form, output form) pairs; see the module docstring."""
    if isinstance(s, LinearMap):
        return _linear_units(s, layout)
    units: list[tuple[LinearForm, LinearForm]] = []
    if s.inputs[0].kind == "categorical":
        k = len(s.inputs)
        for combo, value in s.table.items():
            out = _output_vector(s, layout, value)
            if not out:
                continue
            pre: LinearForm = {ONE: -4.0 * (k - 0.5), BOS: -4.0 * k}
            for sop, v in zip(s.inputs, combo):
                _add(pre, layout[sop].indicator(v), 4.0)
            units.append((pre, out))
        return units

    (x,) = s.inputs
    xs = list(x.values)  # sorted numbers
    for lo, hi in zip(xs, xs[1:]):
        if s.table[(lo,)] == s.table[(hi,)]:
            continue  # no step here: how close the two values are does not matter
        if hi - lo < MIN_RELATIVE_GAP * max(abs(lo), abs(hi)):
            raise ProgramError(f"{s.label}: the values {float(lo)} and {float(hi)} of {x.label} are too close to "
                               "tell apart exactly in float32; compile with a smaller max_len")
    x_dim = layout[x].start
    x_max = max(abs(float(v)) for v in xs)
    base = _output_vector(s, layout, s.table[(xs[0],)])
    if base:
        units.append(({ONE: 2.0, BOS: -2.0}, base))
    for lo, hi in zip(xs, xs[1:]):
        f_lo, f_hi = s.table[(lo,)], s.table[(hi,)]
        if f_lo == f_hi:
            continue
        slope = 4.0 / float(hi - lo)
        mid = float(Fraction(lo + hi) / 2)
        big = slope * x_max + 4.0  # at BOS: below -2 whatever x holds there
        delta = _add(_output_vector(s, layout, f_hi), _output_vector(s, layout, f_lo), -1.0)
        units.append(({x_dim: slope, ONE: 0.5 - slope * mid, BOS: -big}, delta))
    return units


def _attention(sops: list[SOp], layout: Layout, scale: float) -> Attention:
    heads, write = [], []
    for s in sops:
        head, dims = _head(s, layout, scale)  # type: ignore[arg-type]
        heads.append(head)
        write += dims
    return Attention(heads, write)


def _mlp(maps: list[Map], layout: Layout, margin: float = 1.0) -> MLP:
    """One MLP layer for ``maps``. ``margin`` multiplies the pre-activation of every clamped unit (on at
    ``+2 * margin``, off at ``-2 * margin`` or below; the clamp band stays [0, 1]), so a rounding error
    up to ``2 * margin - 1`` cannot flip a unit. A linear map's units use the band's inside and stay as
    they are."""
    units = [(pre if isinstance(s, LinearMap) else {d: margin * c for d, c in pre.items()}, out)
             for s in maps for pre, out in _map_units(s, layout)]
    read, write = _support([pre for pre, _ in units]), _support([out for _, out in units])
    mlp = MLP(read, len(units), write)
    mlp.fc_in.weight.copy_(_rows([pre for pre, _ in units], read))
    mlp.fc_out.weight.copy_(_rows([out for _, out in units], write).T)
    return mlp


@dataclass
class CompiledProgram:
    """A compiled program: the transformer plus how to encode its input and read its output.

    ``logits`` and ``__call__`` go through ``model.forward`` only; ``trace`` reads every SOp's block
    from the residual stream (for tests and debugging).
    """

    model: CompiledTransformer
    vocab: tuple
    classes: tuple  # output values; the last class is None ("no value")
    max_len: int
    layout: Layout
    layer_kinds: tuple[str, ...]  # "attention" / "mlp", in order
    # The network is many small matrix products: on CPU, one thread avoids OpenMP synchronisation, which
    # otherwise dominates (10x slower on a busy 2-core machine). None: leave torch's setting alone.
    cpu_threads: int | None = 1
    causal: bool = False  # compiled as a decoder (see compile_program)
    margin: float = 1.0  # MLP pre-activation scale (see compile_program)
    # Exact by construction in float32 (and float64). Other precisions only up to what
    # ``precision.verify`` measured: operand length per "bf16"/"fp16" (for display), and the longest token
    # sequence per torch dtype (what ``logits`` checks before running a cast network).
    precision: str = "float32"
    exact_lengths: dict = field(default_factory=dict)
    exact_tokens: dict = field(default_factory=dict)

    def encode(self, batch: Sequence[Sequence[Value]]) -> tuple[torch.Tensor, torch.Tensor]:
        """Input ids [B, 1 + longest] (BOS first, right padding) and the mask of real positions."""
        index = {t: i + 2 for i, t in enumerate(self.vocab)}
        longest = max((len(seq) for seq in batch), default=0)
        ids = torch.full((len(batch), longest + 1), PAD_ID, dtype=torch.long)
        ids[:, 0] = BOS_ID
        for b, seq in enumerate(batch):
            if len(seq) > self.max_len:
                raise ConnInputError(f"input of length {len(seq)} exceeds this network's compiled maximum "
                                     f"length {self.max_len}; compile it with a larger max_len")
            unknown = [t for t in seq if t not in index]
            if unknown:
                raise ConnInputError(f"tokens {unknown!r} are not in this network's vocabulary {list(self.vocab)}")
            ids[b, 1:len(seq) + 1] = torch.tensor([index[t] for t in seq], dtype=torch.long)
        mask = ids != PAD_ID
        device = self.model.unembed.weight.device
        return ids.to(device), mask.to(device)

    @contextlib.contextmanager
    def _threads(self):
        before = torch.get_num_threads()
        on_cpu = self.model.unembed.weight.device.type == "cpu"
        if self.cpu_threads is None or not on_cpu or before == self.cpu_threads:
            yield
            return
        torch.set_num_threads(self.cpu_threads)
        try:
            yield
        finally:
            torch.set_num_threads(before)

    def check_precision(self, longest: int) -> None:
        """Refuse to run a network cast below float32 beyond the length verified for that precision."""
        dtype = self.model.unembed.weight.dtype
        if dtype in (torch.float32, torch.float64):
            return
        if dtype not in self.exact_tokens:
            raise ConnInputError(f"this network is exact by construction in {self.precision}, and it was cast to "
                                 f"{dtype}, which has not been verified: run neurosym.conn.precision.verify(op, "
                                 "'bf16' or 'fp16') first, or keep it in float32")
        if longest > self.exact_tokens[dtype]:
            limit = self.exact_tokens[dtype]
            raise ConnInputError(f"input of {longest} tokens: in {dtype} this network is exact only up to {limit} "
                                 f"tokens (its margins are too thin beyond that; see `neurosym conn info`); run it "
                                 f"in {self.precision}")

    @torch.no_grad()
    def logits(self, batch: Sequence[Sequence[Value]]) -> torch.Tensor:
        self.check_precision(max((len(seq) for seq in batch), default=0))
        ids, mask = self.encode(batch)
        with self._threads():
            return self.model(ids, mask)

    def __call__(self, batch: Sequence[Sequence[Value]]) -> list[list[Value]]:
        """The output value at every real position of every input (a float for a numerical output)."""
        if not self.classes:
            out = self.logits(batch)[..., 0].cpu()
            return [out[b, 1:len(seq) + 1].tolist() for b, seq in enumerate(batch)]
        top = self.logits(batch).argmax(-1).cpu()
        return [[self.classes[c] for c in top[b, 1:len(seq) + 1].tolist()] for b, seq in enumerate(batch)]

    @torch.no_grad()
    def trace(self, tokens: Sequence[Value]) -> dict[str, list[Value]]:
        """Every SOp's value at every position, decoded from the final residual stream."""
        ids, mask = self.encode([tokens])
        with self._threads():
            x = self.model.residual(ids, mask)[0, 1:].cpu()
        out: dict[str, list[Value]] = {}
        for sop_id, block in self.layout.blocks.items():
            part = x[:, block.start:block.start + block.size]
            if block.kind == "numerical":
                out[self.layout.labels[sop_id]] = part[:, 0].tolist()
            else:
                out[self.layout.labels[sop_id]] = [block.values[int(r.argmax())] if r.max() > 0.5 else None
                                                   for r in part]
        return out

    def stats(self) -> dict[str, int]:
        """Size of the network: layer counts, residual width, widest MLP, most heads, parameters."""
        layers = list(self.model.layers)
        mlps = [m for m in layers if isinstance(m, MLP)]
        attns = [a for a in layers if isinstance(a, Attention)]
        return {
            "layers": len(layers),
            "attention_layers": len(attns),
            "mlp_layers": len(mlps),
            "d_model": self.layout.d_model,
            "max_mlp_hidden": max((m.fc_in.out_features for m in mlps), default=0),
            "max_heads": max((len(a.heads) for a in attns), default=0),
            "parameters": sum(p.numel() for p in self.model.parameters()),
        }


@torch.no_grad()
def compile_program(output: SOp, scale: float = 1000.0, causal: bool = False, margin: float = 1.0) -> CompiledProgram:
    """Compile ``output`` (and everything it depends on) into a transformer with analytic weights.

    A categorical output is read as one-hot classes; a numerical one as the number in its dimension.
    ``causal=True`` compiles a decoder: every attention head sees only the positions at or before its
    query (the program then means what ``evaluate(..., causal=True)`` says). ``margin`` > 1 scales every
    clamped MLP unit's pre-activation (on at ``2 * margin``, off at ``-2 * margin``): the same function,
    exact in float32 either way, but a unit then tolerates a rounding error of up to ``2 * margin - 1``
    instead of 1, which keeps a network cast to bfloat16 exact at longer inputs (``precision.compile_for``).
    The weights grow by the same factor, so float16 overflows sooner: use it for bfloat16 only.
    """
    if not margin >= 1.0:
        raise ProgramError(f"margin must be at least 1 (1 is the float32 construction), got {margin}")
    nodes = graph(output)
    tokens = [s for s in nodes if isinstance(s, Tokens)]
    if len(tokens) != 1:
        raise ProgramError(f"a program needs exactly one Tokens input, found {len(tokens)}")
    if len({s.id for s in nodes if isinstance(s, Indices)}) > 1:
        raise ProgramError("a program must use a single Indices input")
    max_len = max(s.max_len for s in nodes)

    layout = Layout()
    for s in nodes:
        layout.add(s)
    d_model = layout.d_model

    slots = schedule(nodes)
    by_slot: dict[int, list[SOp]] = defaultdict(list)
    for s in nodes:
        if slots[s.id] >= 0:
            by_slot[slots[s.id]].append(s)
    layers: list = []
    kinds: list[str] = []
    for slot in sorted(by_slot):
        if slot % 2 == 0:
            layers.append(_attention(by_slot[slot], layout, scale))
            kinds.append("attention")
        else:
            layers.append(_mlp(by_slot[slot], layout, margin))  # type: ignore[arg-type]
            kinds.append("mlp")

    vocab = tokens[0].values
    numerical = output.kind == "numerical"
    classes = () if numerical else tuple(v for v in output.values if v is not None) + (None,)
    model = CompiledTransformer(len(vocab) + 2, max_len, d_model, layers, 1 if numerical else len(classes),
                                causal=causal)
    tok = torch.zeros(len(vocab) + 2, d_model, dtype=torch.float64)
    tok[BOS_ID, BOS] = 1.0
    for i, t in enumerate(vocab):
        tok[i + 2, ONE] = 1.0
        tok[i + 2, layout[tokens[0]].dim(t)] = 1.0
    model.token_embed.weight.copy_(tok)
    pos = torch.zeros(max_len + 1, d_model, dtype=torch.float64)
    for s in nodes:
        if isinstance(s, Indices):
            for p in range(max_len):
                pos[p + 1, layout[s].dim(p)] = 1.0
    model.position_embed.weight.copy_(pos)
    out_block = layout[output]
    forms = [{out_block.start: 1.0}] if numerical else [out_block.indicator(v) for v in classes]
    model.unembed.weight.copy_(_rows(forms, list(range(d_model))))
    return CompiledProgram(model.eval(), vocab, classes, max_len, layout, tuple(kinds), causal=causal, margin=margin)

"""In which floating-point precision a compiled network is exact, and up to which input length.

The compiler builds every network for float32: each MLP hidden unit's pre-activation sits at least 1
outside the [0, 1] band of its clamp (``+2`` for on, ``-2`` or less for off), so rounding cannot flip
it. That *margin* is what lower precisions eat: bfloat16 keeps 8 significant bits, so the discretising
steps that tell ``1/96`` from ``1/97`` (selector widths, numerical means) lose their margin around 96
positions; float16 keeps 11 bits but overflows above 65,504, which the steepest steps exceed from 128
positions (their weights grow with the square of the length).

``verify(op, dtype)`` measures it: it casts a copy of the network to ``dtype`` and runs it on random
inputs (plus the all-highest-character input) at a ladder of operand lengths up to the compiled
maximum, and records in ``op.program.exact_lengths`` the longest length at which every tested input
gives the float32 answer with every hidden unit on the right side of its band. The measured margin
is the smallest distance from the band over those runs (1.0 by construction in float32). This is a
measurement on samples, not a proof; float32 is exact by construction (see ``compiler.py``).

``CompiledProgram.logits`` refuses (``ConnInputError``) to run a network cast to a precision that was
not verified, or an input longer than the verified length in that precision, saying why.

Scaled margins (``compile_for(name, "bf16")``). A unit's rounding error in bfloat16 grows with the
length (the steps' slopes do), and a unit flips once that error passes its distance to the band, 1.
Compiling with ``margin=M`` puts the units at ``+-2M`` around the same band [0, 1], so they tolerate
an error of ``2M - 1``: the error itself scales with the weights, so the gain is bounded (the
tolerated error, relative to the unit's scale, goes from 1/2 to nearly 1), and it saturates by M = 8.
``conn info`` prints the bf16 lengths both ways. Float16 does not gain (its limit is overflow, which
larger weights reach sooner), so ``compile_for`` scales margins for bf16 only.
"""
from __future__ import annotations

import copy
import random
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from neurosym.conn.model import MLP, CompiledTransformer

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
SCALED_MARGIN = {"bf16": 8.0}  # the margin compile_for uses per precision (1: the float32 construction)


@dataclass(frozen=True)
class Exactness:
    dtype: str
    longest: int  # longest operand length exact in this precision (0: none)
    margin: float  # smallest distance of an MLP pre-activation from the clamp band over the exact lengths
    #                (where none is exact: at the shortest length; <= 0 means a unit landed in or across it)
    reason: str = ""


@torch.no_grad()
def _run(model: CompiledTransformer, ids: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, float]:
    """Output classes and the smallest margin of any MLP hidden unit at real positions."""
    positions = torch.arange(ids.shape[1], device=ids.device)
    x = model.token_embed(ids) + model.position_embed(positions)[None]
    real = mask.clone()
    real[:, 0] = False
    keys = model.attention_mask(mask)
    margin = float("inf")
    for layer in model.layers:
        if isinstance(layer, MLP):
            raw = layer.fc_in(x[..., layer.read_dims])
            pre = raw.float()
            # on units want pre >= 1, off units pre <= 0; the margin is how far beyond that they are
            m = torch.where(pre > 0.5, pre - 1.0, -pre)[real]
            if m.numel():
                margin = min(margin, float(torch.nan_to_num(m, nan=-1.0).min()))
            x = x.index_add_(-1, layer.write_dims, layer.fc_out(F.hardtanh(raw, 0.0, 1.0)))
        else:
            x = layer(x, keys)
    return model.unembed(x).float().argmax(-1), margin


def ladder(max_len: int) -> list[int]:
    step = max(1, max_len // 16)
    return sorted({n for n in (1, 2, 4, 8) if n <= max_len} | set(range(step, max_len + 1, step)) | {max_len})


def verify(op, dtype: str, samples: int = 8, seed: int = 0) -> Exactness:
    """Measure and record (in ``op.program.exact_lengths``) how long an input ``op`` is exact for in ``dtype``."""
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
    program, spec = op.program, op.spec
    rng = random.Random(seed)
    reference = program.model
    model = reference if dtype == "fp32" else copy.deepcopy(reference).to(DTYPES[dtype])
    longest, margin, reason, tokens = 0, float("inf"), "", 0
    for n in ladder(op.max_len):
        cases = [tuple("".join(rng.choice(spec.alphabet) for _ in range(n)) for _ in range(spec.arity))
                 for _ in range(samples)]
        cases.append(tuple(spec.alphabet[-1] * n for _ in range(spec.arity)))
        ids, mask = program.encode([op.tokens(c) for c in cases])
        want, _ = _run(reference, ids, mask)
        got, m = _run(model, ids, mask.to(ids.device))
        if m <= 0 or not torch.equal(got[mask], want[mask]):
            margin = min(margin, m) if longest == 0 else margin
            big = max(float(p.abs().max()) for p in reference.parameters())
            if dtype == "fp16" and big > torch.finfo(torch.float16).max:
                reason = f"weights up to {big:,.0f} overflow float16 (max 65,504)"
            else:
                reason = f"margin {m:.3g} at operand length {n}: too few significant bits to separate the steps"
            break
        longest, margin = n, min(margin, m)
        tokens = len(op.tokens(cases[-1]))
    program.exact_lengths[dtype] = longest
    program.exact_tokens[DTYPES[dtype]] = tokens if longest else 0
    return Exactness(dtype, longest, max(margin, -1.0) if margin != float("inf") else 1.0, reason)


def compile_for(name: str, dtype: str, max_len: int | None = None, margin: float | None = None):
    """A fresh network for op ``name`` compiled for ``dtype`` (scaled margins for bf16, see the module
    docstring), verified in ``dtype`` and cast to it: ``(op, exactness)``. The op then runs in ``dtype``
    up to ``exactness.longest`` operand characters and refuses longer inputs with the reason."""
    from neurosym.conn.compiler import compile_program
    from neurosym.conn.ops import ConnOp, get_op

    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
    spec = get_op(name, max_len).spec  # validates the name and the length
    max_len = spec.default_max_len if max_len is None else max_len
    margin = SCALED_MARGIN.get(dtype, 1.0) if margin is None else margin
    op = ConnOp(spec, max_len, compile_program(spec.build(max_len), margin=margin))
    exactness = verify(op, dtype)
    op.program.model.to(DTYPES[dtype])
    return op, exactness

"""One forward pass of the tokens every row of a micro-batch starts with, shared by all of its rows.

Under a long system prompt most of a row is the prompt: every row of a batch starts with the same
tokens (chat template, system message, often the start of the user turn). Those tokens are run once
(batch 1), their keys and values are repeated to the batch, and each row runs only its own tokens on
top of that cache. The logits, the loss and the gradients are those of the full forward pass (up to
floating-point rounding: tested), and the compute drops by (rows - 1) x the shared length.

The shared length is found from the token ids alone (the longest run of leading positions where every
row has the same id, no padding and no trained label), so it needs nothing from the tokenizer or the
template. Greedy generation shares the prompts' common prefix the same way (prefilled once for the
largest group of prompts that start alike, the others generated beside it; the padding goes between
the prefix and each prompt's own tokens; the answers are those of the full prefill, tested).

It is used only where it is known to be sound: a decoder-only model with a KV cache, padded
(not packed) rows, one process (a DDP or FSDP wrapper expects one forward per backward), no gradient
checkpointing (which turns the cache off in training), and in a gradient step no active dropout (each
row must draw its own dropout mask over the prompt: shared, the rows' noise would be one draw);
``train.shared_prefix: false`` turns it off.
"""
from __future__ import annotations

import inspect
from typing import Optional, Sequence

import torch

from neurosym.data.render import IGNORE

MIN_SHARED = 8  # below this many shared tokens, one pass over the whole rows costs less than two calls


def shares_prefix(cfg, runtime, model) -> bool:
    """Whether this job's LoRA steps and probes may share their rows' common prefix."""
    config, train, data = getattr(model, "config", None), cfg.train, getattr(cfg, "data", None)
    return bool(getattr(train, "shared_prefix", True) and getattr(runtime, "world_size", 1) == 1
                and not getattr(train, "gradient_checkpointing", False) and not getattr(data, "packing", False)
                and config is not None and not getattr(config, "is_encoder_decoder", False))


def has_active_dropout(model) -> bool:
    """Whether a training-mode forward of ``model`` drops anything (LoRA dropout, attention dropout)."""
    config = getattr(model, "config", None)
    return (any(isinstance(m, torch.nn.Dropout) and m.p > 0 for m in model.modules())
            or float(getattr(config, "attention_dropout", 0.0) or 0.0) > 0)


def shared_length(batch: dict) -> int:
    """How many leading tokens the rows share (0: not worth sharing). The last shared token stays in
    each row's own part (its logit predicts the row's first own token), so this is one less than the
    run of equal positions."""
    ids, labels = batch["input_ids"], batch["labels"]
    mask = batch.get("attention_mask")
    if "position_ids" in batch or mask is None or ids.dim() != 2 or ids.shape[0] < 2:
        return 0
    same = (ids == ids[:1]).all(0) & (mask == 1).all(0) & (labels == IGNORE).all(0)
    k = int(same.long().cumprod(0).sum()) - 1
    return k if k >= MIN_SHARED and k < ids.shape[1] - 1 else 0


def _cache_keyword(model) -> str:
    """The forward's name for the KV cache (``cache`` in recent transformers, ``past_key_values`` before)."""
    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    return "cache" if "cache" in inspect.signature(type(inner).forward).parameters else "past_key_values"


def _cache_of(output) -> Optional[object]:
    """The KV cache a forward returned (``cache``, or ``past_key_values`` in older transformers)."""
    cache = getattr(output, "cache", None)
    return cache if cache is not None else getattr(output, "past_key_values", None)


def forward_logits(model, batch: dict, k: int) -> torch.Tensor:
    """Logits for positions ``k .. L-1`` of every row (as the full pass gives them), with the first
    ``k`` tokens run once for the whole micro-batch."""
    ids, mask = batch["input_ids"], batch["attention_mask"]
    rows, length = ids.shape
    key = _cache_keyword(model)
    cache = _cache_of(model(input_ids=ids[:1, :k], attention_mask=mask[:1, :k], use_cache=True))
    if cache is None:
        raise RuntimeError("the model returned no KV cache; set train.shared_prefix: false")
    cache.batch_repeat_interleave(rows)
    positions = torch.arange(k, length, device=ids.device).unsqueeze(0).expand(rows, -1)
    return model(input_ids=ids[:, k:], attention_mask=mask, position_ids=positions, use_cache=True,
                 **{key: cache}).logits


# ---- generation: the prompts' common prefix prefilled once -----------------------------------------

def common_length(prompts: Sequence[Sequence[int]]) -> int:
    """How many leading tokens every prompt shares, each keeping at least one token of its own (its
    last token's logits start its answer); 0 when fewer than two prompts or ``MIN_SHARED`` tokens."""
    if len(prompts) < 2:
        return 0
    k, limit = 0, min(len(p) for p in prompts) - 1
    first = prompts[0]
    while k < limit and all(p[k] == first[k] for p in prompts):
        k += 1
    return k if k >= MIN_SHARED else 0


def prefix_groups(prompts: Sequence[Sequence[int]]) -> list[list[int]]:
    """At most two groups of the prompts' indices, each generated in one call: the largest set of
    prompts that start with the same ``MIN_SHARED`` tokens (its common prefix is shared), and the others
    (generated as they are). So a prompt that starts differently (its own system message, a prompt cut
    at its start by ``max_length``) costs the chunk one more call, not its sharing."""
    by_start: dict = {}
    for j, p in enumerate(prompts):
        if len(p) > MIN_SHARED:
            by_start.setdefault(tuple(p[:MIN_SHARED]), []).append(j)
    best = max(by_start.values(), key=len, default=[])
    if len(best) < 2 or len(best) == len(prompts):
        return [list(range(len(prompts)))]
    rest = [j for j in range(len(prompts)) if j not in set(best)]
    return [best, rest]


def shared_layout(prompts: Sequence[Sequence[int]], k: int, pad: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``input_ids`` and ``attention_mask`` for generating after a shared prefix of ``k`` tokens: the
    prefix, then each prompt's own tokens left padded up to the widest (the padding sits between the
    two and is masked; positions come from the mask, so every row's tokens keep their positions)."""
    width = max(len(p) for p in prompts) - k
    ids = torch.full((len(prompts), k + width), pad, dtype=torch.long)
    mask = torch.zeros((len(prompts), k + width), dtype=torch.long)
    for j, p in enumerate(prompts):
        own = len(p) - k
        ids[j, :k] = torch.tensor(p[:k], dtype=torch.long)
        ids[j, k + width - own:] = torch.tensor(p[k:], dtype=torch.long)
        mask[j, :k] = 1
        mask[j, k + width - own:] = 1
    return ids, mask


def prefilled(model, prefix: Sequence[int], rows: int, device) -> dict:
    """``generate``'s keyword argument holding the KV cache of ``prefix``, run once, repeated to ``rows``
    rows (generate then runs only the tokens after it)."""
    cache = _cache_of(model(input_ids=torch.tensor([list(prefix)], dtype=torch.long, device=device), use_cache=True))
    if cache is None or not hasattr(cache, "batch_repeat_interleave"):
        return {}
    cache.batch_repeat_interleave(rows)
    return {_cache_keyword(model): cache}

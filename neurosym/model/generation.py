"""Batched generation: one ``model.generate`` call per chunk of prompts (token ids), left padded, with
the KV cache.

``generate_batched`` serves `neurosym generate` (greedy, or sampling with a temperature and top-p; an
optional factory of logits processors per chunk: the CoNN gate) and returns what each prompt's
continuation is and why it stopped. ``greedy_generate`` and ``answer_examples`` are what a run measures
with (the gain probe, the eval reward): greedy, decoded and stripped.

Side-effect free for training: eval mode inside (every submodule's flag restored after), no grad, and
the Python/numpy/torch RNG states left as they were, so a run measures without changing its trajectory
(sampling draws from a forked RNG, seeded by ``seed``).
"""
from __future__ import annotations

import random
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable, Iterator, Optional, Sequence

import numpy as np
import torch

from neurosym.model.collective import spread, task
from neurosym.model.shared_prefix import common_length, prefilled, prefix_groups, shared_layout


@contextmanager
def measuring(model) -> Iterator[None]:
    """Eval mode, no grad, RNG untouched; every module's train/eval flag restored on exit."""
    modes = [(m, m.training) for m in model.modules()]
    device = next(model.parameters()).device
    devices = [device.index or 0] if device.type == "cuda" else []
    py, npy = random.getstate(), np.random.get_state()
    model.eval()
    try:
        with torch.random.fork_rng(devices=devices), torch.no_grad():
            yield
    finally:
        for m, training in modes:
            m.training = training
        random.setstate(py)
        np.random.set_state(npy)


@dataclass(frozen=True)
class Generated:
    """One prompt's continuation: its text (special tokens skipped, not stripped), the new token ids
    (up to and including the end-of-sequence token when one was written) and whether it ended there
    (``False``: it ran out of ``max_new_tokens``)."""
    text: str
    token_ids: tuple
    ended: bool

    @property
    def empty(self) -> bool:
        return not self.text.strip()


# per chunk: (index of its first prompt, input_ids, attention_mask) -> the logits processors of that call
ProcessorFactory = Callable[[int, torch.Tensor, torch.Tensor], list]


def _eos_ids(tokenizer, eos_token_id) -> list:
    ids = eos_token_id if eos_token_id is not None else tokenizer.eos_token_id
    return [] if ids is None else [int(i) for i in (ids if isinstance(ids, (list, tuple)) else [ids])]


def _pad_chunk(chunk: list, pad: int, left: bool) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(p) for p in chunk)
    ids = torch.full((len(chunk), width), pad, dtype=torch.long)
    mask = torch.zeros((len(chunk), width), dtype=torch.long)
    for j, p in enumerate(chunk):
        at = slice(width - len(p), width) if left else slice(0, len(p))
        ids[j, at] = torch.tensor(p, dtype=torch.long)
        mask[j, at] = 1
    return ids, mask


def _sampling(temperature: float, top_p: float, top_k: int) -> dict:
    if temperature <= 0:  # greedy; the sampling knobs unset so that generate warns about none of them
        return dict(do_sample=False, num_beams=1, temperature=None, top_p=None, top_k=None)
    return dict(do_sample=True, num_beams=1, temperature=float(temperature), top_p=float(top_p), top_k=int(top_k))


def generate_batched(model, tokenizer, prompts: Sequence[Sequence[int]], max_new_tokens: int,
                     batch_size: int = 16, *, temperature: float = 0.0, top_p: float = 1.0, top_k: int = 0,
                     seed: Optional[int] = None, eos_token_id=None,
                     processors: Optional[ProcessorFactory] = None, share_prefix: bool = True) -> list[Generated]:
    """The continuation of each prompt (token ids), in order. Greedy when ``temperature`` is 0, else
    sampled (``top_p``, ``top_k`` 0 = off) from a torch RNG seeded with ``seed`` inside a fork (the
    caller's RNG is untouched). ``eos_token_id``: an id or a list of ids (default the tokenizer's).
    A decoder-only model gets its prompts left padded; an encoder-decoder model right padded (they are
    its encoder input), its continuation is the decoder's output after the start token.
    An over-long prompt keeps its end (``max_position_embeddings - max_new_tokens`` tokens).

    A model trained by several processes generates on all of them (:mod:`neurosym.model.collective`:
    a share of the prompts each, in lockstep); the text is decoded here. ``processors`` (Python
    objects, `neurosym generate` only) and a sampling ``seed`` keep the generation in this process.
    ``share_prefix``: the prompts' common leading tokens are prefilled once per chunk
    (:mod:`neurosym.model.shared_prefix`; the same answers, less compute)."""
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    eos = _eos_ids(tokenizer, eos_token_id)
    params = dict(max_new_tokens=int(max_new_tokens), batch_size=int(batch_size), pad=pad, eos=eos,
                  sampling=_sampling(temperature, top_p, top_k), seed=seed, share_prefix=bool(share_prefix))
    rows = [[int(t) for t in p] for p in prompts]
    if processors is not None or seed is not None:  # objects / one RNG stream: this process alone
        new = _generate_rows(model, rows, params, processors)
    else:
        new = spread(model, "generate", rows, params)
    return [_finished(tokenizer, ids, eos) for ids in new]


@task("generate")
def _generate_rows(model, prompts: list, params: dict, processors: Optional[ProcessorFactory] = None) -> list:
    """The new token ids of each prompt (this process's part of :func:`generate_batched`)."""
    device = next(model.parameters()).device
    max_new, pad, eos = params["max_new_tokens"], params["pad"], params["eos"]
    encoder_decoder = bool(getattr(getattr(model, "config", None), "is_encoder_decoder", False))
    ctx = getattr(getattr(model, "config", None), "max_position_embeddings", None)
    lockstep = {"synced_gpus": True} if params.get("lockstep") else {}
    # greedy: the prompts' common prefix prefilled once per group of prompts that share one (not in
    # lockstep: every process must make the same calls; not with logits processors, which read the
    # chunk's layout; not when sampling, whose draws depend on the rows generated together)
    share = (params.get("share_prefix", True) and not encoder_decoder and not lockstep and processors is None
             and not params["sampling"].get("do_sample"))
    out: list = []
    with measuring(model):
        if params.get("seed") is not None:
            torch.manual_seed(params["seed"])
        for i in range(0, len(prompts), params["batch_size"]):
            chunk = [list(p) for p in prompts[i:i + params["batch_size"]]]
            if ctx and not encoder_decoder:
                chunk = [p[-(ctx - max_new):] for p in chunk]  # keep the end of an over-long prompt
            new: list = [None] * len(chunk)
            for group in (prefix_groups(chunk) if share else [list(range(len(chunk)))]):
                rows = [chunk[j] for j in group]
                k = common_length(rows) if share else 0
                ids, mask = shared_layout(rows, k, pad) if k else _pad_chunk(rows, pad, left=not encoder_decoder)
                ids, mask = ids.to(device), mask.to(device)
                extra = {"logits_processor": processors(i, ids, mask)} if processors is not None else {}
                if k:
                    extra.update(prefilled(model, rows[0][:k], len(rows), device))
                gen = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=max_new,
                                     **params["sampling"], pad_token_id=pad,
                                     eos_token_id=eos[0] if len(eos) == 1 else (eos or None), **lockstep, **extra)
                start = 1 if encoder_decoder else ids.shape[1]
                for j, row in zip(group, gen):
                    new[j] = row[start:].tolist()
            out.extend(new)
    return out


def _finished(tokenizer, new: list, eos: list) -> Generated:
    end = next((k for k, t in enumerate(new) if t in eos), None)
    kept = new if end is None else new[:end + 1]
    return Generated(tokenizer.decode(kept, skip_special_tokens=True), tuple(kept), end is not None)


def greedy_generate(model, tokenizer, prompts: Sequence[Sequence[int]], max_new_tokens: int,
                    batch_size: int = 16) -> list[str]:
    """The greedy continuation of each prompt (token ids), decoded, stripped."""
    return [g.text.strip() for g in generate_batched(model, tokenizer, prompts, max_new_tokens, batch_size)]


def answer_examples(model, tokenizer, renderer, examples, max_new_tokens: int, batch_size: int = 16) -> list[str]:
    """The model's greedy answers to ``examples`` rendered under ``renderer``'s current system prompt."""
    return greedy_generate(model, tokenizer, [renderer.generation_ids(ex) for ex in examples], max_new_tokens,
                           batch_size)

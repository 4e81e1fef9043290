"""Greedy generation for measuring, batched: one ``model.generate`` call per chunk of prompts, left
padded, with the KV cache. Side-effect free for training: eval mode inside (every submodule's flag
restored after), no grad, and the Python/numpy/torch RNG states left as they were, so a run measures
without changing its trajectory. The gain probe and the eval reward use it.
"""
from __future__ import annotations

import random
from contextlib import contextmanager
from typing import Iterator, Sequence

import numpy as np
import torch


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


def greedy_generate(model, tokenizer, prompts: Sequence[Sequence[int]], max_new_tokens: int,
                    batch_size: int = 16) -> list[str]:
    """The greedy continuation of each prompt (token ids), decoded, stripped."""
    device = next(model.parameters()).device
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    ctx = getattr(getattr(model, "config", None), "max_position_embeddings", None)
    out: list[str] = []
    with measuring(model):
        for i in range(0, len(prompts), batch_size):
            chunk = [list(p) for p in prompts[i:i + batch_size]]
            if ctx:
                chunk = [p[-(ctx - max_new_tokens):] for p in chunk]  # keep the end of an over-long prompt
            width = max(len(p) for p in chunk)
            ids = torch.full((len(chunk), width), pad, dtype=torch.long)
            mask = torch.zeros((len(chunk), width), dtype=torch.long)
            for j, p in enumerate(chunk):
                ids[j, width - len(p):] = torch.tensor(p, dtype=torch.long)
                mask[j, width - len(p):] = 1
            gen = model.generate(input_ids=ids.to(device), attention_mask=mask.to(device),
                                 max_new_tokens=max_new_tokens, do_sample=False, num_beams=1, temperature=None,
                                 top_p=None, top_k=None, pad_token_id=pad, eos_token_id=tokenizer.eos_token_id)
            out.extend(tokenizer.decode(row[width:].tolist(), skip_special_tokens=True).strip() for row in gen)
    return out


def answer_examples(model, tokenizer, renderer, examples, max_new_tokens: int, batch_size: int = 16) -> list[str]:
    """The model's greedy answers to ``examples`` rendered under ``renderer``'s current system prompt."""
    return greedy_generate(model, tokenizer, [renderer.generation_ids(ex) for ex in examples], max_new_tokens,
                           batch_size)

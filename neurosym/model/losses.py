"""Losses of rendered examples under the model: micro-batches on the device, per-token response
losses, the mean loss of a split. Used by the LoRA step, evaluation and the gain probe alike."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from neurosym.data import make_micro_batches
from neurosym.data.batching import forward_inputs
from neurosym.data.render import IGNORE


def encode_batches(examples, renderer, batch_size: int, pad_id: int, runtime, packing: bool = False,
                   max_length: int | None = None) -> list[dict]:
    """Micro-batches of ``batch_size`` rows of rendered examples (padded, or packed), on the device."""
    encodings = [renderer.encode(ex) for ex in examples]
    return [runtime.to_device(b) for b in make_micro_batches(encodings, batch_size, pad_id, packing, max_length)]


def token_losses(model, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token cross-entropy of the response tokens, and the mask of which tokens count (packed rows
    pass position ids and no 2D mask: ``forward_inputs``)."""
    logits = model(**forward_inputs(batch)).logits
    logits = logits[:, :-1].float()
    labels = batch["labels"][:, 1:]
    mask = labels != IGNORE
    losses = F.cross_entropy(logits.reshape(-1, logits.size(-1)), labels.clamp(min=0).reshape(-1),
                             reduction="none").view_as(labels)
    return losses * mask, mask



def eval_loss(model, micro_batches, runtime) -> tuple[float, int]:
    """Mean response-token loss over the given batches and their number of response tokens, under no
    grad in eval mode (the model's modes and RNG left as they were). A model trained by several
    processes computes it on all of them (:func:`neurosym.model.collective.batch_losses`)."""
    from neurosym.model.collective import batch_losses

    parts = batch_losses(model, micro_batches, runtime.dtype)
    loss_sum, n = sum(p["sum"] for p in parts), sum(p["tokens"] for p in parts)
    return (loss_sum / max(n, 1)), n

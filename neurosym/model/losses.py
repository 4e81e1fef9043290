"""Losses of rendered examples under the model: micro-batches on the device, per-token response
losses, the mean loss of a split. Used by the LoRA step, evaluation and the gain probe alike."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from neurosym.data import make_micro_batches
from neurosym.data.batching import forward_inputs
from neurosym.data.render import IGNORE
from neurosym.model.collective import spread, task
from neurosym.model.generation import measuring
from neurosym.model.shared_prefix import forward_logits, shared_length


def encode_batches(examples, renderer, batch_size: int, pad_id: int, runtime, packing: bool = False,
                   max_length: int | None = None) -> list[dict]:
    """Micro-batches of ``batch_size`` rows of rendered examples (padded, or packed), on the device."""
    encodings = [renderer.encode(ex) for ex in examples]
    return [runtime.to_device(b) for b in make_micro_batches(encodings, batch_size, pad_id, packing, max_length)]


def token_losses(model, batch: dict, share_prefix: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token cross-entropy of the response tokens, and the mask of which tokens count (packed rows
    pass position ids and no 2D mask: ``forward_inputs``). ``share_prefix``: the rows' common leading
    tokens are run once (:mod:`neurosym.model.shared_prefix`); the columns before the first row's own
    token are then left out of both tensors (they hold no counted token)."""
    losses, mask, _ = _token_losses(model, batch, share_prefix)
    return losses, mask


def _token_losses(model, batch: dict, share_prefix: bool = False) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """:func:`token_losses` and, per row, whether the model's argmax is the label at every counted
    position (under teacher forcing: the greedy answer is the reference, up to floating-point ties)."""
    k = shared_length(batch) if share_prefix else 0
    if k:
        logits, labels = forward_logits(model, batch, k)[:, :-1].float(), batch["labels"][:, k + 1:]
    else:
        logits, labels = model(**forward_inputs(batch)).logits[:, :-1].float(), batch["labels"][:, 1:]
    mask = labels != IGNORE
    losses = F.cross_entropy(logits.reshape(-1, logits.size(-1)), labels.clamp(min=0).reshape(-1),
                             reduction="none").view_as(labels)
    exact = ((logits.argmax(-1) == labels) | ~mask).all(1) & mask.any(1)
    return losses * mask, mask, exact


def eval_loss(model, micro_batches, runtime) -> tuple[float, int]:
    """Mean response-token loss over the given batches and their number of response tokens, under no
    grad in eval mode (the model's modes and RNG left as they were). A model trained by several
    processes computes it on all of them (:func:`batch_losses`)."""
    parts = batch_losses(model, micro_batches, runtime.dtype)
    loss_sum, n = sum(p["sum"] for p in parts), sum(p["tokens"] for p in parts)
    return (loss_sum / max(n, 1)), n


@task("batch_losses")
def _batch_losses(model, rows: list, params: dict) -> list:
    """Each row is a micro-batch (a dict of nested lists: ``input_ids``, ``labels``, masks): its summed
    response-token loss and its number of response tokens, per row too, under no grad, in eval mode."""
    device = next(model.parameters()).device
    dtype = getattr(torch, params.get("autocast") or "float32")
    out = []
    with measuring(model):
        for row in rows:
            batch = {k: torch.tensor(v, dtype=torch.long, device=device) for k, v in row.items()}
            with _autocast(device, dtype):
                losses, mask, exact = _token_losses(model, batch, params.get("share_prefix", False))
            per_row = losses.sum(1)
            out.append({"sum": float(per_row.sum()), "tokens": int(mask.sum()),
                        "row_sums": per_row.tolist(), "row_tokens": mask.sum(1).tolist(),
                        "row_exact": exact.tolist()})
    return out


def _autocast(device: torch.device, dtype: torch.dtype):
    """The runtime's autocast (bf16/fp16 on GPU only), rebuilt on each process from the dtype's name."""
    import contextlib
    if device.type == "cuda" and dtype in (torch.bfloat16, torch.float16):
        return torch.autocast("cuda", dtype=dtype)
    return contextlib.nullcontext()


def batch_losses(model, micro_batches: list[dict], autocast_dtype: torch.dtype | None = None,
                 share_prefix: bool = False) -> list[dict]:
    """Per micro-batch: ``sum`` and ``tokens`` of its response-token losses, and per row ``row_sums``,
    ``row_tokens`` and ``row_exact`` (the argmax is the label at every response token); a model
    trained by several processes computes them on all of them (a share of the micro-batches each:
    :mod:`neurosym.model.collective`). ``share_prefix``: :mod:`neurosym.model.shared_prefix`."""
    rows = [{k: v.tolist() for k, v in b.items() if isinstance(v, torch.Tensor)} for b in micro_batches]
    name = str(autocast_dtype).removeprefix("torch.") if autocast_dtype is not None else None
    return spread(model, "batch_losses", rows, {"autocast": name, "share_prefix": bool(share_prefix)})

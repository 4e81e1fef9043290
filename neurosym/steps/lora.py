"""One LoRA optimizer step: forward/backward over micro-batches, grad norm, clip, optimizer, scheduler.

The loss is the mean over all response tokens of the whole step (not a mean of micro-batch means),
so gradient accumulation gives the same update as one large batch.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from neurosym.data.collate import example_losses as per_example_losses, forward_inputs
from neurosym.data.render import IGNORE


@dataclass
class LoraStepResult:
    loss: float            # mean token loss over the step
    grad_norm: float       # total L2 norm of the gradients before clipping
    tokens: int            # tokens processed (prompt + response, no padding)
    example_losses: list   # mean token loss of each example (router batch statistics)


def token_losses(model, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token cross-entropy of the response tokens, and the mask of which tokens count."""
    logits = model(**forward_inputs(batch)).logits
    logits = logits[:, :-1].float()
    labels = batch["labels"][:, 1:]
    mask = labels != IGNORE
    losses = F.cross_entropy(logits.reshape(-1, logits.size(-1)), labels.clamp(min=0).reshape(-1),
                             reduction="none").view_as(labels)
    return losses * mask, mask


def lora_step(model, optimizer, scheduler, micro_batches: list[dict], max_grad_norm, autocast) -> LoraStepResult:
    total_targets = sum(int((b["labels"][:, 1:] != IGNORE).sum()) for b in micro_batches)
    if total_targets == 0:
        raise ValueError("a batch with no response tokens (all truncated away?): raise data.max_length")
    loss_sum, tokens, example_losses = 0.0, 0, []
    for batch in micro_batches:
        with autocast:
            losses, mask = token_losses(model, batch)
        (losses.sum() / total_targets).backward()
        with torch.no_grad():
            loss_sum += float(losses.sum())
            example_losses.extend(per_example_losses(losses, mask, batch))
            tokens += int(batch["attention_mask"].sum())
    params = [p for p in model.parameters() if p.requires_grad]
    clip = max_grad_norm if max_grad_norm else float("inf")
    grad_norm = float(torch.nn.utils.clip_grad_norm_(params, clip))
    optimizer.step()
    scheduler.step()
    optimizer.zero_grad(set_to_none=True)
    return LoraStepResult(loss_sum / total_targets, grad_norm, tokens, [l for _, l in sorted(example_losses)])


@torch.no_grad()
def eval_loss(model, micro_batches, autocast) -> tuple[float, int]:
    """Mean response-token loss over the given batches (model left in the mode it was in)."""
    was_training = model.training
    model.eval()
    loss_sum, n = 0.0, 0
    try:
        for batch in micro_batches:
            with autocast:
                losses, mask = token_losses(model, batch)
            loss_sum += float(losses.sum())
            n += int(mask.sum())
    finally:
        model.train(was_training)
    return (loss_sum / max(n, 1)), n

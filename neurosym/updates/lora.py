"""The numerical update: one LoRA (or QLoRA, (IA)3, ...) optimizer step on the batch.

The loss is the mean over all response tokens of the whole step (not a mean of micro-batch means),
so gradient accumulation gives the same update as one large batch. The LR was set by the loop for
this step; a non-finite loss or gradient norm stops the run before the step reaches the weights.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from neurosym.data import make_micro_batches
from neurosym.data.collate import example_losses as per_example_losses, forward_inputs
from neurosym.data.render import IGNORE
from neurosym.errors import TrainingDiverged
from neurosym.updates.base import Outcome, Update


@dataclass
class LoraStepResult:
    loss: float            # mean token loss over the step
    grad_norm: float       # total L2 norm of the gradients before clipping
    tokens: int            # tokens processed (prompt + response, no padding)
    example_losses: list   # mean token loss of each example (router batch statistics)


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


def lora_step(model, optimizer, micro_batches: list[dict], max_grad_norm, runtime) -> LoraStepResult:
    """``micro_batches`` are this process's shard of the step; the loss is normalised by the number of
    target tokens of the whole step, over all processes, so N processes take the one-process step."""
    total_targets = int(runtime.sum(sum(int((b["labels"][:, 1:] != IGNORE).sum()) for b in micro_batches)))
    if total_targets == 0:
        raise ValueError("a batch with no response tokens (all truncated away?): raise data.max_length")
    loss_sum, tokens, example_losses = 0.0, 0, []
    for i, batch in enumerate(micro_batches):
        with runtime.accumulating(model, last=i == len(micro_batches) - 1):  # DDP: one all-reduce per step
            with runtime.autocast():
                losses, mask = token_losses(model, batch)
            runtime.backward(losses.sum() / total_targets)
        with torch.no_grad():
            loss_sum += float(losses.sum())
            example_losses.extend(per_example_losses(losses, mask, batch))
            tokens += int(batch["attention_mask"].sum())
    params = [p for p in model.parameters() if p.requires_grad]
    loss = runtime.sum(loss_sum) / total_targets  # the step's loss over all processes
    tokens = int(runtime.sum(tokens))
    if not math.isfinite(loss):
        optimizer.zero_grad(set_to_none=True)
        return LoraStepResult(loss, float("nan"), tokens, [l for _, l in sorted(example_losses)])
    grad_norm = runtime.clip_and_step(optimizer, params, max_grad_norm)
    return LoraStepResult(loss, grad_norm, tokens, [l for _, l in sorted(example_losses)])


@torch.no_grad()
def eval_loss(model, micro_batches, runtime) -> tuple[float, int]:
    """Mean response-token loss over the given batches (model left in the mode it was in)."""
    was_training = model.training
    model.eval()
    loss_sum, n = 0.0, 0
    try:
        for batch in micro_batches:
            with runtime.autocast():
                losses, mask = token_losses(model, batch)
            loss_sum += float(losses.sum())
            n += int(mask.sum())
    finally:
        model.train(was_training)
    return (loss_sum / max(n, 1)), n


class LoraUpdate(Update):
    """A gradient step on the adapter; the default route, always available."""

    name = "lora"

    def apply(self, batch: list, decision, step: int) -> Outcome:
        run = self.run
        data = run.cfg.data
        micro = encode_batches(run.runtime.shard(batch), run.renderer, run.cfg.train.batch_size, run.pad_id,
                               run.runtime, data.packing, data.max_length)
        res = lora_step(run.runtime.train_model(run.model), run.optimizer, micro, run.cfg.train.max_grad_norm,
                        run.runtime)
        fp16_skip = run.runtime.scaler is not None  # inf grads are the GradScaler's business, not divergence
        if not math.isfinite(res.loss) or (not math.isfinite(res.grad_norm) and not fp16_skip):
            last = run.last_checkpoint_name()
            raise TrainingDiverged(
                f"training diverged at step {step}: loss {res.loss}, grad norm {res.grad_norm} (lr {run.lr:.3g}). "
                f"The step was not applied; the last good checkpoint is {last or 'none (no checkpoint yet)'}. "
                f"Lower train.lr (or set train.max_grad_norm), then resume or start again.")
        return Outcome(self.name, loss=res.loss, grad_norm=res.grad_norm, tokens=res.tokens,
                       example_losses=res.example_losses)

"""The numerical update: one LoRA (or QLoRA, (IA)3, ...) optimizer step on the batch.

The loss is the mean over all response tokens of the whole step (not a mean of micro-batch means),
so gradient accumulation gives the same update as one large batch. The LR was set by the loop for
this step; a non-finite loss or gradient norm stops the run before the step reaches the weights.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from neurosym.data.batching import example_losses as per_example_losses
from neurosym.data.render import IGNORE
from neurosym.errors import TrainingDiverged
from neurosym.model.losses import encode_batches, token_losses
from neurosym.model.shared_prefix import has_active_dropout, shares_prefix
from neurosym.updates.base import Outcome, Update


@dataclass
class LoraStepResult:
    loss: float            # mean token loss over the step
    grad_norm: float       # total L2 norm of the gradients before clipping
    tokens: int            # tokens processed (prompt + response, no padding)
    example_losses: list   # mean token loss of each example (router batch statistics)


def lora_step(model, optimizer, micro_batches: list[dict], max_grad_norm, runtime,
              share_prefix: bool = False) -> LoraStepResult:
    """``micro_batches`` are this process's shard of the step; the loss is normalised by the number of
    target tokens of the whole step, over all processes, so N processes take the one-process step.
    ``share_prefix``: each micro-batch's common leading tokens are run once (:mod:`neurosym.model.shared_prefix`)."""
    total_targets = int(runtime.sum(sum(int((b["labels"][:, 1:] != IGNORE).sum()) for b in micro_batches)))
    if total_targets == 0:
        raise ValueError("a batch with no response tokens (all truncated away?): raise data.max_length")
    loss_sum, tokens, example_losses = 0.0, 0, []
    for i, batch in enumerate(micro_batches):
        with runtime.accumulating(model, last=i == len(micro_batches) - 1):  # DDP: one all-reduce per step
            with runtime.autocast():
                losses, mask = token_losses(model, batch, share_prefix)
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


class LoraUpdate(Update):
    """A gradient step on the adapter; the default route, always available."""

    name = "lora"
    gradient_step = True

    def apply(self, batch: list, decision, step: int) -> Outcome:
        ctx = self.ctx
        data, runtime = ctx.cfg.data, ctx.runtime
        micro = encode_batches(runtime.shard(batch), ctx.renderer, ctx.cfg.train.batch_size,
                               ctx.tokenizer.pad_token_id, runtime, data.packing, data.max_length)
        res = lora_step(runtime.train_model(ctx.model), ctx.optimizer, micro, ctx.cfg.train.max_grad_norm, runtime,
                        shares_prefix(ctx.cfg, runtime, ctx.model) and not has_active_dropout(ctx.model))
        fp16_skip = runtime.scaler is not None  # inf grads are the GradScaler's business, not divergence
        if not math.isfinite(res.loss) or (not math.isfinite(res.grad_norm) and not fp16_skip):
            last = ctx.last_checkpoint()
            raise TrainingDiverged(
                f"training diverged at step {step}: loss {res.loss}, grad norm {res.grad_norm} (lr {ctx.lr():.3g}). "
                f"The step was not applied; the last good checkpoint is {last or 'none (no checkpoint yet)'}. "
                f"Lower train.lr (or set train.max_grad_norm), then resume or start again.")
        return Outcome(self.name, loss=res.loss, grad_norm=res.grad_norm, tokens=res.tokens,
                       example_losses=res.example_losses)

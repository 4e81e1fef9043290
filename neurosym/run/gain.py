"""The gain an update bought: reward on a probe (the routed batch + a fixed held-out probe set) after
the update minus before. Measuring is side-effect free (``neurosym.model.generation.measuring``), so the
training trajectory is the same with or without it.

Cost: generation rewards answer every example with one batched ``generate`` (KV cache) per chunk,
and the probe set's part is cached per model version (weights and prompt), so the probe measured
after step N serves as "before" of step N+1 when nothing changed in between.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from neurosym.data import Example, collate
from neurosym.model.generation import answer_examples
from neurosym.model.losses import batch_losses
from neurosym.model.shared_prefix import shares_prefix


@dataclass
class Measurement:
    reward: float                        # mean over batch + probe examples
    batch_losses: Optional[list] = None  # per-example loss of the batch (router features)


class GainProbe:
    """``by_loss``: measure by the reference answers' loss (one forward pass) even for a generation reward."""

    def __init__(self, probe: list[Example], ctx, max_new_tokens: int, by_loss: bool = False):
        """``ctx``: the run's :class:`~neurosym.updates.base.UpdateContext` (model, renderer, reward)."""
        self.probe, self.reward, self.ctx, self.max_new_tokens = probe, ctx.reward, ctx, max_new_tokens
        self.generate = self.reward.needs_generation and not by_loss
        self._cache: tuple = (None, 0.0)  # (model version, summed probe reward)

    def measure(self, batch: list[Example], version: int, with_losses: bool = False) -> Measurement:
        cached = self._cache[0] == version
        examples = list(batch) + ([] if cached else list(self.probe))  # one batched pass for both
        if self.generate:
            scores = self._rewards(examples)
            losses = self.row_losses(batch) if with_losses else None
        else:
            losses = self.row_losses(examples)
            scores, losses = [-x for x in losses], losses[:len(batch)]
        if not cached:
            self._cache = (version, sum(scores[len(batch):]))
        return Measurement((sum(scores[:len(batch)]) + self._cache[1]) / (len(batch) + len(self.probe)), losses)

    def _rewards(self, examples) -> list[float]:
        ctx = self.ctx
        answers = answer_examples(ctx.model, ctx.tokenizer, ctx.renderer, examples, self.max_new_tokens,
                                  ctx.cfg.train.batch_size * 4)
        return [self.reward(a, ex.response) for a, ex in zip(answers, examples)]

    def row_losses(self, examples) -> list[float]:
        """Each example's mean reference-answer token loss (one forward pass per chunk, on every
        process of a sharded model: :func:`neurosym.model.losses.batch_losses`)."""
        return self.row_forward(examples)[0]

    def row_forward(self, examples) -> tuple[list[float], list[bool]]:
        """:meth:`row_losses`, and whether each reference answer is the model's argmax at every one of
        its tokens under teacher forcing (from the same forward pass)."""
        ctx = self.ctx
        bs = ctx.cfg.train.batch_size * 4  # no gradient: a wider batch than training's fits
        batches = [collate([ctx.renderer.encode(ex) for ex in examples[i:i + bs]], ctx.tokenizer.pad_token_id)
                   for i in range(0, len(examples), bs)]
        parts = batch_losses(ctx.model, batches, ctx.runtime.dtype, shares_prefix(ctx.cfg, ctx.runtime, ctx.model))
        losses = [s / max(n, 1) for part in parts for s, n in zip(part["row_sums"], part["row_tokens"])]
        return losses, [bool(x) for part in parts for x in part["row_exact"]]

"""The gain an update bought: reward on a probe (the routed batch + a fixed held-out probe set)
after the update minus before. Measuring is side-effect free: eval mode, no grad, RNG untouched,
train/eval mode restored, so the training trajectory is the same with or without it."""
from __future__ import annotations

import torch

from neurosym.data import Example, collate
from neurosym.steps.lora import token_losses


class GainProbe:
    def __init__(self, probe: list[Example], reward, renderer, pad_id: int, device, autocast,
                 generate=None, batch_size: int = 8):
        self.probe, self.reward, self.renderer = probe, reward, renderer
        self.pad_id, self.device, self.autocast = pad_id, device, autocast
        self.generate, self.batch_size = generate, batch_size

    @torch.no_grad()
    def measure(self, model, batch: list[Example]) -> float:
        """Mean reward over batch + probe under the current weights and system prompt."""
        examples = list(batch) + self.probe
        was_training = model.training
        model.eval()
        try:
            with torch.random.fork_rng(devices=[self.device] if self.device.type == "cuda" else []):
                if not self.reward.needs_generation:
                    return -self._mean_loss(model, examples)
                outputs = [self.generate(ex) for ex in examples]
                return sum(self.reward(o, ex.response) for o, ex in zip(outputs, examples)) / len(examples)
        finally:
            model.train(was_training)

    def _mean_loss(self, model, examples) -> float:
        per_example = []
        for i in range(0, len(examples), self.batch_size):
            b = collate([self.renderer.encode(ex) for ex in examples[i:i + self.batch_size]], self.pad_id)
            b = {k: v.to(self.device) for k, v in b.items()}
            with self.autocast:
                losses, mask = token_losses(model, b)
            per_example.extend((losses.sum(1) / mask.sum(1).clamp(min=1)).tolist())
        return sum(per_example) / len(per_example)

"""What a run's forward passes cost, counted where every one of them goes through: the base model's
``forward``. Tokens are counted as the model sees them (padding included), in three tallies:

* ``train_tokens``: inside a gradient step (its forward; the backward is charged as twice that by
  whoever converts tokens to cost: ``experiments/testbed/compare.py``);
* ``generated_tokens``: decoding steps of a generation (one new token per row, KV cache);
* ``forward_tokens``: every other forward pass (gain probes, prompt validation, per-row inspection,
  the prefill of a generation, evaluation).

One hook, no change to any caller: the gain probe, the student's answers inside a symbolic update and
the evaluation are all charged without knowing it.
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

KEYS = ("train_tokens", "forward_tokens", "generated_tokens")


class ComputeMeter:
    def __init__(self, model):
        inner = model.get_base_model() if hasattr(model, "get_base_model") else model
        self.counts = dict.fromkeys(KEYS, 0)
        self._training = False
        self._handle = inner.register_forward_pre_hook(self._count, with_kwargs=True)

    def _count(self, module, args, kwargs):
        ids = kwargs.get("input_ids", args[0] if args else None)
        if ids is None:
            ids = kwargs.get("inputs_embeds")
        if ids is None or not hasattr(ids, "shape") or len(ids.shape) < 2:
            return None
        n = int(ids.shape[0] * ids.shape[1])
        key = "train_tokens" if self._training else "generated_tokens" if ids.shape[1] == 1 else "forward_tokens"
        self.counts[key] += n
        return None

    @contextmanager
    def part(self, training: bool = False) -> Iterator[dict]:
        """Counts the block's passes into the dict it yields (the running tallies keep them too);
        ``training``: the block's forward passes are a gradient step's."""
        start, box, self._training = dict(self.counts), {}, training
        try:
            yield box
        finally:
            self._training = False
            box.update({k: self.counts[k] - start[k] for k in KEYS})

    @contextmanager
    def paused(self) -> Iterator[None]:
        """Passes in the block are not counted (evaluation: measuring the run is not part of its cost)."""
        saved = dict(self.counts)
        try:
            yield
        finally:
            self.counts = saved

    def take(self) -> dict:
        """The counts since the last ``take``."""
        out, self.counts = self.counts, dict.fromkeys(KEYS, 0)
        return out

    def peek(self) -> dict:
        return dict(self.counts)

    def close(self) -> None:
        self._handle.remove()

"""Where each batch comes from: a failed update's batch first (it takes a LoRA step instead), else
the training data (a resumable epoch sampler, or a weighted mixture when ``data.train`` lists several
sources) plus, once the symbolic route has produced some, refined examples from the remake store.

A refined row never takes a task row's slot (``remake.placement``): with ``add`` (the default),
``round(remake.mix_ratio x batch)`` refined rows come on top of the batch's task rows (the batch grows;
measured in issue 20: one rewritten example taking 2 of every 8 slots cut the knowledge accuracy from
0.50 to 0.29); with ``replace_parent``, a task row drawn whose prompt was rewritten is trained in its
newest rewritten form instead (the same fact, in the form the teacher fixed). All of it is in the
checkpoint (the refined rows themselves come back from the remake store)."""
from __future__ import annotations

from typing import Optional

import numpy as np

from neurosym.data import EpochSampler, Example
from neurosym.data.sampler import MixtureSampler


class BatchSource:
    def __init__(self, train: list[Example], seed: int, per_step: int, mix_ratio: float, placement: str = "add"):
        if placement not in ("add", "replace_parent"):
            raise ValueError(f"remake.placement must be add or replace_parent, not {placement!r}")
        self.train, self.per_step, self.mix_ratio, self.placement = train, per_step, mix_ratio, placement
        parts = getattr(train, "parts", None) or []
        self.sampler = MixtureSampler(parts, seed) if len(parts) > 1 else EpochSampler(len(train), seed)
        self.rng = np.random.default_rng([seed, 0x5EED])
        self.refined: list[Example] = []
        self.rewritten: dict[str, Example] = {}  # parent row's source -> its newest refined row (replace_parent)
        self.fallbacks: list[tuple[list[Example], str]] = []  # (batch, why its update failed)

    def add_refined(self, examples: list[Example]) -> None:
        self.refined.extend(examples)
        for ex in examples:
            parent = ex.meta.get("parent_source")
            if parent:
                self.rewritten[parent] = ex

    def push_fallback(self, batch: list[Example], why: str) -> None:
        self.fallbacks.append((list(batch), why))

    def next(self) -> tuple[list[Example], Optional[str]]:
        """The next batch, and why it is a fallback (None for a fresh batch)."""
        if self.fallbacks:
            return self.fallbacks.pop(0)
        batch = [self.train[i] for i in self.sampler.take(self.per_step)]
        if self.placement == "replace_parent":
            return [self.rewritten.get(ex.source, ex) for ex in batch], None
        k = round(self.mix_ratio * self.per_step) if self.refined else 0
        if k:  # on top of the task rows, never in their place
            batch += [self.refined[int(j)] for j in self.rng.integers(len(self.refined), size=k)]
        return batch, None

    def state_dict(self) -> dict:
        return {"sampler": self.sampler.state_dict(), "rng": self.rng.bit_generator.state,
                "n_refined": len(self.refined),
                "fallbacks": [{"batch": [ex.to_state() for ex in b], "why": why} for b, why in self.fallbacks]}

    def load_state_dict(self, state: dict, refined: list[Example]) -> None:
        """``refined`` is the store's content at the checkpoint (rows written later are discarded)."""
        if len(refined) != state["n_refined"]:
            raise ValueError(f"remake store has {len(refined)} refined examples, the checkpoint "
                             f"expected {state['n_refined']}")
        self.sampler.load_state_dict(state["sampler"])
        self.rng.bit_generator.state = state["rng"]
        self.refined, self.rewritten = [], {}
        self.add_refined(list(refined))
        self.fallbacks = [([Example.from_state(e) for e in f["batch"]], f["why"]) for f in state["fallbacks"]]

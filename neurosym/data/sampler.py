"""A resumable, deterministic sampler: epoch e uses permutation rng([seed, e]).

The order depends only on (seed, epoch), so a run killed at any point (even across an epoch
boundary) and resumed from its saved (epoch, position) sees exactly the same batches.
"""
from __future__ import annotations

import numpy as np


class EpochSampler:
    def __init__(self, n: int, seed: int, epoch: int = 0, position: int = 0):
        if n <= 0:
            raise ValueError("cannot sample from an empty dataset")
        self.n, self.seed = n, seed
        self.epoch, self.position = epoch, position
        self._perm = self._permutation(epoch)

    def _permutation(self, epoch: int) -> np.ndarray:
        return np.random.default_rng([self.seed, epoch]).permutation(self.n)

    def take(self, k: int) -> list[int]:
        out = []
        while len(out) < k:
            if self.position >= self.n:
                self.epoch, self.position = self.epoch + 1, 0
                self._perm = self._permutation(self.epoch)
            step = min(k - len(out), self.n - self.position)
            out.extend(int(i) for i in self._perm[self.position:self.position + step])
            self.position += step
        return out

    @property
    def examples_seen(self) -> int:
        return self.epoch * self.n + self.position

    def state_dict(self) -> dict:
        return {"n": self.n, "seed": self.seed, "epoch": self.epoch, "position": self.position}

    def load_state_dict(self, state: dict) -> None:
        if state["n"] != self.n or state["seed"] != self.seed:
            raise ValueError(
                f"checkpoint sampler was for {state['n']} examples with seed {state['seed']}, but the data "
                f"now has {self.n} examples with seed {self.seed}: the training file or run.seed changed")
        self.epoch, self.position = state["epoch"], state["position"]
        self._perm = self._permutation(self.epoch)

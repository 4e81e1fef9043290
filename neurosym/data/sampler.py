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


class MixtureSampler:
    """Several datasets mixed by weight: each draw picks a source with probability weight/Σweights
    (one seeded generator), then takes that source's next index from its own :class:`EpochSampler`
    (seeded per source). Indices are global over the concatenated sources (``TrainSet.parts``).

    The state is the generator's state plus every source's (epoch, position): a run resumed from it
    continues with exactly the draws it would have made.
    """

    def __init__(self, parts: list[tuple], seed: int):
        if not parts:
            raise ValueError("cannot sample from an empty dataset")
        self.seed = seed
        self.starts = [int(p[0]) for p in parts]
        self.sizes = [int(p[1]) - int(p[0]) for p in parts]
        self.weights = [float(p[2]) for p in parts]
        total = sum(self.weights)
        self._p = np.array(self.weights) / total
        self.subs = [EpochSampler(n, int(np.random.SeedSequence([seed, 0x4D4958, k]).generate_state(1)[0]))
                     for k, n in enumerate(self.sizes)]
        self.rng = np.random.default_rng([seed, 0x4D4958])
        self.n = sum(self.sizes)

    def take(self, k: int) -> list[int]:
        picks = self.rng.choice(len(self.subs), size=k, p=self._p)
        return [self.starts[s] + self.subs[s].take(1)[0] for s in picks.tolist()]

    @property
    def examples_seen(self) -> int:
        return sum(s.examples_seen for s in self.subs)

    def state_dict(self) -> dict:
        return {"kind": "mixture", "sizes": self.sizes, "weights": self.weights, "seed": self.seed,
                "rng": self.rng.bit_generator.state, "sources": [s.state_dict() for s in self.subs]}

    def load_state_dict(self, state: dict) -> None:
        if state.get("kind") != "mixture":
            raise ValueError("the checkpoint sampled one dataset; data.train now mixes several")
        if state["sizes"] != self.sizes or state["weights"] != self.weights or state["seed"] != self.seed:
            raise ValueError(
                f"checkpoint mixed sources of sizes {state['sizes']} with weights {state['weights']} and seed "
                f"{state['seed']}; the data now has sizes {self.sizes}, weights {self.weights}, seed "
                f"{self.seed}: a training source, its weight or run.seed changed")
        self.rng.bit_generator.state = state["rng"]
        for sub, s in zip(self.subs, state["sources"]):
            sub.load_state_dict(s)

"""(IA)3 composition, by hand where PEFT does something else.

An (IA)3 module rescales a layer: y = l * (W x) (or W (l * x) for feed-forward modules). Its effect on the
layer is linear in l - 1, so we compose in that space:

    l = 1 + sum_i lambda_i (l_i - 1)

- weight_avg (lambda_i = 1/N) is the plain average of the vectors; negation (lambda = -1) gives 2 - l.
  PEFT's ``IA3Model.add_weighted_adapter`` computes sum_i w_i l_i instead, which for w = -1 flips the sign
  of the activations rather than undoing the module.
- Output composition: several active (IA)3 adapters in PEFT *multiply* (l_1 * l_2), they do not sum. The
  sum  base + sum_i lambda_i (module_i(x) - base(x))  at a layer equals the layer with the vector above
  (bias terms cancel), so output composition of (IA)3 is exact at the cost of one module.
We still use PEFT to create and inject the new adapter (``add_weighted_adapter``) and overwrite its values.
"""
from __future__ import annotations

import torch


def ia3_layers(model):
    from peft.tuners.ia3 import IA3Layer
    return [m for m in model.modules() if isinstance(m, IA3Layer)]


def merge(model, names: list[str], weights: list[float], into: str) -> None:
    model.base_model.add_weighted_adapter(names, [1.0] * len(names), into)  # injects `into`; values set below
    with torch.no_grad():
        for layer in ia3_layers(model):
            if into not in layer.ia3_l:
                continue
            target = layer.ia3_l[into]
            combined = torch.ones_like(target)
            for name, lam in zip(names, weights):
                if name in layer.ia3_l:
                    combined += lam * (layer.ia3_l[name] - 1.0)
            target.copy_(combined)
    model.base_model.set_adapter(into)

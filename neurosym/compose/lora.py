"""LoRA composition, all of it through PEFT.

- Output methods: several active LoRA adapters already *sum* their outputs in PEFT's LoRA layers
  (``model.base_model.set_adapter([...])``; ``PeftModel.set_adapter`` takes one name only), and
  ``LoraLayer.set_scale(name, lambda)`` multiplies one adapter's scale s_i by lambda_i on every layer. So a
  layer computes  W x + sum_i lambda_i * s_i * B_i A_i x  (no dropout at inference).
- Baking: sum_i lambda_i s_i B_i A_i x = [B_1 ... B_N] [lambda_1 s_1 A_1; ...; lambda_N s_N A_N] x, which is
  PEFT's ``add_weighted_adapter(..., combination_type="cat")``: one adapter of rank sum r_i, exact.
- Weight methods: ``add_weighted_adapter`` with linear / svd / ties / dare_* (negative weights allowed).
"""
from __future__ import annotations


def attach(base, sources):
    """One PeftModel holding every module under its own name (the first one active)."""
    from neurosym.model.load import peft_from_pretrained

    first, rest = sources[0], sources[1:]
    model = peft_from_pretrained(base, first.adapter_dir, adapter_name=first.name)
    for s in rest:
        model.load_adapter(str(s.adapter_dir), adapter_name=s.name)
    model.eval()
    return model


def lora_layers(model):
    from peft.tuners.lora import LoraLayer
    return [m for m in model.modules() if isinstance(m, LoraLayer)]


def activate_output(model, names: list[str], weights: list[float]) -> None:
    """All modules active at once, module i scaled by lambda_i: PEFT sums their outputs."""
    for layer in lora_layers(model):
        for name, lam in zip(names, weights):
            layer.set_scale(name, lam)   # scaling[name] = lambda * alpha/r (or alpha/sqrt(r) for rsLoRA)
    model.base_model.set_adapter(names)


def merge(model, names: list[str], weights: list[float], combination: str, into: str,
          density: float | None = None, svd_rank: int | None = None) -> None:
    """``add_weighted_adapter`` into a new adapter ``into`` and make it the only active one."""
    kwargs = {}
    if combination in ("ties", "dare_linear", "dare_ties"):
        kwargs["density"] = density
    if combination == "svd" and svd_rank:
        kwargs["svd_rank"] = svd_rank
    model.base_model.add_weighted_adapter(names, weights, into, combination_type=combination, **kwargs)
    # PEFT gives the new adapter lora_alpha = r, meaning scale 1, but copies use_rslora from the first
    # module: with rsLoRA modules the result would be scaled by sqrt(r) instead of 1. Undo that.
    config = model.peft_config[into]
    if getattr(config, "use_rslora", False):
        config.use_rslora = False
        for layer in lora_layers(model):
            if into in layer.scaling:
                layer.use_rslora[into] = False
                layer.set_scale(into, 1.0)
    model.base_model.set_adapter(into)

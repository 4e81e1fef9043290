"""The composition methods: one line each. A new method is one line here, plus one function if PEFT
does not already do it (then name it in ``combine``).

family  "output": every module runs on the same input; their outputs, times lambda_i, are added to the
        frozen base layer's output (cost: N modules). "weight": one adapter whose parameters combine
        the modules' (cost: one module).
combine  PEFT's ``add_weighted_adapter`` combination_type used for LoRA (output methods use "cat" when
        baked: for LoRA, summing outputs *is* the cat merge), or None for output methods unbaked.
weights  "ones" (lambda_i = 1), "mean" (1/N) or "given" (--weight NAME=lambda, default 1; negative allowed).
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Method:
    name: str
    family: str                  # "output" | "weight"
    combine: str | None          # PEFT combination_type for LoRA
    weights: str                 # "ones" | "mean" | "given"
    kinds: tuple = ("lora", "ia3")
    equal_rank: bool = False     # PEFT combines A and B entry-wise: ranks must match
    exact: str = "exact"         # what the README table says about it
    needs_density: bool = False


METHODS: dict[str, Method] = {m.name: m for m in (
    Method("output_sum", "output", None, "ones"),
    Method("output_avg", "output", None, "mean"),
    Method("output_weighted", "output", None, "given"),
    Method("weight_avg", "weight", "linear", "mean", equal_rank=True, exact="approximate for LoRA (A and B averaged separately)"),
    Method("weight_sum", "weight", "linear", "ones", equal_rank=True, exact="approximate for LoRA (A and B summed separately)"),
    Method("weight_linear", "weight", "linear", "given", equal_rank=True, exact="approximate for LoRA (A and B combined separately)"),
    Method("cat", "weight", "cat", "given", kinds=("lora",)),
    Method("svd", "weight", "svd", "given", kinds=("lora",), exact="exact at --svd-rank >= sum of ranks, else truncated"),
    Method("ties", "weight", "ties", "given", kinds=("lora",), equal_rank=True, exact="approximate (prunes, elects signs)", needs_density=True),
    Method("dare_linear", "weight", "dare_linear", "given", kinds=("lora",), equal_rank=True, exact="approximate (random drop + rescale)", needs_density=True),
    Method("dare_ties", "weight", "dare_ties", "given", kinds=("lora",), equal_rank=True, exact="approximate (random drop, sign election)", needs_density=True),
)}


def get_method(name: str) -> Method:
    from neurosym.compose.sources import ComposeError
    if name not in METHODS:
        raise ComposeError(f"unknown composition method {name!r}; choose one of {', '.join(METHODS)}")
    return METHODS[name]


def resolve_weights(method: Method, names: list[str], given: dict[str, float]) -> list[float]:
    """lambda_i per module, in the order of ``names``."""
    from neurosym.compose.sources import ComposeError
    unknown = sorted(set(given) - set(names))
    if unknown:
        raise ComposeError(f"--weight {unknown[0]}=...: no --adapter is named {unknown[0]!r} "
                           f"(adapters: {', '.join(names)})")
    if method.weights != "given" and given:
        alt = "output_weighted" if method.family == "output" else "weight_linear"
        raise ComposeError(f"--method {method.name} fixes its weights ({'1' if method.weights == 'ones' else '1/N'} "
                           f"each); to set lambda per module use --method {alt}")
    if method.weights == "ones":
        return [1.0] * len(names)
    if method.weights == "mean":
        return [1.0 / len(names)] * len(names)
    return [float(given.get(n, 1.0)) for n in names]

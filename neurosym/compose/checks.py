"""Checks that a set of modules can be composed by a method, run on their config files before any
model loads. Each refusal names the modules, the reason and a way out."""
from __future__ import annotations

from neurosym.compose.registry import Method
from neurosym.compose.sources import AdapterSource, ComposeError

_KIND_NAMES = {"lora": "LoRA", "ia3": "(IA)3"}
RESERVED = "default"   # the name PEFT saves at the root of an adapter folder: the composed result's


def _targets(src: AdapterSource):
    t = src.config.get("target_modules")
    return frozenset(t) if isinstance(t, (list, tuple, set)) else t


def check(sources: list[AdapterSource], method: Method, bake: bool = False) -> None:
    if not sources:
        raise ComposeError("no modules: pass --adapter NAME=PATH at least once")
    names = [s.name for s in sources]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise ComposeError(f"--adapter {dup[0]} is given twice: each module needs its own name")
    if RESERVED in names:
        raise ComposeError(f"--adapter {RESERVED}=...: '{RESERVED}' is the name of the composed result; "
                           f"name the module something else")
    first = sources[0]
    for s in sources:
        if s.kind not in _KIND_NAMES:
            raise ComposeError(f"{s.name} ({s.adapter_dir}) is a {s.config.get('peft_type')} adapter: only LoRA "
                               f"(with QLoRA/rsLoRA) and (IA)3 modules can be composed")
    for s in sources[1:]:
        if s.kind != first.kind:
            raise ComposeError(
                f"{first.name} is {_KIND_NAMES[first.kind]} and {s.name} is {_KIND_NAMES[s.kind]}: LoRA and (IA)3 "
                f"modules cannot be composed (one adds B·A·x to a layer's output, the other rescales it); "
                f"compose each kind separately")
    if first.kind not in method.kinds:
        raise ComposeError(f"--method {method.name} works on LoRA modules only; for (IA)3 use one of "
                           f"output_sum, output_avg, output_weighted, weight_avg, weight_sum, weight_linear")
    for s in sources[1:]:
        if s.base.identity != first.base.identity:
            a, b = first.base.identity, s.base.identity
            raise ComposeError(
                f"{first.name} was trained on {a[0]}{f' (revision {a[1]})' if a[1] else ''} but {s.name} on "
                f"{b[0]}{f' (revision {b[1]})' if b[1] else ''}: modules must share one base model and revision")
        if _targets(s) != _targets(first):
            raise ComposeError(f"{first.name} targets [{first.target_modules}] but {s.name} targets "
                               f"[{s.target_modules}]: modules must adapt the same layers; retrain one with the "
                               f"other's lora.target_modules")
        if first.kind == "ia3" and s.config.get("feedforward_modules") != first.config.get("feedforward_modules"):
            raise ComposeError(f"{first.name} and {s.name} rescale different feed-forward modules "
                               f"({first.config.get('feedforward_modules')} vs {s.config.get('feedforward_modules')})")
    if first.kind != "lora":
        return
    if method.equal_rank:
        ranks = {s.name: s.rank for s in sources}
        if len(set(ranks.values())) > 1:
            listed = ", ".join(f"{n} r={r}" for n, r in ranks.items())
            raise ComposeError(f"--method {method.name} needs equal ranks (PEFT combines A and B entry by entry): "
                               f"{listed}; use cat or svd, or an output_* method")
    merges = method.family == "weight" or bake
    dora = [s.name for s in sources if s.config.get("use_dora")]
    if dora and (merges or method.name != "output_sum"):
        raise ComposeError(f"{dora[0]} is a DoRA module: its magnitude vector renormalises W + s·B·A, so DoRA "
                           f"outputs are not additive and only unbaked output_sum (PEFT runs each module and sums) "
                           f"composes them exactly; use that, or train LoRA modules (lora.use_dora: false)")
    saved = [s.name for s in sources if s.config.get("modules_to_save")]
    if saved and merges:
        raise ComposeError(f"{saved[0]} trains whole modules (modules_to_save), which cannot be merged into one "
                           f"adapter; use an unbaked output_* method")

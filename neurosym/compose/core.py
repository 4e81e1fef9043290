"""Compose modules into a folder, and load a composition (or a run, checkpoint, adapter or model) back.

``compose`` writes either a standard PEFT adapter (weight methods; output methods with ``bake``), which
plain ``PeftModel.from_pretrained`` loads, or, for unbaked output methods, only a manifest
``composition.yaml`` naming the modules by path and content hash. Both folders carry the manifest, so
``load(folder)`` knows the base model (its quantization included) and checks the hashes.
"""
from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path
from typing import Optional

import yaml

from neurosym.compose import ia3, lora
from neurosym.compose.checks import RESERVED, check
from neurosym.compose.registry import Method, get_method, resolve_weights
from neurosym.compose.sources import (ADAPTER_CONFIG, AdapterSource, BaseRef, ComposeError, file_hashes,
                                      resolve)

log = logging.getLogger(__name__)
MANIFEST = "composition.yaml"
FORMAT = "neurosym-composition/1"


# ------------------------------------------------------------------------------------------ plan

def plan(adapters: list[tuple[str, str]], method: str, weights: Optional[dict] = None, bake: bool = False):
    """Resolve and check the modules (config files only, no model): (sources, method, lambdas)."""
    m = get_method(method)
    sources = [resolve(name, path) for name, path in adapters]
    check(sources, m, bake)
    lambdas = resolve_weights(m, [s.name for s in sources], weights or {})
    for s, lam in zip(sources, lambdas):
        s.weight = lam
    return sources, m, lambdas


def _base_model(base: BaseRef, device=None, quantization: Optional[str] = None):
    import torch

    from neurosym.model.load import check_quantization, load_base_model, load_tokenizer, pick_device

    model_cfg = base.model_config(**({"quantization": quantization} if quantization else {}))
    if model_cfg.quantization == "4bit" and not torch.cuda.is_available():
        raise ComposeError(f"the base {model_cfg.name_or_path} is loaded in 4bit (QLoRA), which needs a CUDA GPU "
                           f"(bitsandbytes NF4 kernels do not run on CPU); on this machine pass --quantization none "
                           f"(load(..., quantization='none')) to use a full-precision copy of the base")
    check_quantization(model_cfg)   # bitsandbytes missing: a clear error, before loading
    device = torch.device(device) if device else pick_device()
    cache = Path(tempfile.gettempdir()) / "neurosym-tiny"   # tiny:// models are built deterministically
    tokenizer = load_tokenizer(model_cfg, cache)
    model, _ = load_base_model(model_cfg, cache, device)
    return model.eval(), tokenizer


def apply(model, sources: list[AdapterSource], method: Method, lambdas: list[float], bake: bool,
          density: Optional[float] = None, svd_rank: Optional[int] = None):
    """Make the composition the active state of ``model`` (a PeftModel holding every module)."""
    names = [s.name for s in sources]
    if sources[0].kind == "ia3":
        ia3.merge(model, names, lambdas, into=RESERVED)
    elif method.family == "output" and not bake:
        lora.activate_output(model, names, lambdas)
    else:
        combination = "cat" if method.family == "output" else method.combine
        lora.merge(model, names, lambdas, combination, into=RESERVED, density=density, svd_rank=svd_rank)
    return model


# ------------------------------------------------------------------------------------------ compose

def compose(adapters: list[tuple[str, str]], method: str, out: str | os.PathLike, weights: Optional[dict] = None,
            bake: bool = False, density: Optional[float] = None, svd_rank: Optional[int] = None,
            seed: int = 0, quantization: Optional[str] = None, device=None) -> Path:
    """Write the composition to ``out``; returns the folder."""
    sources, m, lambdas = plan(adapters, method, weights, bake)
    if m.needs_density and density is None:
        density = 0.5
    out = Path(out)
    if (out / ADAPTER_CONFIG).exists() or (out / MANIFEST).exists():
        raise ComposeError(f"--out {out} already holds an adapter or a composition; pick a new folder")
    base = sources[0].base
    if quantization:
        base = BaseRef(base.name_or_path, base.revision, quantization, base.dtype, base.trust_remote_code)
    options = {"density": density, "svd_rank": svd_rank, "seed": seed}
    out.mkdir(parents=True, exist_ok=True)
    if not (m.family == "weight" or bake):
        write_manifest(out, base, m, sources, bake=False, options=options)
        return out
    import torch

    model, _ = _base_model(base, device)
    model = lora.attach(model, sources)
    with torch.random.fork_rng():       # dare_* drop at random: the same seed gives the same adapter
        torch.manual_seed(seed)
        apply(model, sources, m, lambdas, bake, density=density, svd_rank=svd_rank)
    for s in sources:
        model.delete_adapter(s.name)
    model.save_pretrained(str(out))    # the adapter named "default" lands at the folder's root
    write_manifest(out, base, m, sources, bake=bake, options=options, result=file_hashes(out))
    return out


def write_manifest(out: Path, base: BaseRef, method: Method, sources, bake: bool, options: dict,
                   result: Optional[dict] = None) -> Path:
    out = Path(out)
    modules = []
    for s in sources:
        path = os.path.relpath(Path(s.adapter_dir).resolve(), out.resolve())
        modules.append({"name": s.name, "path": path, "source": s.given, "weight": s.weight,
                        "sha256": s.hashes})
    doc = {"format": FORMAT, "method": method.name, "kind": sources[0].kind, "baked": bool(bake),
           "base": base.as_dict(), "options": options, "modules": modules}
    if result is not None:
        doc["result"] = {"path": ".", "sha256": result}
    text = ("# Written by `neurosym compose`. Load it with `neurosym generate THIS_FOLDER` or\n"
            "# neurosym.compose.load(THIS_FOLDER). Changing a module's files invalidates its hash.\n")
    (out / MANIFEST).write_text(text + yaml.safe_dump(doc, sort_keys=False))
    return out / MANIFEST


def read_manifest(path: str | os.PathLike) -> tuple[Path, dict]:
    p = Path(path)
    if p.is_dir():
        p = p / MANIFEST
    try:
        doc = yaml.safe_load(p.read_text())
    except yaml.YAMLError as exc:
        raise ComposeError(f"{p}: not valid YAML ({exc})") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise ComposeError(f"{p}: not a composition manifest (expected format: {FORMAT})")
    for key in ("method", "kind", "base", "modules"):
        if key not in doc:
            raise ComposeError(f"{p}: key {key!r} is missing; re-create it with neurosym compose")
    return p, doc


def _verify(where: Path, hashes: dict, label: str) -> None:
    if not (where / ADAPTER_CONFIG).exists():
        raise ComposeError(f"{label}: {where} has no {ADAPTER_CONFIG} (moved or deleted?); "
                           f"fix the path in the manifest or re-run neurosym compose")
    now = file_hashes(where)
    for fname, want in hashes.items():
        if now.get(fname) != want:
            raise ComposeError(f"{label}: {where / fname} changed since the composition was made (sha256 "
                               f"{now.get(fname, 'missing')[:12]}… ≠ {want[:12]}…); re-run neurosym compose "
                               f"with the module you mean")


def manifest_sources(path) -> tuple[Path, dict, list[AdapterSource]]:
    """The manifest's modules, each checked against its recorded hashes."""
    p, doc = read_manifest(path)
    root = p.parent
    sources = []
    for mod in doc["modules"]:
        where = (root / mod["path"]).resolve()
        if "result" not in doc:
            _verify(where, mod["sha256"], f"{p} module {mod['name']}")
        src = AdapterSource(name=mod["name"], given=mod.get("source", mod["path"]), adapter_dir=where,
                            config={"peft_type": doc["kind"].upper()}, base=BaseRef(**doc["base"]),
                            weight=float(mod["weight"]), hashes=mod["sha256"])
        sources.append(src)
    return p, doc, sources


# ------------------------------------------------------------------------------------------ load

def load(path: str | os.PathLike, device=None, quantization: Optional[str] = None):
    """(model, tokenizer) ready for generation, from a composition folder or manifest, a run directory,
    a checkpoint, a PEFT adapter folder, or a plain model (local folder, hub id, tiny://preset)."""
    p = Path(path)
    if p.is_file() and p.name.endswith((".yaml", ".yml")) or (p.is_dir() and (p / MANIFEST).exists()):
        return _load_manifest(p, device, quantization)
    if p.is_dir() and ((p / ADAPTER_CONFIG).exists() or (p / "checkpoints").is_dir()):
        src = resolve("module", str(p))
        model, tok = _base_model(src.base, device, quantization)
        from peft import PeftModel
        return PeftModel.from_pretrained(model, str(src.adapter_dir)).eval(), tok
    return _base_model(BaseRef(str(path)), device, quantization)


def _load_manifest(path: Path, device, quantization):
    from peft import PeftModel

    p, doc, sources = manifest_sources(path)
    model, tok = _base_model(BaseRef(**doc["base"]), device, quantization)
    if "result" in doc:      # weight method or baked: one ordinary adapter at the folder's root
        _verify(p.parent, doc["result"]["sha256"], f"{p} result")
        return PeftModel.from_pretrained(model, str(p.parent)).eval(), tok
    method = get_method(doc["method"])
    model = lora.attach(model, sources)
    opts = doc.get("options") or {}
    apply(model, sources, method, [s.weight for s in sources], bake=False,
          density=opts.get("density"), svd_rank=opts.get("svd_rank"))
    return model, tok

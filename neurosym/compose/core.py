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
from neurosym.persist.rundir import RunDir
from neurosym.persist.safe_output import OutputError, OutputTarget, model_paths

log = logging.getLogger(__name__)
MANIFEST = "composition.yaml"
FORMAT = "neurosym-composition/1"


# ------------------------------------------------------------------------------------------ plan

def plan(adapters: list[tuple[str, str]], method: str, weights: Optional[dict] = None, bake: bool = False,
         base: Optional[str] = None):
    """Resolve and check the modules (config files only, no model): (sources, method, lambdas).
    ``base``: the base model of PEFT folders whose config does not name one."""
    m = get_method(method)
    sources = [resolve(name, path, base=base) for name, path in adapters]
    check(sources, m, bake)
    lambdas = resolve_weights(m, [s.name for s in sources], weights or {})
    for s, lam in zip(sources, lambdas):
        s.weight = lam
    return sources, m, lambdas


def tiny_cache() -> Path:
    """Where ``compose``/``generate`` build ``tiny://`` models (deterministic, so shared between commands;
    one folder per user: another user's folder in the shared temp dir is theirs). Builds are locked
    and atomic (:func:`neurosym.persist.atomic.build_folder_once`): two commands may build it at once."""
    uid = os.getuid() if hasattr(os, "getuid") else "user"
    return Path(tempfile.gettempdir()) / f"neurosym-tiny-{uid}"


TRUST_HINT = ("read that code first, then pass --trust-remote-code (neurosym.compose.load(..., "
              "trust_remote_code=True)) to let it run")


def check_trust(base: BaseRef, allowed: bool, where: str) -> None:
    """Refuse a base that asks for ``trust_remote_code`` (in a manifest or a run's config) unless the
    caller allowed it: a file someone handed you must not decide to run Python code."""
    if base.trust_remote_code and not allowed:
        raise ComposeError(f"{where} sets trust_remote_code: true: loading its base {base.name_or_path} would run "
                           f"the Python code shipped in that model's folder (or hub repo), and a file you "
                           f"received may name any folder; {TRUST_HINT}")


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
    cache = tiny_cache()
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

def protected_paths(sources: list[AdapterSource], base: BaseRef) -> list[Path]:
    """What a composition reads, which ``--out`` may not be, contain or be inside: every module's folder
    and run directory, the base model's folder (a local path), the model caches."""
    paths: list[Path] = [tiny_cache()]
    for s in sources:
        paths.append(Path(s.adapter_dir))
        if s.run_dir is not None:
            paths += [Path(s.run_dir), RunDir(s.run_dir).models_cache]
    return paths + model_paths(base.name_or_path)


def compose(adapters: list[tuple[str, str]], method: str, out: str | os.PathLike, weights: Optional[dict] = None,
            bake: bool = False, density: Optional[float] = None, svd_rank: Optional[int] = None,
            seed: int = 0, quantization: Optional[str] = None, device=None, overwrite: bool = False,
            trust_remote_code: bool = False, base: Optional[str] = None) -> Path:
    """Write the composition to ``out``; returns the folder.

    ``out`` follows :class:`neurosym.persist.safe_output.OutputTarget` (as ``export`` and ``merge``): an existing
    non-empty folder is refused unless ``overwrite``, and ``overwrite`` replaces only an earlier compose
    output (a folder holding ``composition.yaml``); never a module's folder or run, the base model's
    folder, a model cache or any run directory; written to a temporary sibling and renamed into place.
    All of it is checked before a model loads. ``base`` (hub id or folder, relative to the working
    directory): the base model of PEFT folders whose config does not name one.

    :raises neurosym.persist.safe_output.OutputError: ``out`` may not be written.
    :raises ComposeError: the modules cannot be composed as asked.
    """
    sources, m, lambdas = plan(adapters, method, weights, bake, base=base)
    if m.needs_density and density is None:
        density = 0.5
    base = sources[0].base
    if quantization:
        base = BaseRef(base.name_or_path, base.revision, quantization, base.dtype, base.trust_remote_code)
    loads_model = m.family == "weight" or bake
    if loads_model:
        first = sources[0]
        check_trust(base, trust_remote_code, f"--adapter {first.name}={first.given}: its run's config "
                                             f"({first.run_dir}/config.yaml, model.trust_remote_code)")
    target = OutputTarget(out, kind="dir", overwrite=overwrite, protect=protected_paths(sources, base))
    if overwrite and target.path.is_dir() and any(target.path.iterdir()) and not (target.path / MANIFEST).is_file():
        raise OutputError(f"--out {out}: not an earlier output of neurosym compose (no {MANIFEST}); --overwrite "
                          f"replaces only those. Name a new folder, or move this one away yourself")
    options = {"density": density, "svd_rank": svd_rank, "seed": seed}
    if not loads_model:
        with target.writing() as tmp:
            write_manifest(tmp, base, m, sources, bake=False, options=options, at=target.path)
        return Path(out)
    import torch

    model, _ = _base_model(base, device)
    model = lora.attach(model, sources)
    with torch.random.fork_rng():       # dare_* drop at random: the same seed gives the same adapter
        torch.manual_seed(seed)
        apply(model, sources, m, lambdas, bake, density=density, svd_rank=svd_rank)
    for s in sources:
        model.delete_adapter(s.name)
    with target.writing() as tmp:
        model.save_pretrained(str(tmp))    # the adapter named "default" lands at the folder's root
        write_manifest(tmp, base, m, sources, bake=bake, options=options, result=file_hashes(tmp), at=target.path)
    return Path(out)


def write_manifest(out: Path, base: BaseRef, method: Method, sources, bake: bool, options: dict,
                   result: Optional[dict] = None, at: Optional[Path] = None) -> Path:
    """Write ``out/composition.yaml``; module paths are relative to ``at`` (default ``out``): the folder
    the manifest will be read from, when ``out`` is a temporary sibling renamed there later, so the
    composition and its modules can move as a whole. A local base is recorded absolute (the sources
    resolved it): it usually stays where it is (a models folder) while compositions move. Either way
    the manifest means the same files from any working directory."""
    out = Path(out)
    home = Path(at if at is not None else out).resolve()
    modules = []
    for s in sources:
        path = os.path.relpath(Path(s.adapter_dir).resolve(), home)
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
    """The manifest at ``path`` (a composition folder or its ``composition.yaml``), checked: every key
    ``load`` reads is there with the right type. A bad one is a :class:`ComposeError` naming the file,
    the key and the fix, never a ``KeyError``/``TypeError``."""
    p = Path(path)
    if p.is_dir():
        p = p / MANIFEST
    try:
        doc = yaml.safe_load(p.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ComposeError(f"{p}: not valid YAML ({exc})") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ComposeError(f"{p}: cannot read it ({getattr(exc, 'strerror', None) or exc})") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise ComposeError(f"{p}: not a composition manifest (expected format: {FORMAT})")
    for key in ("method", "kind", "base", "modules"):
        if key not in doc:
            raise ComposeError(f"{p}: key {key!r} is missing; re-create it with neurosym compose")
    _check_manifest(p, doc)
    return p, doc


_BASE_KEYS = {"name_or_path": (str,), "revision": (str, type(None)), "quantization": (str,), "dtype": (str,),
              "trust_remote_code": (bool,)}
_BASE_CHOICES = {"quantization": ("none", "4bit"), "dtype": ("auto", "float32", "bfloat16", "float16")}
_REMAKE = "re-create it with neurosym compose"


def _check_manifest(p: Path, doc: dict) -> None:
    def bad(key: str, why: str):
        raise ComposeError(f"{p}: {key}: {why}; fix it, or {_REMAKE}")

    if not isinstance(doc["method"], str):
        bad("method", f"must be a method name, got {doc['method']!r}")
    get_method(doc["method"])
    if doc["kind"] not in ("lora", "ia3"):
        bad("kind", f"must be lora or ia3, got {doc['kind']!r}")
    base = doc["base"]
    if not isinstance(base, dict):
        bad("base", f"must be a mapping of {', '.join(_BASE_KEYS)}, got {type(base).__name__}")
    unknown = sorted(set(map(str, base)) - set(_BASE_KEYS))
    if unknown:
        bad(f"base.{unknown[0]}", f"unknown key (a composition's base takes {', '.join(_BASE_KEYS)}); remove it")
    if "name_or_path" not in base:
        bad("base.name_or_path", "missing (the base model's hub id or folder)")
    for key, types in _BASE_KEYS.items():
        if key in base and not isinstance(base[key], types):
            bad(f"base.{key}", f"must be {' or '.join('null' if t is type(None) else t.__name__ for t in types)}, "
                               f"got {base[key]!r}")
    for key, choices in _BASE_CHOICES.items():
        if key in base and base[key] not in choices:
            bad(f"base.{key}", f"must be one of {', '.join(choices)}, got {base[key]!r}")
    if not base["name_or_path"].strip():
        bad("base.name_or_path", "is empty")
    modules = doc["modules"]
    if not isinstance(modules, list) or not modules:
        bad("modules", "must be a non-empty list of modules (name, path, weight, sha256)")
    for i, mod in enumerate(modules):
        if not isinstance(mod, dict):
            bad(f"modules[{i}]", f"must be a mapping (name, path, weight, sha256), got {type(mod).__name__}")
        for key, types in (("name", (str,)), ("path", (str,)), ("weight", (int, float)), ("sha256", (dict,))):
            if key not in mod:
                bad(f"modules[{i}].{key}", "missing")
            if not isinstance(mod[key], types) or isinstance(mod[key], bool):
                bad(f"modules[{i}].{key}", f"must be {' or '.join(t.__name__ for t in types)}, got {mod[key]!r}")
    if "result" in doc and not (isinstance(doc["result"], dict) and isinstance(doc["result"].get("sha256"), dict)):
        bad("result", "must be a mapping with sha256 (the hashes of the baked adapter's files)")
    if not isinstance(doc.get("options") or {}, dict):
        bad("options", "must be a mapping (density, svd_rank, seed)")


def manifest_base(p: Path, doc: dict) -> BaseRef:
    """The base a checked manifest names. ``compose`` records a local base absolute; a relative one (an
    edited manifest) is read relative to the manifest's folder, never the working directory: a folder
    there wins over a hub id of the same spelling, as in a config, and a hub id stays a hub id."""
    from neurosym.config.schema import resolve_model_path

    fields = dict(doc["base"])
    fields["name_or_path"], _ = resolve_model_path(fields["name_or_path"], p.parent.resolve())
    return BaseRef(**fields)


def _verify(where: Path, hashes: dict, label: str) -> None:
    if not (where / ADAPTER_CONFIG).exists():
        raise ComposeError(f"{label}: {where} has no {ADAPTER_CONFIG} (moved or deleted?); "
                           f"fix the path in the manifest or re-run neurosym compose")
    now = file_hashes(where)
    for fname, want in hashes.items():
        if now.get(fname) != want:
            raise ComposeError(f"{label}: {where / fname} changed since the composition was made (sha256 "
                               f"{str(now.get(fname, 'missing'))[:12]}… ≠ {str(want)[:12]}…); re-run neurosym "
                               f"compose with the module you mean")


def manifest_sources(path) -> tuple[Path, dict, list[AdapterSource]]:
    """The manifest's modules, each checked against its recorded hashes."""
    p, doc = read_manifest(path)
    root = p.parent
    base = manifest_base(p, doc)
    sources = []
    for mod in doc["modules"]:
        where = (root / mod["path"]).resolve()
        if "result" not in doc:
            _verify(where, mod["sha256"], f"{p} module {mod['name']}")
        src = AdapterSource(name=mod["name"], given=str(mod.get("source", mod["path"])), adapter_dir=where,
                            config={"peft_type": doc["kind"].upper()}, base=base,
                            weight=float(mod["weight"]), hashes=mod["sha256"])
        sources.append(src)
    return p, doc, sources


# ------------------------------------------------------------------------------------------ load

def load(path: str | os.PathLike, device=None, quantization: Optional[str] = None, trust_remote_code: bool = False):
    """(model, tokenizer) ready for generation, from a composition folder or manifest, a run directory,
    a checkpoint, a PEFT adapter folder, or a plain model (local folder, hub id, tiny://preset).

    ``trust_remote_code``: allow the base model's own Python code to run. A manifest or a run's config
    that asks for it (``trust_remote_code: true``) is refused without it; a plain model gets it as given.
    """
    p = Path(path)
    if p.is_file() and p.name.endswith((".yaml", ".yml")) or (p.is_dir() and (p / MANIFEST).exists()):
        return _load_manifest(p, device, quantization, trust_remote_code)
    if p.is_dir() and ((p / ADAPTER_CONFIG).exists() or (p / "checkpoints").is_dir()):
        src = resolve("module", str(p))
        check_trust(src.base, trust_remote_code, f"{src.run_dir}/config.yaml (model.trust_remote_code)")
        model, tok = _base_model(src.base, device, quantization)
        from neurosym.model.load import peft_from_pretrained
        return peft_from_pretrained(model, src.adapter_dir).eval(), tok
    return _base_model(BaseRef(str(path), trust_remote_code=trust_remote_code), device, quantization)


def _load_manifest(path: Path, device, quantization, trust_remote_code: bool = False):
    from neurosym.model.load import peft_from_pretrained

    p, doc, sources = manifest_sources(path)
    base = manifest_base(p, doc)
    check_trust(base, trust_remote_code, f"{p} (base.trust_remote_code)")
    model, tok = _base_model(base, device, quantization)
    if "result" in doc:      # weight method or baked: one ordinary adapter at the folder's root
        _verify(p.parent, doc["result"]["sha256"], f"{p} result")
        return peft_from_pretrained(model, p.parent).eval(), tok
    method = get_method(doc["method"])
    model = lora.attach(model, sources)
    opts = doc.get("options") or {}
    apply(model, sources, method, [s.weight for s in sources], bake=False,
          density=opts.get("density"), svd_rank=opts.get("svd_rank"))
    return model, tok

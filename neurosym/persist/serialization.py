"""Saving nested state (optimizer state dicts, RNG states) as safetensors + JSON: no pickle anywhere.

A nested structure of dicts/lists/scalars/tensors becomes a JSON tree in which every tensor is
replaced by ``{"__tensor__": "<key>"}`` and stored in a safetensors file under that key. Dicts
with non-string keys (optimizer ``state`` is keyed by int) are stored as ``{"__items__": [[k, v], ...]}``.
Loading never executes code.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from neurosym.persist.atomic import atomic_write_bytes, atomic_write_text


def _flatten(obj, tensors: dict, prefix: str):
    if isinstance(obj, torch.Tensor):
        key = prefix or "t"
        tensors[key] = obj.detach().cpu().contiguous()
        return {"__tensor__": key}
    if isinstance(obj, dict):
        if all(isinstance(k, str) for k in obj):
            return {k: _flatten(v, tensors, f"{prefix}.{k}") for k, v in obj.items()}
        return {"__items__": [[k, _flatten(v, tensors, f"{prefix}.{k}")] for k, v in obj.items()]}
    if isinstance(obj, (list, tuple)):
        out = [_flatten(v, tensors, f"{prefix}.{i}") for i, v in enumerate(obj)]
        return {"__tuple__": out} if isinstance(obj, tuple) else out
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    raise TypeError(f"cannot serialise {type(obj).__name__} at {prefix or '<root>'} without pickle")


def _unflatten(obj, tensors: dict):
    if isinstance(obj, dict):
        if "__tensor__" in obj:
            return tensors[obj["__tensor__"]]
        if "__items__" in obj:
            return {k: _unflatten(v, tensors) for k, v in obj["__items__"]}
        if "__tuple__" in obj:
            return tuple(_unflatten(v, tensors) for v in obj["__tuple__"])
        return {k: _unflatten(v, tensors) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_unflatten(v, tensors) for v in obj]
    return obj


def save_tree(obj, path_stem: Path) -> None:
    """Write ``<stem>.json`` and ``<stem>.safetensors``."""
    tensors: dict = {}
    tree = _flatten(obj, tensors, "")
    atomic_write_text(path_stem.with_suffix(".json"), json.dumps(tree))
    tmp = path_stem.with_suffix(".safetensors.tmp")
    save_file(tensors, str(tmp))
    atomic_write_bytes(path_stem.with_suffix(".safetensors"), tmp.read_bytes())
    tmp.unlink()


def load_tree(path_stem: Path, device: str | torch.device = "cpu"):
    tree = json.loads(path_stem.with_suffix(".json").read_text())
    st = path_stem.with_suffix(".safetensors")
    tensors = load_file(str(st), device=str(device)) if st.exists() else {}
    return _unflatten(tree, tensors)

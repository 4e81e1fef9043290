"""Atomic checkpoints: ``checkpoints/step-N/`` appears complete or not at all.

Layout of one checkpoint::

    adapter_model.safetensors, adapter_config.json   PEFT format (PeftModel.from_pretrained loads it)
    optimizer.{json,safetensors}  scheduler.json      no pickle
    rng.{json,safetensors}                            python, numpy, torch, cuda
    state.json                                        the TrainState, whole
    COMPLETE                                          written last; resume ignores a folder without it

It is written into ``checkpoints/.tmp-step-N`` and renamed into place, so a crash at any moment
leaves either the previous checkpoints or the new one, never a half-written folder that resume picks.
"""
from __future__ import annotations

import json
import logging
import os
import re
import shutil
from pathlib import Path
from typing import Optional

from neurosym.io import _fsync_dir, atomic_write_json, atomic_write_text
from neurosym.rng import rng_state, set_rng_state
from neurosym.serialization import load_tree, save_tree
from neurosym.state import TrainState

log = logging.getLogger(__name__)
MARKER = "COMPLETE"
_STEP = re.compile(r"^step-(\d+)$")


def checkpoints_dir(run_dir: Path) -> Path:
    return Path(run_dir) / "checkpoints"


def complete_checkpoints(run_dir: Path) -> list[Path]:
    """Complete checkpoints, oldest first."""
    root = checkpoints_dir(run_dir)
    if not root.exists():
        return []
    found = []
    for d in root.iterdir():
        m = _STEP.match(d.name)
        if m and (d / MARKER).exists():
            found.append((int(m.group(1)), d))
    return [d for _, d in sorted(found)]


def latest_checkpoint(run_dir: Path) -> Optional[Path]:
    found = complete_checkpoints(run_dir)
    return found[-1] if found else None


def find_checkpoint(run_dir: Path, name: Optional[str]) -> Path:
    if name is None:
        ckpt = latest_checkpoint(run_dir)
        if ckpt is None:
            raise FileNotFoundError(f"{run_dir}: no complete checkpoint under {checkpoints_dir(run_dir)}")
        return ckpt
    ckpt = checkpoints_dir(run_dir) / name
    if not (ckpt / MARKER).exists():
        have = ", ".join(d.name for d in complete_checkpoints(run_dir)) or "none"
        raise FileNotFoundError(f"{ckpt}: not a complete checkpoint (complete ones: {have})")
    return ckpt


def save_checkpoint(run_dir: Path, model, optimizer, scheduler, state: TrainState, keep_last_n: int) -> Path:
    root = checkpoints_dir(run_dir)
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"step-{state.step}"
    tmp = root / f".tmp-step-{state.step}-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    model.save_pretrained(str(tmp))
    save_tree(optimizer.state_dict(), tmp / "optimizer")
    atomic_write_json(tmp / "scheduler.json", scheduler.state_dict())
    save_tree(rng_state(), tmp / "rng")
    state.save(tmp / "state.json")
    atomic_write_text(tmp / MARKER, f"step {state.step}\n")
    _fsync_dir(tmp)
    if final.exists():  # re-saving the same step (e.g. Ctrl-C right after a periodic save)
        old = root / f".old-step-{state.step}-{os.getpid()}"
        os.replace(final, old)
        os.replace(tmp, final)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, final)
    _fsync_dir(root)
    _prune(run_dir, keep_last_n)
    return final


def _prune(run_dir: Path, keep_last_n: int) -> None:
    for old in complete_checkpoints(run_dir)[:-keep_last_n]:
        shutil.rmtree(old, ignore_errors=True)
    for junk in checkpoints_dir(run_dir).glob(".tmp-step-*"):
        if not junk.name.endswith(f"-{os.getpid()}"):
            shutil.rmtree(junk, ignore_errors=True)  # left by a crashed save


def load_adapter_weights(model, ckpt: Path) -> None:
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file

    weights = load_file(str(ckpt / "adapter_model.safetensors"), device=str(next(model.parameters()).device))
    result = set_peft_model_state_dict(model, weights)
    missing = [k for k in getattr(result, "unexpected_keys", [])]
    if missing:
        raise RuntimeError(f"{ckpt}: adapter has keys the model does not: {missing[:3]}...")


def restore_checkpoint(ckpt: Path, model, optimizer, scheduler) -> TrainState:
    """Load everything back; the caller checks the result against state.json."""
    load_adapter_weights(model, ckpt)
    # On CPU: load_state_dict moves each state tensor to its parameter's device (keeps `step` on CPU).
    optimizer.load_state_dict(load_tree(ckpt / "optimizer"))
    scheduler.load_state_dict(json.loads((ckpt / "scheduler.json").read_text()))
    set_rng_state(load_tree(ckpt / "rng"))
    return TrainState.load(ckpt / "state.json")

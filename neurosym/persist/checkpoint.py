"""Atomic, verified checkpoints: ``checkpoints/step-N/`` appears complete or not at all.

Layout of one checkpoint::

    adapter_model.safetensors, adapter_config.json   PEFT format (PeftModel.from_pretrained loads it)
    README.md, system_prompt.txt                     PEFT model card stating the learned system prompt; the prompt
    optimizer.{json,safetensors}                     no pickle
    rng.{json,safetensors}                           python, numpy, torch, cuda
    state.json                                       the TrainState, whole (counters + every component)
    COMPLETE                                         written last; resume ignores a folder without it

It is written into ``checkpoints/.tmp-step-N-<pid>`` and renamed into place, so a crash at any
moment leaves either the previous checkpoints or the new one. Before a resume uses a checkpoint,
every file is read and parsed (:func:`read_checkpoint`); a damaged one is skipped, with a message,
for the newest intact one.
"""
from __future__ import annotations

import json
import logging
import os
import re
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from neurosym.persist.atomic import _fsync_dir, atomic_write_text
from neurosym.persist.rng import rng_state, set_rng_state
from neurosym.persist.serialization import load_tree, save_tree
from neurosym.persist.state import TrainState

log = logging.getLogger(__name__)
MARKER = "COMPLETE"
_STEP = re.compile(r"^step-(\d+)$")
FILES = ("adapter_model.safetensors", "adapter_config.json", "optimizer.json", "optimizer.safetensors",
         "rng.json", "rng.safetensors", "state.json", MARKER)


class CheckpointDamaged(RuntimeError):
    pass


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


def save_checkpoint(run_dir: Path, model, optimizer, state: TrainState, keep_last_n: int,
                    model_card: str = "", system_prompt: Optional[str] = None) -> Path:
    root = checkpoints_dir(run_dir)
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"step-{state.step}"
    tmp = root / f".tmp-step-{state.step}-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)  # our own leftover (same pid)
    tmp.mkdir()
    model.save_pretrained(str(tmp))
    if model_card:
        atomic_write_text(tmp / "README.md", model_card)
    if system_prompt:
        atomic_write_text(tmp / "system_prompt.txt", system_prompt)
    save_tree(optimizer.state_dict(), tmp / "optimizer")
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
            shutil.rmtree(junk, ignore_errors=True)  # left by a crashed save of ours


@dataclass
class LoadedCheckpoint:
    path: Path
    adapter: dict
    optimizer: dict
    rng: dict
    state: TrainState


def read_checkpoint(ckpt: Path, device: str = "cpu") -> LoadedCheckpoint:
    """Read and parse every file of a checkpoint; :class:`CheckpointDamaged` says what is wrong."""
    from safetensors.torch import load_file

    missing = [f for f in FILES if not (ckpt / f).is_file()]
    if missing:
        raise CheckpointDamaged(f"{ckpt}: missing {', '.join(missing)}")
    try:
        json.loads((ckpt / "adapter_config.json").read_text())
        adapter = load_file(str(ckpt / "adapter_model.safetensors"), device=device)
        optimizer = load_tree(ckpt / "optimizer")
        rng = load_tree(ckpt / "rng")
        state = TrainState.load(ckpt / "state.json")
    except Exception as exc:  # any parse error of any file: this checkpoint is unusable
        raise CheckpointDamaged(f"{ckpt}: {type(exc).__name__}: {str(exc)[:200]}") from None
    if not isinstance(state.step, int) or ckpt.name != f"step-{state.step}":
        raise CheckpointDamaged(f"{ckpt}: state.json says step {state.step!r}")
    return LoadedCheckpoint(ckpt, adapter, optimizer, rng, state)


def newest_intact_checkpoint(run_dir: Path, device: str = "cpu") -> Optional[LoadedCheckpoint]:
    """The newest checkpoint that reads back whole; each damaged newer one is reported and skipped."""
    for ckpt in reversed(complete_checkpoints(run_dir)):
        try:
            return read_checkpoint(ckpt, device)
        except CheckpointDamaged as exc:
            print(f"warning: skipping damaged checkpoint {exc}", file=sys.stderr)
    return None


def apply_checkpoint(loaded: LoadedCheckpoint, model, optimizer) -> None:
    """Put a read checkpoint's adapter weights, optimizer state and RNG states in place."""
    from peft import set_peft_model_state_dict

    result = set_peft_model_state_dict(model, loaded.adapter)
    unexpected = list(getattr(result, "unexpected_keys", []))
    if unexpected:
        raise CheckpointDamaged(f"{loaded.path}: adapter has keys the model does not: {unexpected[:3]}")
    # On CPU: load_state_dict moves each state tensor to its parameter's device (keeps `step` on CPU).
    optimizer.load_state_dict(loaded.optimizer)
    set_rng_state(loaded.rng)

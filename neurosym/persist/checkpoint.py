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

import errno
import json
import logging
import os
import re
import shutil
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Optional

from neurosym.errors import CheckpointSaveFailed
from neurosym.persist.atomic import _fsync_dir, atomic_write_text
from neurosym.persist.state import TrainState

# rng and serialization import torch: the functions that write or read tensors import them, so
# listing a run's checkpoints (`neurosym prompts`, `report`) loads no torch

log = logging.getLogger(__name__)
MARKER = "COMPLETE"
STATE_FILE = "state.json"  # the run's counters and components (neurosym.persist.state.TrainState)
_STEP = re.compile(r"^step-(\d+)$")
FILES = ("adapter_model.safetensors", "adapter_config.json", "optimizer.json", "optimizer.safetensors",
         "rng.json", "rng.safetensors", STATE_FILE, MARKER)


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
    """Write ``checkpoints/step-N`` (N = ``state.step``) and prune to ``keep_last_n``.

    A save of a step whose complete checkpoint already holds exactly this state (counters and
    components, RNG, adapter weights, model card and prompt) writes nothing: the end of a run saves
    the step ``save_every`` just saved, and a stop right after a periodic save does too. A save that
    cannot be written (disk full, a read-only disk) removes its partial folder, keeps every earlier
    checkpoint and raises :class:`CheckpointSaveFailed`, which names the step, the last good
    checkpoint and how to resume."""
    from neurosym.persist.rng import rng_state
    from neurosym.persist.serialization import save_tree
    root = checkpoints_dir(run_dir)
    final = root / f"step-{state.step}"
    tmp = root / f".tmp-step-{state.step}-{os.getpid()}"
    try:
        root.mkdir(parents=True, exist_ok=True)
        if (final / MARKER).exists() and _holds(final, model, state, model_card, system_prompt):
            _prune(run_dir, keep_last_n)
            return final
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
        state.save(tmp / STATE_FILE)
        atomic_write_text(tmp / MARKER, f"step {state.step}\n")
        _fsync_dir(tmp)
    except Exception as exc:
        shutil.rmtree(tmp, ignore_errors=True)  # the partial folder of this save, nothing else
        if _is_write_error(exc):
            raise CheckpointSaveFailed(_save_failed_message(run_dir, state.step, exc)) from exc
        raise
    if final.exists():  # re-saving the same step (e.g. Ctrl-C right after a periodic save, a prompt landed)
        old = root / f".old-step-{state.step}-{os.getpid()}"
        if old.exists():
            shutil.rmtree(old)
        os.replace(final, old)
        os.replace(tmp, final)
        _fsync_dir(root)
        shutil.rmtree(old, ignore_errors=True)  # the replacement is complete; a leftover goes at the next save
    else:
        os.replace(tmp, final)
        _fsync_dir(root)
    _prune(run_dir, keep_last_n)
    return final


# ---------------------------------------------------------------------------------- a save that fails

_WRITE_ERROR = re.compile(r"IoError|No space left|Disk quota|Read-only file system|os error", re.I)


def _is_write_error(exc: BaseException) -> bool:
    """An error of the disk rather than of the program: an ``OSError`` (ENOSPC, EDQUOT, EROFS, EIO...)
    or the ``SafetensorError`` safetensors raises for one (``IoError(Os { code: 28, ... })``)."""
    if isinstance(exc, OSError):
        return True
    return type(exc).__name__ == "SafetensorError" and bool(_WRITE_ERROR.search(str(exc)))


def _why(exc: BaseException) -> str:
    code = getattr(exc, "errno", None)
    if code is None:
        m = re.search(r"code:\s*(\d+)", str(exc))
        code = int(m.group(1)) if m else None
    what = {errno.ENOSPC: "no space left on the device", errno.EDQUOT: "the disk quota is exceeded",
            errno.EROFS: "the file system is read-only"}.get(code, "a write failed")
    return f"{what} ({type(exc).__name__}: {str(exc)[:300]})"


def _save_failed_message(run_dir: Path, step: int, exc: BaseException) -> str:
    good = complete_checkpoints(run_dir)
    last = (f"the last good checkpoint is {good[-1]} (step {int(_STEP.match(good[-1].name).group(1))})"
            if good else "there is no checkpoint yet, so a resume starts from step 0")
    return (f"could not save the checkpoint of step {step} in {checkpoints_dir(run_dir)}: {_why(exc)}. "
            f"Its partial folder was removed and earlier checkpoints are intact: {last}. Free space on "
            f"that disk (or move the run directory to another one: a moved run resumes where it is), then "
            f"continue with: neurosym resume {run_dir}")


# ---------------------------------------------------------------------------------- an unchanged step

def _holds(ckpt: Path, model, state: TrainState, model_card: str, system_prompt: Optional[str]) -> bool:
    """Whether the complete checkpoint ``ckpt`` already holds this state. The optimizer is not read:
    it changes only with a LoRA step, which changes the step, the weights and the counters."""
    from neurosym.persist.rng import rng_state
    from neurosym.persist.serialization import load_tree
    from safetensors.torch import load_file
    try:
        if json.loads((ckpt / STATE_FILE).read_text()) != json.loads(json.dumps(asdict(state))):
            return False
        for name, text in (("README.md", model_card), ("system_prompt.txt", system_prompt)):
            f = ckpt / name
            if (f.read_text() if f.exists() else "") != (text or ""):
                return False
        if not _same(load_tree(ckpt / "rng"), rng_state()):
            return False
        return _same(load_file(str(ckpt / "adapter_model.safetensors")), _adapter_tensors(model))
    except Exception:  # noqa: BLE001 - unreadable or unlike: write it again
        return False


def _adapter_tensors(model) -> dict:
    from peft import get_peft_model_state_dict
    return get_peft_model_state_dict(model)


def _same(a, b) -> bool:
    import torch
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        return (isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor) and a.shape == b.shape
                and a.dtype == b.dtype and torch.equal(a.detach().cpu(), b.detach().cpu()))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    return a == b


# ---------------------------------------------------------------------------------- leftovers

_LEFTOVER = re.compile(r"^\.(tmp|old)-step-(\d+)-(\d+)$")  # the names save_checkpoint gives its folders


def _leftovers(root: Path) -> list[tuple[str, int, int, Path]]:
    if not root.is_dir():
        return []
    found = []
    for d in root.iterdir():
        m = _LEFTOVER.match(d.name)
        if m and d.is_dir():
            found.append((m.group(1), int(m.group(2)), int(m.group(3)), d))
    return found


def _prune(run_dir: Path, keep_last_n: int) -> None:
    for old in complete_checkpoints(run_dir)[:-keep_last_n]:
        shutil.rmtree(old, ignore_errors=True)
    root = checkpoints_dir(run_dir)
    for kind, step, pid, d in _leftovers(root):
        if kind == "tmp" and pid != os.getpid():
            shutil.rmtree(d, ignore_errors=True)  # left by a crashed save
        elif kind == "old" and (root / f"step-{step}" / MARKER).exists():
            shutil.rmtree(d, ignore_errors=True)  # its replacement is complete


def recover_interrupted_saves(run_dir: Path) -> list[str]:
    """Finish what a save killed mid-way left behind (call it holding the run directory's lock, before
    a resume reads the checkpoints). A re-save of step N renames ``step-N`` to ``.old-step-N-<pid>``
    and the complete new folder into place: killed between the two renames, ``step-N`` is missing and
    its previous copy is the ``.old`` folder, which is put back; killed after them, the ``.old`` copy
    is removed. A ``.tmp`` folder was never published and is removed. Returns what was restored."""
    root = checkpoints_dir(run_dir)
    done = []
    for kind, step, _, d in sorted(_leftovers(root), key=lambda x: x[0] != "old"):  # .old first
        final = root / f"step-{step}"
        if kind == "old" and not final.exists() and (d / MARKER).exists():
            os.replace(d, final)
            done.append(f"restored {final} from {d.name} (a save was killed while replacing it)")
        else:
            shutil.rmtree(d, ignore_errors=True)
    if done:
        _fsync_dir(root)
    return done


@dataclass
class LoadedCheckpoint:
    path: Path
    adapter: dict
    optimizer: dict
    rng: dict
    state: TrainState


def read_checkpoint(ckpt: Path, device: str = "cpu") -> LoadedCheckpoint:
    """Read and parse every file of a checkpoint; :class:`CheckpointDamaged` says what is wrong."""
    from neurosym.persist.serialization import load_tree
    from safetensors.torch import load_file

    missing = [f for f in FILES if not (ckpt / f).is_file()]
    if missing:
        raise CheckpointDamaged(f"{ckpt}: missing {', '.join(missing)}")
    try:
        json.loads((ckpt / "adapter_config.json").read_text())
        adapter = load_file(str(ckpt / "adapter_model.safetensors"), device=device)
        optimizer = load_tree(ckpt / "optimizer")
        rng = load_tree(ckpt / "rng")
        state = TrainState.load(ckpt / STATE_FILE)
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
    from neurosym.persist.rng import set_rng_state
    from peft import set_peft_model_state_dict

    result = set_peft_model_state_dict(model, loaded.adapter)
    unexpected = list(getattr(result, "unexpected_keys", []))
    if unexpected:
        raise CheckpointDamaged(f"{loaded.path}: adapter has keys the model does not: {unexpected[:3]}")
    # On CPU: load_state_dict moves each state tensor to its parameter's device (keeps `step` on CPU).
    optimizer.load_state_dict(loaded.optimizer)
    set_rng_state(loaded.rng)

"""The system prompt a loadable model was trained under: what ``neurosym generate`` renders its chat with.

``trained_prompt(path)`` reads small files only (no model), for everything :func:`neurosym.compose.load`
loads:

- a run directory: the prompt current in its newest complete checkpoint (the one ``load`` takes), which
  is the prompt its adapter was trained under (:func:`neurosym.observe.prompt_history.learned_prompt`);
- a checkpoint ``RUN/checkpoints/step-N``: the prompt current in that checkpoint;
- an adapter or checkpoint folder copied out of its run, or a merged model (``neurosym merge``): its
  ``system_prompt.txt``. A merged model's chat template also defaults to that prompt, so a conversation
  without a system message renders the same either way;
- a composition (``neurosym compose``): the prompt its modules were trained under when they agree (modules
  without one are left out; the base's ``system_prompt.txt`` when no module has one); modules trained
  under different prompts give none, and the note names them;
- anything else (a hub id, ``tiny://``, a plain model folder): none (the chat template's own default
  system message, if it has one, still applies).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from neurosym.persist.rundir import RunDir

SYSTEM_PROMPT_FILE = "system_prompt.txt"


@dataclass(frozen=True)
class TrainedPrompt:
    """``text``: the system prompt (None: no system prompt); ``source``: where it was found, in words."""
    text: Optional[str]
    source: str


def _read_text(path: Path) -> Optional[str]:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return None
    return text if text.strip() else None


def _folder_prompt(folder: Path) -> Optional[TrainedPrompt]:
    """The prompt of a run, a checkpoint, or a folder carrying ``system_prompt.txt``; None when the folder
    says nothing about one."""
    from neurosym.observe.prompt_history import learned_prompt
    from neurosym.persist.checkpoint import latest_checkpoint

    run = RunDir(folder)
    if run.config.is_file() and run.checkpoints.is_dir():
        ckpt = latest_checkpoint(folder)
        where = f"checkpoint {ckpt.name}" if ckpt is not None else "no checkpoint yet"
        return TrainedPrompt(learned_prompt(folder, ckpt), f"learned by the run {folder} ({where})")
    owner = RunDir.of_checkpoint(folder)
    if owner is not None:
        return TrainedPrompt(learned_prompt(owner.path, folder), f"learned by the run {owner.path} "
                                                                 f"(checkpoint {folder.name})")
    text = _read_text(folder / SYSTEM_PROMPT_FILE)
    if text is not None:
        return TrainedPrompt(text, f"{folder / SYSTEM_PROMPT_FILE}")
    return None


def _composition_prompt(path: Path) -> TrainedPrompt:
    from neurosym.compose.core import manifest_base, read_manifest

    manifest, doc = read_manifest(path)
    found: dict[str, TrainedPrompt] = {}
    for mod in doc["modules"]:
        where = (manifest.parent / mod["path"]).resolve()
        got = _folder_prompt(where) if where.is_dir() else None
        if got is not None and got.text is not None:
            found[mod["name"]] = got
    texts = {p.text for p in found.values()}
    if len(texts) == 1:
        return TrainedPrompt(texts.pop(), f"the modules' ({', '.join(found)}) of {manifest}")
    if len(texts) > 1:
        listed = "; ".join(f"{name}: {p.text[:40]!r}" for name, p in found.items())
        return TrainedPrompt(None, f"none: the modules of {manifest} were trained under different system "
                                   f"prompts ({listed}); choose one with --system")
    base = manifest_base(manifest, doc).name_or_path
    text = _read_text(Path(base) / SYSTEM_PROMPT_FILE) if Path(base).is_absolute() else None  # a local folder
    if text is not None:
        return TrainedPrompt(text, f"{Path(base) / SYSTEM_PROMPT_FILE} (the base of {manifest})")
    return TrainedPrompt(None, f"none (no module of {manifest} and not its base carries one)")


def trained_prompt(path: str | os.PathLike, adapter: str | os.PathLike | None = None) -> TrainedPrompt:
    """The system prompt the model at ``path`` (as :func:`neurosym.compose.load` takes it; ``adapter``:
    one more adapter on top, whose prompt wins) was trained under."""
    from neurosym.compose.core import MANIFEST

    if adapter is not None:
        got = _folder_prompt(Path(adapter)) if Path(adapter).is_dir() else None
        if got is not None and got.text is not None:
            return got
    p = Path(path)
    if (p.is_file() and p.name.endswith((".yaml", ".yml"))) or (p.is_dir() and (p / MANIFEST).exists()):
        return _composition_prompt(p)
    if p.is_dir():
        got = _folder_prompt(p)
        if got is not None:
            return got
    return TrainedPrompt(None, "none (the model carries no learned system prompt)")


__all__ = ["trained_prompt", "TrainedPrompt", "SYSTEM_PROMPT_FILE"]

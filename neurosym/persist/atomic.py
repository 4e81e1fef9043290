"""Crash-safe file writes: write to a temp file in the same folder, fsync, rename over the target."""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    _fsync_dir(path.parent)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def atomic_write_json(path: str | os.PathLike, obj) -> None:
    atomic_write_text(path, json.dumps(obj, indent=1, sort_keys=True) + "\n")


# ------------------------------------------------------------------------------- folders built once

def remove_temporary(path: Path) -> None:
    """Remove a temporary file or folder this program created (a link is removed, never followed)."""
    import shutil
    if path.is_symlink() or path.is_file():
        path.unlink(missing_ok=True)
    elif path.exists():
        shutil.rmtree(path, ignore_errors=True)


def build_folder_once(target: str | os.PathLike, build, is_complete) -> Path:
    """The folder ``target``, built by ``build(tmp)`` at most once however many processes ask at once.

    A cache folder (the ``tiny://`` models under ``<output_dir>/.models``, the temporary cache of
    ``compose``/``generate``) is read by every process that needs it and built by the first one:

    - ``is_complete(folder)`` decides whether a folder is usable; it must check the files themselves
      (config, weights), not only a marker, so a folder left half-built by an older version or a
      killed builder is rebuilt rather than trusted.
    - The build runs under an exclusive ``flock`` on ``.NAME.lock`` beside the target (released by the
      kernel when its holder dies, however it dies); a process that waited on it finds the folder
      complete and returns it without building.
    - ``build`` writes into a fresh temporary sibling (``.NAME.neurosym-tmp-*``) that is renamed onto
      ``target`` only when complete (``build`` should write its own marker last): no process ever sees
      a partial folder at ``target``. An incomplete folder already there is moved aside and deleted;
      temporaries of killed builders are deleted under the lock.
    """
    import fcntl
    import uuid

    target = Path(target)
    if is_complete(target):
        return target
    parent = target.parent
    parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(parent / f".{target.name}.lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        if is_complete(target):  # built by the process we waited for
            return target
        tag = f".{target.name}.neurosym-tmp-"
        for stale in parent.glob(f"{tag}*"):  # only the lock holder builds: these are a dead builder's
            remove_temporary(stale)
        tmp = parent / f"{tag}{uuid.uuid4().hex[:8]}"
        tmp.mkdir()
        try:
            build(tmp)
            if not is_complete(tmp):
                raise RuntimeError(f"building {target} wrote an incomplete folder")
            if target.exists() or target.is_symlink():  # incomplete (checked above): replace it
                old = parent / f"{tag}old-{uuid.uuid4().hex[:8]}"
                os.rename(target, old)
                remove_temporary(old)
            os.rename(tmp, target)
        except BaseException:
            remove_temporary(tmp)
            raise
        _fsync_dir(parent)
        return target
    finally:
        os.close(fd)  # releases the lock

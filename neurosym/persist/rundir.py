"""The run directory: the one place that knows its files, and its lock.

    runs/<name>/config.yaml        resolved config, secrets redacted (written once a start/resume is accepted)
    runs/<name>/events.jsonl       one record per step (and per eval, per prompt version)
    runs/<name>/remake.sqlite      refined examples with provenance
    runs/<name>/teacher/           response cache, TextGrad log
    runs/<name>/checkpoints/step-N/
    runs/<name>/wandb/, wandb_run_id
    runs/<name>/tensorboard/, mlflow.db, mlartifacts/, mlflow_run_id   (tracking.backends)
    runs/<name>/eval/              neurosym eval's per-row generations and scores
    runs/<name>/.lock              held (flock) by the process training in it

Whoever takes the lock first settles what a save killed mid-way left in ``checkpoints/``.

The lock is an advisory ``flock``: the kernel releases it when its holder dies, however it dies, so
a stale lock of a killed process is taken over without any clean-up; a live holder is named by pid.
"""
from __future__ import annotations

import errno
import fcntl
import os
import sys
from pathlib import Path
from typing import Optional

from neurosym.errors import RunDirError


class RunDir:
    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self._lock_fd: Optional[int] = None

    # ---- the files
    config = property(lambda self: self.path / "config.yaml")
    events = property(lambda self: self.path / "events.jsonl")
    remake = property(lambda self: self.path / "remake.sqlite")
    teacher = property(lambda self: self.path / "teacher")
    checkpoints = property(lambda self: self.path / "checkpoints")
    wandb_id = property(lambda self: self.path / "wandb_run_id")
    mlflow_id = property(lambda self: self.path / "mlflow_run_id")
    mlflow_db = property(lambda self: self.path / "mlflow.db")
    mlflow_artifacts = property(lambda self: self.path / "mlartifacts")
    tensorboard = property(lambda self: self.path / "tensorboard")
    evals = property(lambda self: self.path / "eval")  # neurosym eval's per-row files
    lock_file = property(lambda self: self.path / ".lock")
    models_cache = property(lambda self: self.path.parent / ".models")

    def has_run(self) -> bool:
        """A run was started here (events exist), finished or not."""
        return self.events.exists()

    def looks_like_run(self) -> bool:
        """A folder that holds a neurosym run: its config and events, checkpoints or remake store."""
        try:
            return self.config.is_file() and any(p.exists() for p in (self.events, self.checkpoints, self.remake))
        except OSError:
            return False

    @staticmethod
    def of_checkpoint(path: str | os.PathLike) -> Optional["RunDir"]:
        """The run directory a checkpoint folder (``RUN/checkpoints/step-N``) belongs to, if it is one."""
        path = Path(path)
        run = RunDir(path.parent.parent)
        return run if path.parent.name == run.checkpoints.name and run.config.is_file() else None

    def __str__(self) -> str:
        return str(self.path)

    # ---- the lock
    def lock(self) -> "RunDir":
        """Take the directory for this process, creating it; refuse if another live process has it."""
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.lock_file, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise RunDirError(f"cannot write to the run directory {self.path}: {exc.strerror}. "
                              f"Use a writable run.output_dir (or fix the folder's permissions).") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "?"
            os.close(fd)
            if exc.errno in (errno.EWOULDBLOCK, errno.EACCES):
                raise RunDirError(f"{self.path} is in use by another neurosym process (pid {holder}). Wait for it "
                                  f"to finish or stop it, or train under another name: --set run.name=<new>") from None
            raise
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._lock_fd = fd
        self._finish_interrupted_saves()
        return self

    def _finish_interrupted_saves(self) -> None:
        """A save killed mid-way (its ``.tmp``/``.old`` folders): settled by the lock's holder, before
        anything reads the checkpoints (neurosym.persist.checkpoint.recover_interrupted_saves)."""
        from neurosym.persist.checkpoint import recover_interrupted_saves
        try:
            restored = recover_interrupted_saves(self.path)
        except OSError as exc:  # left as they are: the next save removes what it can
            print(f"warning: cannot tidy {self.checkpoints}: {exc}", file=sys.stderr)
            return
        for line in restored:
            print(f"note: {line}", file=sys.stderr)

    def unlock(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # releases the flock; the file stays (harmless, reused next time)
            self._lock_fd = None

    def __enter__(self) -> "RunDir":
        return self.lock()

    def __exit__(self, *exc) -> None:
        self.unlock()

"""One rule for every verb that writes a file or a folder the user names (`--out`).

- An existing non-empty target is refused unless the user passes ``--overwrite`` (an empty file or an
  empty folder is taken as it is).
- Never inside, equal to, or above a run directory or a folder the verb reads from (the run being
  exported or merged, the base model folder, the data files), even with ``--overwrite``: ``--out
  RUN/events.jsonl``, ``--out RUN``, ``--out .`` above a run, ``merge --out <base model folder>``.
  Any folder that looks like a neurosym run (``config.yaml`` beside ``events.jsonl``, ``checkpoints/``
  or ``remake.sqlite``) counts, not only the one being read. Nor the current folder, one of its
  parents, the home folder or ``/``.
- The new output is written to a temporary sibling (``.NAME.neurosym-tmp-*``) and renamed into place
  only once it is complete; a failure removes the temporary and leaves the old target as it was.
- ``--overwrite`` of a folder moves the old one aside (``.NAME.neurosym-old-*``), renames the new one
  in, then deletes the old one: nothing is deleted except the target the user asked to overwrite and
  the program's own temporaries.

Use::

    target = OutputTarget(args.out, kind="dir", overwrite=args.overwrite, protect=[run_dir, base_dir])
    ...heavy work...                     # all checks above ran before it
    with target.writing() as tmp:        # tmp: a fresh folder (kind="dir") or a file path (kind="file")
        model.save_pretrained(tmp)
    # here target.path holds the new output
"""
from __future__ import annotations

import logging
import os
import shutil
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Iterable, Iterator, Literal, Optional

from neurosym.errors import UserError
from neurosym.persist.atomic import remove_temporary
from neurosym.persist.rundir import RunDir

log = logging.getLogger(__name__)

TMP_TAG, OLD_TAG = ".neurosym-tmp-", ".neurosym-old-"
_SCAN_LIMIT = 20_000  # entries looked at before refusing to replace a folder we cannot fully check


class OutputError(UserError, ValueError):
    """An output path the verb must not write (exists, inside a run, read from...): exit 2."""


def model_paths(name_or_path: Optional[str]) -> list[Path]:
    """What loading the base ``name_or_path`` reads, which no output may replace: its folder (a local
    path) and the Hugging Face hub cache."""
    paths = []
    if name_or_path and "://" not in name_or_path and Path(name_or_path).expanduser().exists():
        paths.append(Path(name_or_path).expanduser())
    try:
        from huggingface_hub import constants
        paths.append(Path(constants.HF_HUB_CACHE))
    except Exception:  # pragma: no cover - huggingface_hub ships with transformers
        pass
    return paths


def is_run_dir(path: Path) -> bool:
    """A folder that looks like a neurosym run directory."""
    return RunDir(path).looks_like_run()


def _resolved(path: Path) -> Path:
    """``path`` made absolute with its parents' links resolved (the name itself is kept: replacing
    a symlink replaces the link, not what it points to)."""
    path = Path(os.path.abspath(path))
    return path.parent.resolve() / path.name


def _non_empty(path: Path) -> bool:
    if path.is_symlink() or not path.exists():
        return path.is_symlink()
    if path.is_dir():
        return any(path.iterdir())
    return path.stat().st_size > 0


def _relation(out: Path, protected: Path) -> Optional[str]:
    if out == protected:
        return "is"
    if protected in out.parents:
        return "is inside"
    if out in protected.parents:
        return "contains"
    return None


class OutputTarget:
    """A checked ``--out`` path (checks run at construction, before any heavy work).

    :param out: the path the user gave.
    :param kind: ``"file"`` (jsonl, parquet, png) or ``"dir"`` (a datasets folder, a merged model).
    :param overwrite: the user passed ``--overwrite``.
    :param protect: paths the verb reads from (run directory, model folder, data files): the target may
        not be, contain, or be inside any of them.
    :param flag: the option's name, for messages.
    """

    def __init__(self, out: str | os.PathLike, kind: Literal["file", "dir"], overwrite: bool = False,
                 protect: Iterable[str | os.PathLike | None] = (), flag: str = "--out"):
        if kind not in ("file", "dir"):
            raise ValueError(f"kind must be 'file' or 'dir', got {kind!r}")
        if not str(out).strip():
            raise OutputError(f"{flag} is empty: give a path to write")
        self.given, self.kind, self.overwrite, self.flag = str(out), kind, overwrite, flag
        self.path = _resolved(Path(out))
        self.protect = []
        for p in protect:
            if p is not None and str(p):  # both the path as named and where its links lead
                self.protect += [q for q in (_resolved(Path(p)), Path(p).resolve()) if q not in self.protect]
        self._check()

    # -- checks -------------------------------------------------------------------------------------
    def _refuse(self, why: str) -> None:
        raise OutputError(f"{self.flag} {self.given}: {why}")

    def _check(self) -> None:
        out = self.path
        targets = [out] + ([out.resolve()] if out.is_symlink() else [])
        for target in targets:
            for p in self.protect:
                rel = _relation(target, p)
                if rel:
                    self._refuse(f"{rel} {p}, which this command reads from; write somewhere else")
            for parent in [target, *target.parents]:
                if is_run_dir(parent):
                    what = "is" if parent == target else "is inside"
                    self._refuse(f"{what} the run directory {parent}; write outside the run "
                                 f"(e.g. next to it)")
        special = {Path(out.anchor), Path.cwd().resolve(), *Path.cwd().resolve().parents}
        try:
            special.add(Path.home().resolve())
        except (RuntimeError, KeyError):  # no home folder known
            pass
        if out in special:
            self._refuse("is the current folder, one of its parents, your home or the root; "
                         "name a new file or folder")
        if out.exists() or out.is_symlink():
            if out.is_symlink():
                self._refuse("is a symbolic link; name the real path or a new one")
            if self.kind == "file" and out.is_dir():
                self._refuse("is a folder; name a file (e.g. refined.jsonl)")
            if self.kind == "dir" and not out.is_dir():
                self._refuse("is a file; this format writes a folder. Name a new folder")
            if _non_empty(out):
                if not self.overwrite:
                    self._refuse(f"already exists and is not empty; pass --overwrite to replace it, "
                                 f"or name a new {'folder' if self.kind == 'dir' else 'file'}")
                if self.kind == "dir":
                    self._check_replaceable(out)
        parent = self._existing_parent()
        if not os.access(parent, os.W_OK | os.X_OK):
            self._refuse(f"cannot write in {parent} (permission denied)")

    def _check_replaceable(self, folder: Path) -> None:
        """A folder to be replaced must not hold a run directory or a protected path."""
        seen = 0
        for root, dirs, files in os.walk(folder):
            here = Path(root)
            if is_run_dir(here):
                self._refuse(f"holds the run directory {here}; --overwrite never deletes a run")
            seen += len(dirs) + len(files)
            if seen > _SCAN_LIMIT:
                self._refuse(f"holds more than {_SCAN_LIMIT} files; it does not look like an earlier "
                             f"output of this command. Remove it yourself or name a new folder")

    def _existing_parent(self) -> Path:
        parent = self.path.parent
        while not parent.exists():
            parent = parent.parent
        if not parent.is_dir():
            self._refuse(f"{parent} is a file, not a folder")
        return parent

    # -- writing ------------------------------------------------------------------------------------
    @contextmanager
    def writing(self) -> Iterator[Path]:
        """Yield a temporary sibling to write into; on success move it onto :attr:`path`."""
        out = self.path
        try:
            out.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            self._refuse(f"cannot create {out.parent}: {exc.strerror or exc}")
        tmp = out.parent / f".{out.name}{TMP_TAG}{uuid.uuid4().hex[:8]}"
        if self.kind == "dir":
            tmp.mkdir()
        try:
            yield tmp
            self._commit(tmp)
        except BaseException:
            remove_temporary(tmp)
            raise

    def _commit(self, tmp: Path) -> None:
        out = self.path
        if self.kind == "file" and not tmp.exists():
            raise OutputError(f"{self.flag} {self.given}: nothing was written")
        # Something may have appeared at the target while we worked: check again, with the same rules.
        self._check()
        if self.kind == "file":
            if out.exists():  # checked above: empty, or the user asked to overwrite it
                os.replace(tmp, out)
                return
            try:  # a hard link never replaces a file that appeared since the check
                os.link(tmp, out)
            except FileExistsError:
                raise OutputError(f"{self.flag} {self.given}: appeared while writing; not replaced") from None
            except OSError:  # a file system without hard links
                os.replace(tmp, out)
            else:
                tmp.unlink()
            return
        if not out.exists():
            os.rename(tmp, out)  # fails on a folder that appeared and is not empty
            return
        old = out.parent / f".{out.name}{OLD_TAG}{uuid.uuid4().hex[:8]}"
        os.rename(out, old)  # the user asked for this one to be replaced (checked above)
        try:
            os.rename(tmp, out)
        except BaseException:
            os.rename(old, out)
            raise
        shutil.rmtree(old, ignore_errors=True)
        if old.exists():
            log.warning("the new %s is in place, but the old one could not be fully removed: delete %s",
                        out, old)


def atomic_write_text(target: OutputTarget, text: str) -> Path:
    """Write ``text`` to a file target (temporary sibling, fsync, rename)."""
    with target.writing() as tmp:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
    return target.path


__all__ = ["OutputTarget", "OutputError", "atomic_write_text", "is_run_dir"]

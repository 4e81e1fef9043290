"""Importing TextGrad without side effects outside the run directory.

``import textgrad`` (0.1.8) creates ``./logs/`` in the current directory and opens a JSONL log file
there, and it takes ~6 s (it imports litellm). :func:`load_textgrad` imports it once, lazily, with
its log pointed at a throw-away folder that is removed straight away; :func:`route_textgrad_log`
then sends TextGrad's prompt log to ``<run_dir>/teacher/textgrad.jsonl``. A user who sets
``TEXTGRAD_LOG_DIR`` keeps TextGrad's own behaviour.

TextGrad's logger logs every prompt and answer at INFO (~27 records per symbolic update). Those
records go to that file only: the ``textgrad`` logger does not propagate to the root logger, so
they never reach the console (where they would break the progress bar).

Other neurosym modules should get TextGrad through ``load_textgrad()`` rather than a bare
``import textgrad``, so the first import is the clean one.
"""
from __future__ import annotations

import logging
import os
import shutil
import sys
import tempfile
import threading
from pathlib import Path
from types import ModuleType

_lock = threading.Lock()
_HANDLER_ATTR = "_neurosym_run_log"


def load_textgrad() -> ModuleType:
    """Import and return the ``textgrad`` module without leaving ``./logs`` behind.

    While the import runs, ``TEXTGRAD_LOG_DIR`` is set to a temporary folder and
    ``LITELLM_LOCAL_MODEL_COST_MAP`` to ``True`` (each only if unset; the environment is restored right
    after, so ``os.environ`` is unchanged on return).
    """
    with _lock:
        if "textgrad" in sys.modules:
            return sys.modules["textgrad"]
        # For the import only (os.environ is as it was on return): litellm, imported by textgrad, reads
        # its bundled price map instead of fetching one from the network, and TextGrad writes its log
        # file into a temporary folder instead of ./logs (unless the user chose TEXTGRAD_LOG_DIR).
        scoped = {"LITELLM_LOCAL_MODEL_COST_MAP": "True"}
        tmp = None
        if "TEXTGRAD_LOG_DIR" not in os.environ:
            tmp = tempfile.mkdtemp(prefix="neurosym-textgrad-")
            scoped["TEXTGRAD_LOG_DIR"] = tmp
        saved = {k: os.environ.get(k) for k in scoped}
        os.environ.update({k: v for k, v in scoped.items() if saved[k] is None})
        try:
            import textgrad
        finally:
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
            if tmp is not None:
                _drop_file_handlers(logging.getLogger("textgrad"), under=Path(tmp))
                shutil.rmtree(tmp, ignore_errors=True)
        logging.getLogger("textgrad").propagate = False  # its INFO records belong in the run's teacher log
        return textgrad


def _drop_file_handlers(logger: logging.Logger, under: Path) -> None:
    for h in list(logger.handlers):
        if isinstance(h, logging.FileHandler) and Path(h.baseFilename).resolve().is_relative_to(under.resolve()):
            logger.removeHandler(h)
            h.close()


def route_textgrad_log(run_dir: str | Path) -> Path | None:
    """Send TextGrad's JSONL log to ``<run_dir>/teacher/textgrad.jsonl`` (replacing a previous
    run's routing and TextGrad's default ``./logs`` file). Returns the path, or ``None`` when the
    user set ``TEXTGRAD_LOG_DIR`` (their choice is kept)."""
    tg = load_textgrad()
    logging.getLogger("textgrad").propagate = False  # never the console, however textgrad was imported
    if "TEXTGRAD_LOG_DIR" in os.environ:
        return None
    path = Path(run_dir) / "teacher" / "textgrad.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    logger = logging.getLogger("textgrad")
    with _lock:
        for h in list(logger.handlers):
            if isinstance(h, logging.FileHandler):
                if Path(h.baseFilename) == path.resolve() and getattr(h, _HANDLER_ATTR, False):
                    return path
                logger.removeHandler(h)
                h.close()
        handler = logging.FileHandler(path, delay=True)
        handler.setFormatter(getattr(tg, "cf", None) or logging.Formatter())
        setattr(handler, _HANDLER_ATTR, True)
        logger.addHandler(handler)
    return path


_full_variable_class = None


def full_variable_class() -> type:
    """``FullTextVariable``: a ``textgrad.Variable`` whose short value is its whole value.

    TextGrad 0.1.8 shows a variable to the optimizer (``TGD``'s ``<VARIABLE> {variable_short}``)
    and to the backward prompts through ``Variable.get_short_value()``, which keeps only the first
    and last 10 words once a value passes 20 words (``"first (...) last"``). A teacher that rewrites
    the span it was shown then drops the middle of the prompt. For the variable being optimised the
    whole text is what matters, so this subclass shows all of it, everywhere TextGrad asks.
    """
    global _full_variable_class
    base = load_textgrad().Variable  # outside _lock, which load_textgrad takes
    with _lock:
        if _full_variable_class is None:

            def get_short_value(self, n_words_offset: int = 10) -> str:  # noqa: ARG001 - TextGrad's signature
                return self.value

            _full_variable_class = type("FullTextVariable", (base,), {
                "get_short_value": get_short_value, "__module__": __name__,
                "__doc__": "A textgrad.Variable shown whole to the optimizer and backward prompts."})
        return _full_variable_class

"""``PythonTeacher``: ``teacher.provider: python`` calls any Python function as the teacher.

``teacher.callable: "module:function"`` names a callable ``fn(messages, *, model, temperature,
max_tokens, **other sampling params) -> str``: ``messages`` is the chat list (``[{"role": "system",
"content": ...}, {"role": "user", "content": ...}]``) an OpenAI-compatible server would receive. Use it
for an in-house inference stack that is not OpenAI-compatible, for rule-based or verifier feedback,
or for a simulated teacher (``experiments/testbed/teacher.py``). The module is imported from
``sys.path`` and the current directory.

It is an ordinary :class:`~neurosym.teacher.base.CachedTeacher`: same response cache, usage metering,
budget cap and TextGrad engine path as ``openai`` and ``local``. Token counts are the callable's own
when it returns ``(text, prompt_tokens, completion_tokens)``, else estimated at ~4 characters a token
(so a price in ``teacher.price_per_1k_tokens`` gives a comparable cost).

What the callable does cannot end the run or hold it:

* anything it raises becomes :class:`~neurosym.teacher.errors.TeacherUnavailable` (the batch takes a
  LoRA step) with a message naming the callable, ``SystemExit`` (``sys.exit(3)``),
  ``KeyboardInterrupt`` and other ``BaseException`` included (kind ``callable_error``); a
  :class:`~neurosym.teacher.errors.TeacherError` it raises passes through unchanged;
* it runs on a daemon thread of its own while the caller waits at most ``teacher.timeout_s`` (the
  same total deadline as an HTTP teacher's attempt; kind ``timeout``) or until :meth:`abort` (a stop:
  SIGTERM, Ctrl-C; kind ``aborted``), whichever comes first. A Python function cannot be stopped from
  outside, so one given up on runs on in the background (a daemon thread never holds the process's
  exit) and its answer is dropped; the callable must therefore be thread-safe, as it must be with
  ``teacher.max_concurrency`` above 1 anyway.
"""
from __future__ import annotations

import inspect
import threading
import time
from pathlib import Path
from typing import Any, Callable, Optional

from neurosym.config.schema import TeacherConfig

from neurosym.plugins import load_object

from .base import CachedTeacher, Completion
from .errors import TeacherConfigError, TeacherError, TeacherUnavailable


def load_callable(spec: Optional[str], search_paths: tuple = ()) -> Callable[..., Any]:
    """Import ``teacher.callable`` (``"module:function"``); :class:`TeacherConfigError` says what failed."""
    return load_object(spec, "teacher.callable", TeacherConfigError, search_paths,
                       " for teacher.provider: python, e.g. teacher.callable: experiments.testbed.teacher:simulated")


def _estimate_tokens(text: str) -> int:
    return max(1, len(text) // 4) if text else 0


class PythonTeacher(CachedTeacher):
    """TextGrad engine over a Python callable (``teacher.callable``).

    :param fn: the callable itself (default: imported from ``cfg.callable``); tests pass one directly.
    """

    def __init__(self, cfg: TeacherConfig, run_dir: str | Path, *, fn: Optional[Callable[..., Any]] = None,
                 search_paths: tuple = (), **kw: Any):
        self.fn = fn if fn is not None else load_callable(cfg.callable, search_paths)
        super().__init__(cfg, run_dir, **kw)
        self.name = getattr(self.fn, "__qualname__", type(self.fn).__name__)
        try:  # pass only the sampling params the callable accepts, unless it takes **kwargs
            sig = inspect.signature(self.fn)
            params = sig.parameters.values()
            self._accepts = None if any(p.kind == p.VAR_KEYWORD for p in params) else set(sig.parameters)
        except (TypeError, ValueError):  # builtins without a signature: pass everything
            self._accepts = None

    def _request(self, messages: list[dict], params: dict[str, Any]) -> Completion:
        kwargs = {"model": self.model_string, **params}
        if self._accepts is not None:
            kwargs = {k: v for k, v in kwargs.items() if k in self._accepts}
        sent = [dict(m) for m in messages]  # the callable cannot alter what is cached or metered
        out = self._call(sent, kwargs)
        if isinstance(out, tuple) and len(out) == 3:
            text, p_tok, c_tok = out
        else:
            text, p_tok, c_tok = out, None, None
        if not isinstance(text, str):
            self.usage.record_failure("malformed_response")
            raise TeacherUnavailable(f"teacher.callable {self.cfg.callable or self.name} returned "
                                     f"{type(text).__name__}, not the reply text (str)", kind="malformed_response")
        if p_tok is None:
            p_tok = _estimate_tokens("".join(str(m.get("content", "")) for m in messages))
            c_tok = _estimate_tokens(text)
        return Completion(text, int(p_tok), int(c_tok))

    def _call(self, sent: list[dict], kwargs: dict[str, Any]) -> Any:
        """``fn(sent, **kwargs)`` on a daemon thread, waited for until ``teacher.timeout_s`` or :meth:`abort`."""
        name = self.cfg.callable or self.name
        done, box = threading.Event(), {}

        def call() -> None:
            try:
                box["out"] = self.fn(sent, **kwargs)
            except BaseException as exc:  # noqa: BLE001 - SystemExit, KeyboardInterrupt too: handed to the caller
                box["error"] = exc
            finally:
                done.set()

        deadline = time.monotonic() + self.cfg.timeout_s
        threading.Thread(target=call, name="teacher-callable", daemon=True).start()
        while not done.wait(max(0.0, min(0.05, deadline - time.monotonic()))):
            if self._aborted.is_set():
                self.usage.record_failure("aborted")
                raise TeacherUnavailable(f"teacher.callable {name}: call aborted (shutting down); it runs on in "
                                         "the background and its answer is dropped", kind="aborted")
            if time.monotonic() >= deadline:
                self.usage.record_failure("timeout")
                raise TeacherUnavailable(
                    f"teacher.callable {name} did not return within teacher.timeout_s={self.cfg.timeout_s:g}s; it "
                    "runs on in the background and its answer is dropped (raise teacher.timeout_s, or make the "
                    "callable return sooner)", kind="timeout")
        error = box.get("error")
        if error is None:
            return box["out"]
        if isinstance(error, TeacherError):
            raise error
        self.usage.record_failure("callable_error")
        what = f"{type(error).__name__}({error})" if isinstance(error, SystemExit) else \
            f"{type(error).__name__}: {error}" if str(error) else type(error).__name__
        raise TeacherUnavailable(f"teacher.callable {name} raised {what}", kind="callable_error") from error

    def __repr__(self) -> str:
        return f"PythonTeacher(callable={self.cfg.callable!r}, model={self.model_string!r})"

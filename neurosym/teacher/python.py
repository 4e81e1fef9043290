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
(so a price in ``teacher.price_per_1k_tokens`` gives a comparable cost). An exception raised by the
callable becomes :class:`~neurosym.teacher.errors.TeacherUnavailable` (the batch takes a LoRA step);
a :class:`~neurosym.teacher.errors.TeacherError` it raises passes through unchanged.
"""
from __future__ import annotations

import importlib
import inspect
import sys
from pathlib import Path
from typing import Any, Callable, Optional

from neurosym.config import TeacherConfig

from .base import CachedTeacher, Completion
from .errors import TeacherConfigError, TeacherError, TeacherUnavailable


def load_callable(spec: Optional[str], search_paths: tuple = ()) -> Callable[..., Any]:
    """Import ``"module:function"`` (``function`` may be dotted: ``module:Class.method``).

    ``search_paths`` and the current directory are tried for the module (without leaving them on
    ``sys.path``). Raises :class:`TeacherConfigError` saying what failed and how to fix it.
    """
    if not isinstance(spec, str) or spec.count(":") != 1 or not all(spec.split(":")):
        raise TeacherConfigError(
            f"teacher.callable must be 'module:function' for teacher.provider: python (got {spec!r}), "
            "e.g. teacher.callable: experiments.testbed.teacher:simulated")
    module_name, attr = spec.split(":")
    paths = [str(p) for p in (*search_paths, Path.cwd())]
    added = [p for p in paths if p not in sys.path]
    sys.path[:0] = added
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        raise TeacherConfigError(
            f"teacher.callable {spec!r}: cannot import module {module_name!r} ({exc}); put it on PYTHONPATH "
            f"or run from the folder that holds {module_name.replace('.', '/')}.py") from None
    except Exception as exc:
        raise TeacherConfigError(f"teacher.callable {spec!r}: importing {module_name!r} failed: "
                                 f"{type(exc).__name__}: {exc}") from exc
    finally:
        for p in added:
            if p in sys.path:
                sys.path.remove(p)
    fn: Any = module
    for part in attr.split("."):
        fn = getattr(fn, part, None)
        if fn is None:
            raise TeacherConfigError(f"teacher.callable {spec!r}: module {module_name!r} "
                                     f"({getattr(module, '__file__', '?')}) has no attribute {attr!r}")
    if not callable(fn):
        raise TeacherConfigError(f"teacher.callable {spec!r}: {attr!r} is not callable")
    return fn


def _estimate_tokens(text: str) -> int:
    return max(1, len(text) // 4) if text else 0


class PythonTeacher(CachedTeacher):
    """TextGrad engine over a Python callable (``teacher.callable``).

    :param fn: the callable itself (default: imported from ``cfg.callable``); tests pass one directly.
    """

    def __init__(self, cfg: TeacherConfig, run_dir: str | Path, *, fn: Optional[Callable[..., Any]] = None,
                 **kw: Any):
        self.fn = fn if fn is not None else load_callable(cfg.callable)
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
        try:
            out = self.fn(sent, **kwargs)
        except TeacherError:
            raise
        except Exception as exc:
            self.usage.record_failure("callable_error")
            raise TeacherUnavailable(f"teacher.callable {self.cfg.callable or self.name} raised "
                                     f"{type(exc).__name__}: {exc}", kind="callable_error") from exc
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

    def __repr__(self) -> str:
        return f"PythonTeacher(callable={self.cfg.callable!r}, model={self.model_string!r})"

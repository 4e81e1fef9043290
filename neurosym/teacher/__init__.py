"""The teacher: an external (or local) LLM that TextGrad uses for feedback and prompt rewrites.

    from neurosym.teacher import make_teacher, preflight, TeacherUnavailable, BudgetExhausted
    preflight(cfg.teacher)                       # at job start: fails fast on URL/key/model
    print(check_teacher(cfg.teacher))            # neurosym validate: one line, or TeacherConfigError
    teacher = make_teacher(cfg.teacher, run_dir) # a textgrad EngineLM
    with teacher.meter() as m:                   # usage of this thread's calls
        text = teacher("prompt", system_prompt="...")
    m.cost_usd; teacher.usage.state_dict(); teacher.budget_left

Importing this package is cheap; TextGrad (~6 s) is imported on first use of an engine class or
:func:`make_teacher`. Use :func:`load_textgrad` instead of ``import textgrad`` elsewhere in neurosym
(TextGrad's own import writes ``./logs/`` in the working directory; this one does not).
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from .accounting import TeacherUsage, UsageMeter
from .availability import AvailabilityNote, TeacherAvailability
from .cache import ResponseCache, cache_key
from .errors import BudgetExhausted, TeacherConfigError, TeacherDown, TeacherError, TeacherUnavailable
from .preflight import PreflightResult, check_teacher, preflight
from .pricing import ResolvedPrice, resolve_price
from .tg import load_textgrad, route_textgrad_log

if TYPE_CHECKING:  # pragma: no cover
    from neurosym.config.schema import TeacherConfig

    from .base import CachedTeacher, TeacherReply
    from .engine import OpenAITeacher
    from .local import LocalTeacher

_LAZY = {"OpenAITeacher": "engine", "Backoff": "engine", "LocalTeacher": "local", "PythonTeacher": "python",
         "CachedTeacher": "base", "TeacherReply": "base"}


def make_teacher(cfg: "TeacherConfig", run_dir: str | Path, **kwargs: Any) -> "CachedTeacher":
    """The TextGrad engine for ``cfg.provider`` (``openai``, ``local`` or ``python``), caching under ``run_dir``.

    Extra keyword arguments go to the engine's constructor (e.g. ``backoff=``, ``usage=``).
    """
    if cfg.provider == "openai":
        from .engine import OpenAITeacher
        return OpenAITeacher(cfg, run_dir, **kwargs)
    if cfg.provider == "local":
        from .local import LocalTeacher
        return LocalTeacher(cfg, run_dir, **kwargs)
    if cfg.provider == "python":
        from .python import PythonTeacher
        return PythonTeacher(cfg, run_dir, **kwargs)
    raise TeacherConfigError(f"teacher.provider {cfg.provider!r} is not supported; use 'openai', 'local' or 'python'")


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib
        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "make_teacher", "preflight", "PreflightResult", "check_teacher", "load_textgrad", "route_textgrad_log",
    "resolve_price", "ResolvedPrice", "TeacherAvailability", "AvailabilityNote",
    "TeacherError", "TeacherUnavailable", "TeacherDown", "BudgetExhausted", "TeacherConfigError",
    "TeacherUsage", "UsageMeter", "ResponseCache", "cache_key",
    "OpenAITeacher", "LocalTeacher", "PythonTeacher", "CachedTeacher", "TeacherReply", "Backoff",
]

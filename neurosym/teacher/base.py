"""The part every teacher shares: TextGrad's engine interface, the cache, accounting, the budget.

A subclass implements :meth:`CachedTeacher._request` (messages + sampling params -> text and token
counts). :meth:`CachedTeacher.complete` wraps it: cache lookup (a hit is free and counted), budget
check, a concurrency limit of ``teacher.max_concurrency``, usage recording, cache store.
:meth:`CachedTeacher.abort` (a stop: SIGTERM, Ctrl-C) makes calls in flight end at once; it is safe
to call from a signal handler (:class:`AbortFlag` takes no lock).
"""
from __future__ import annotations

import threading
import time
from abc import abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Union

from neurosym.config.schema import TeacherConfig

from .accounting import TeacherUsage, UsageMeter
from .cache import CACHE_FILENAME, ResponseCache, cache_key
from .errors import TeacherUnavailable
from .pricing import ResolvedPrice, resolve_price
from .tg import load_textgrad, route_textgrad_log

EngineLM = load_textgrad().engine.EngineLM

SAMPLING_PARAMS = ("temperature", "max_tokens", "top_p", "seed", "stop")


class AbortFlag:
    """A flag that a signal handler may set: unlike ``threading.Event.set`` it takes no lock, so a
    handler that runs while its own thread holds the lock cannot deadlock. Waiters poll it every
    ``POLL_S`` (a stop is seen within ~20 ms)."""

    POLL_S = 0.02

    def __init__(self) -> None:
        self._set = False

    def set(self) -> None:
        self._set = True

    def is_set(self) -> bool:
        return self._set

    def wait(self, timeout: float) -> bool:
        """Sleep up to ``timeout`` seconds, waking when the flag is set; returns whether it is."""
        deadline = time.monotonic() + max(0.0, timeout)
        while not self._set:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            time.sleep(min(self.POLL_S, left))
        return self._set


@dataclass(frozen=True)
class Completion:
    """What a backend returns for one request."""
    text: str
    prompt_tokens: int
    completion_tokens: int


@dataclass(frozen=True)
class TeacherReply:
    """One answer with its accounting (``cost_usd`` is 0 for a cache hit)."""
    text: str
    prompt_tokens: int
    completion_tokens: int
    cost_usd: float
    cached: bool
    latency_s: float


def teacher_dir(run_dir: str | Path) -> Path:
    """Where a run keeps its teacher files (cache, TextGrad log)."""
    return Path(run_dir) / "teacher"


class CachedTeacher(EngineLM):
    """A TextGrad engine with a SQLite response cache, usage accounting and a budget cap.

    :param cfg: the ``teacher`` config section.
    :param run_dir: the run directory; files go to ``<run_dir>/teacher/`` and nowhere else.
    :param usage: share an existing :class:`TeacherUsage` (default: a fresh one from ``cfg``).
    """

    DEFAULT_SYSTEM_PROMPT = "You are a helpful, creative, and smart assistant."
    is_multimodal = False

    def __init__(self, cfg: TeacherConfig, run_dir: str | Path, *, usage: Optional[TeacherUsage] = None):
        self.cfg = cfg
        self.model_string = cfg.model
        self.system_prompt = self.DEFAULT_SYSTEM_PROMPT
        self.run_dir = Path(run_dir)
        self.cache = ResponseCache(teacher_dir(run_dir) / CACHE_FILENAME)
        route_textgrad_log(run_dir)
        self.price: ResolvedPrice = resolve_price(cfg)
        self.usage = usage or TeacherUsage(self.price.input, self.price.output, cfg.budget_usd)
        self._slots = threading.BoundedSemaphore(cfg.max_concurrency)
        self._aborted = AbortFlag()

    def abort(self) -> None:
        """End every call in flight at once (within ~50 ms, retry waits included) with
        ``TeacherUnavailable(kind="aborted")``, and every later call too. For a prompt stop (SIGTERM,
        Ctrl-C): jobs in flight are saved with the checkpoint and submitted again on resume. Safe in a
        signal handler. A backend that cannot be interrupted (``provider: local``) ends its current
        call first."""
        self._aborted.set()

    def _check_aborted(self) -> None:
        if self._aborted.is_set():
            raise TeacherUnavailable(f"teacher {self.model_string!r}: call aborted (shutting down)", kind="aborted")

    # -- TextGrad's interface ---------------------------------------------------------------------
    def generate(self, prompt: Union[str, list], system_prompt: Optional[str] = None, **kwargs: Any) -> str:
        """Answer ``prompt`` (TextGrad's engine call); raises a :class:`~.errors.TeacherError` on failure."""
        return self.complete(prompt, system_prompt=system_prompt, **kwargs).text

    def __call__(self, prompt: Union[str, list], **kwargs: Any) -> str:
        return self.generate(prompt, **kwargs)

    # -- the shared pipeline ----------------------------------------------------------------------
    @property
    def budget_left(self) -> Optional[float]:
        """USD left under ``teacher.budget_usd`` (``None`` = no cap)."""
        return self.usage.budget_left

    def meter(self):
        """``with teacher.meter() as m:`` - usage of this thread's calls inside the block."""
        return self.usage.meter()

    def messages(self, prompt: Union[str, list], system_prompt: Optional[str] = None) -> list[dict]:
        """The chat messages sent for ``prompt`` (a string, or TextGrad's list of text parts)."""
        if isinstance(prompt, list):
            if not all(isinstance(p, str) for p in prompt):
                raise NotImplementedError(f"{type(self).__name__} takes text only, not images/bytes")
            prompt = "\n".join(prompt)
        if not isinstance(prompt, str):
            raise TypeError(f"prompt must be a str, got {type(prompt).__name__}")
        return [{"role": "system", "content": system_prompt or self.system_prompt},
                {"role": "user", "content": prompt}]

    def params(self, **kwargs: Any) -> dict[str, Any]:
        """Sampling params from the config, overridden by call kwargs (``temperature``, ``max_tokens``,
        ``top_p``, ``seed``, ``stop``)."""
        unknown = set(kwargs) - set(SAMPLING_PARAMS)
        if unknown:
            raise TypeError(f"unexpected teacher call arguments {sorted(unknown)}; allowed: {SAMPLING_PARAMS}")
        params: dict[str, Any] = {"temperature": self.cfg.temperature, "max_tokens": self.cfg.max_tokens}
        params.update({k: v for k, v in kwargs.items() if v is not None})
        return params

    def key(self, prompt: Union[str, list], system_prompt: Optional[str] = None, **kwargs: Any) -> str:
        """The cache key of a call."""
        return cache_key(self.model_string, self.messages(prompt, system_prompt), self.params(**kwargs))

    def complete(self, prompt: Union[str, list], system_prompt: Optional[str] = None, **kwargs: Any) -> TeacherReply:
        """Answer with accounting: cache, budget, concurrency limit, usage, cache store."""
        messages = self.messages(prompt, system_prompt)
        params = self.params(**kwargs)
        key = cache_key(self.model_string, messages, params)
        hit = self._cached(key)
        if hit is not None:
            return hit
        with self._slots:
            hit = self._cached(key)  # another thread may have just asked the same thing
            if hit is not None:
                return hit
            self.usage.check_budget()
            self._check_aborted()
            t0 = time.monotonic()
            out = self._request(messages, params)
            latency = time.monotonic() - t0
            if len(out.text) > self.cfg.max_response_chars:
                # paid for, but never stored or handed on: a runaway answer must not fill the run dir
                self.usage.record_call(*self._estimate(messages, out.text), latency)
                self.usage.record_failure("too_large")
                raise TeacherUnavailable(
                    f"teacher {self.model_string!r} answered {len(out.text):,} characters, more than "
                    f"teacher.max_response_chars={self.cfg.max_response_chars:,}; the answer was dropped "
                    "(raise teacher.max_response_chars, or lower teacher.max_tokens)", kind="too_large")
            out = self._sane_usage(out, messages, params)
            cost = self.usage.record_call(out.prompt_tokens, out.completion_tokens, latency)
            if out.text.strip():  # an empty answer is a glitch: do not replay it forever
                self.cache.put(key, self.model_string, out.text, out.prompt_tokens, out.completion_tokens)
        return TeacherReply(out.text, out.prompt_tokens, out.completion_tokens, cost, False, latency)

    @staticmethod
    def _estimate(messages: list[dict], text: str) -> tuple[int, int]:
        """(prompt, completion) tokens estimated at ~4 characters per token."""
        prompt_chars = sum(len(str(m.get("content", ""))) for m in messages)
        return -(-prompt_chars // 4), -(-len(text) // 4)

    def _sane_usage(self, out: Completion, messages: list[dict], params: dict[str, Any]) -> Completion:
        """``out`` with token counts a server cannot have meant replaced by estimates from the text.

        Counts are untrusted: a negative count (which would make cost negative and the budget never
        bite), a non-integer, or more tokens than the text could hold (its UTF-8 bytes plus a
        generous per-message allowance; for the answer, also more than ``max_tokens`` allows) is
        replaced by the ~4 characters per token estimate and counted as a ``bad_usage`` failure.
        """
        est_prompt, est_completion = self._estimate(messages, out.text)
        prompt_cap = sum(len(str(m.get("content", "")).encode("utf-8")) for m in messages) + 16 * len(messages) + 64
        completion_cap = max(int(params.get("max_tokens") or 0), len(out.text.encode("utf-8"))) + 16

        def sane(value: Any, cap: int, estimate: int) -> tuple[int, bool]:
            if isinstance(value, bool) or not isinstance(value, int) or value < 0 or value > cap:
                return estimate, False
            return value, True

        prompt_tokens, ok_p = sane(out.prompt_tokens, prompt_cap, est_prompt)
        completion_tokens, ok_c = sane(out.completion_tokens, completion_cap, est_completion)
        if ok_p and ok_c:
            return out
        self.usage.record_failure("bad_usage")
        return Completion(out.text, prompt_tokens, completion_tokens)

    def forget(self, prompt: Union[str, list], system_prompt: Optional[str] = None, **kwargs: Any) -> bool:
        """Drop a cached answer (e.g. one the caller found unusable); True if one was stored."""
        return self.cache.delete(self.key(prompt, system_prompt, **kwargs))

    def _cached(self, key: str) -> Optional[TeacherReply]:
        hit = self.cache.get(key)
        if hit is None:
            return None
        self.usage.record_cache_hit()
        return TeacherReply(hit.text, hit.prompt_tokens, hit.completion_tokens, 0.0, True, 0.0)

    @abstractmethod
    def _request(self, messages: list[dict], params: dict[str, Any]) -> Completion:
        """Ask the backend; raise a :class:`~.errors.TeacherError` on failure."""

    def close(self) -> None:
        """Release the cache file (and the backend's connections)."""
        self.cache.close()

    def __repr__(self) -> str:
        return f"{type(self).__name__}(model={self.model_string!r}, run_dir={str(self.run_dir)!r})"

    def __getstate__(self):
        raise TypeError(f"{type(self).__name__} cannot be pickled (it holds a client and its key)")


__all__ = ["AbortFlag", "CachedTeacher", "Completion", "TeacherReply", "UsageMeter", "EngineLM", "teacher_dir"]

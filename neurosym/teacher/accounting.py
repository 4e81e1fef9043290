"""Token, cost and failure accounting for teacher calls, with a budget cap.

:class:`TeacherUsage` is shared by all threads of one engine; its :meth:`~TeacherUsage.state_dict`
is plain JSON so a checkpoint can save it and a resumed run can carry on counting (and keep
respecting the budget). :meth:`TeacherUsage.meter` measures the calls made by the current thread
inside a ``with`` block, e.g. the cost of one symbolic update.
"""
from __future__ import annotations

import contextlib
import threading
from dataclasses import asdict, dataclass, field
from typing import Any, Iterator, Optional

from .errors import BudgetExhausted

_COUNTERS = ("calls", "cache_hits", "prompt_tokens", "completion_tokens", "retries")


@dataclass
class UsageMeter:
    """Usage of the calls made by one thread inside :meth:`TeacherUsage.meter`."""
    calls: int = 0
    cache_hits: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0
    latency_s: float = 0.0
    failures: dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class TeacherUsage:
    """Counters for one teacher: calls, cache hits, tokens in/out, cost, retries, failures by kind.

    :param price_input: USD per 1k prompt tokens.
    :param price_output: USD per 1k completion tokens.
    :param budget_usd: spend cap; ``None`` = unlimited. Once ``cost_usd >= budget_usd`` every new
        paid call raises :class:`BudgetExhausted`. Calls already in flight when the cap is reached
        still complete, so the overshoot is at most ``max_concurrency`` calls.
    """

    def __init__(self, price_input: float = 0.0, price_output: float = 0.0,
                 budget_usd: Optional[float] = None):
        self.price_input = float(price_input)
        self.price_output = float(price_output)
        self.budget_usd = None if budget_usd is None else float(budget_usd)
        self._lock = threading.Lock()
        self._local = threading.local()
        self.calls = 0
        self.cache_hits = 0
        self.prompt_tokens = 0
        self.completion_tokens = 0
        self.retries = 0
        self.cost_usd = 0.0
        self.latency_s = 0.0
        self.failures: dict[str, int] = {}

    # -- costs and budget -------------------------------------------------------------------------
    def estimate_cost(self, prompt_tokens: int, completion_tokens: int) -> float:
        """USD for a call with these token counts at the configured prices."""
        return (prompt_tokens * self.price_input + completion_tokens * self.price_output) / 1000.0

    @property
    def budget_left(self) -> Optional[float]:
        """USD left before the cap (never negative); ``None`` when there is no cap."""
        if self.budget_usd is None:
            return None
        with self._lock:
            return max(0.0, self.budget_usd - self.cost_usd)

    def check_budget(self) -> None:
        """Raise :class:`BudgetExhausted` if the budget is spent (and count it as a failure)."""
        if self.budget_usd is None:
            return
        with self._lock:
            spent = self.cost_usd
        if spent >= self.budget_usd:
            self.record_failure("budget")
            raise BudgetExhausted(
                f"teacher budget spent: ${spent:.4f} of teacher.budget_usd=${self.budget_usd:.4f}; "
                "raise teacher.budget_usd to allow more teacher calls (cached answers are still served)")

    # -- recording --------------------------------------------------------------------------------
    def record_call(self, prompt_tokens: int, completion_tokens: int, latency_s: float = 0.0) -> float:
        """Count one paid call; returns its cost in USD."""
        prompt_tokens, completion_tokens = max(0, int(prompt_tokens)), max(0, int(completion_tokens))
        cost = max(0.0, self.estimate_cost(prompt_tokens, completion_tokens))
        with self._lock:
            self.calls += 1
            self.prompt_tokens += int(prompt_tokens)
            self.completion_tokens += int(completion_tokens)
            self.cost_usd += cost
            self.latency_s += latency_s
        for m in self._meters():
            m.calls += 1
            m.prompt_tokens += int(prompt_tokens)
            m.completion_tokens += int(completion_tokens)
            m.cost_usd += cost
            m.latency_s += latency_s
        return cost

    def record_cache_hit(self) -> None:
        with self._lock:
            self.cache_hits += 1
        for m in self._meters():
            m.cache_hits += 1

    def record_retry(self) -> None:
        with self._lock:
            self.retries += 1

    def record_failure(self, kind: str) -> None:
        """Count one failed attempt of class ``kind`` (timeout, rate_limit, server_error, ...)."""
        with self._lock:
            self.failures[kind] = self.failures.get(kind, 0) + 1
        for m in self._meters():
            m.failures[kind] = m.failures.get(kind, 0) + 1

    # -- per-thread meters ------------------------------------------------------------------------
    def _meters(self) -> list[UsageMeter]:
        return getattr(self._local, "meters", [])

    @contextlib.contextmanager
    def meter(self) -> Iterator[UsageMeter]:
        """Measure the calls this thread makes inside the block (nested meters all count)."""
        m = UsageMeter()
        meters = self._local.__dict__.setdefault("meters", [])
        meters.append(m)
        try:
            yield m
        finally:
            meters.remove(m)

    # -- checkpointing ----------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Plain-JSON snapshot of the counters (prices and budget come from the config)."""
        with self._lock:
            state: dict[str, Any] = {k: getattr(self, k) for k in _COUNTERS}
            state.update(cost_usd=self.cost_usd, latency_s=self.latency_s, failures=dict(self.failures))
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore counters saved by :meth:`state_dict` (missing keys count as zero)."""
        unknown = set(state) - set(_COUNTERS) - {"cost_usd", "latency_s", "failures"}
        if unknown:
            raise ValueError(f"unknown teacher usage keys in checkpoint: {sorted(unknown)}")
        with self._lock:
            for k in _COUNTERS:
                setattr(self, k, int(state.get(k, 0)))
            self.cost_usd = float(state.get("cost_usd", 0.0))
            self.latency_s = float(state.get("latency_s", 0.0))
            self.failures = {str(k): int(v) for k, v in dict(state.get("failures", {})).items()}

    def __repr__(self) -> str:
        s = self.state_dict()
        return (f"TeacherUsage(calls={s['calls']}, cache_hits={s['cache_hits']}, "
                f"tokens={s['prompt_tokens']}/{s['completion_tokens']}, cost_usd={s['cost_usd']:.6f}, "
                f"budget_left={self.budget_left}, failures={s['failures']})")

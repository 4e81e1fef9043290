"""``OpenAITeacher``: the teacher behind any OpenAI-compatible chat-completions endpoint.

Built on ``openai.OpenAI(base_url=teacher.base_url, api_key=$teacher.api_key_env, max_retries=0,
timeout=teacher.timeout_s)``; retries are ours:

* 429: wait ``Retry-After`` (or ``retry-after-ms``) when given, else jittered exponential backoff;
  a 429 ``insufficient_quota`` is not retried;
* 5xx, 408, 409, timeouts and connection errors: jittered exponential backoff;
* up to ``teacher.max_retries`` retries, then :class:`TeacherUnavailable`;
* 401/403/404 raise :class:`TeacherConfigError` at once; other 4xx :class:`TeacherUnavailable`.

The key is read from the environment once and only handed to the client; it never appears in a
message, log line or repr, and the environment is never written.
"""
from __future__ import annotations

import logging
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

import openai

from neurosym.config import TeacherConfig

from .apikey import read_api_key, redact
from .base import CachedTeacher, Completion
from .errors import TeacherConfigError, TeacherUnavailable
from .protocol import OPENAI_URL, error_detail, is_model_not_found, retry_after_s

log = logging.getLogger("neurosym.teacher")


@dataclass
class Backoff:
    """Jittered exponential backoff: attempt ``n`` waits ``min(max_s, base_s * 2**n) * U(0.5, 1)``.

    A server's ``Retry-After`` is honoured as given (never shortened); one longer than
    ``max_retry_after_s`` is not worth blocking training for, so the call fails instead.
    """
    base_s: float = 0.5
    max_s: float = 20.0
    max_retry_after_s: float = 60.0

    def delay(self, attempt: int, rng: random.Random) -> float:
        return min(self.max_s, self.base_s * (2 ** attempt)) * rng.uniform(0.5, 1.0)


class OpenAITeacher(CachedTeacher):
    """TextGrad engine over an OpenAI-compatible server (OpenAI, vLLM, Ollama, llama.cpp, ...).

    :param cfg: ``teacher`` config (``provider: openai``).
    :param run_dir: run directory (cache and logs go under ``<run_dir>/teacher/``).
    :param backoff: retry timing (tests use small values).
    :param sleep: the wait function (tests may record waits).
    :param seed: seeds the backoff jitter.
    """

    def __init__(self, cfg: TeacherConfig, run_dir: str | Path, *, backoff: Optional[Backoff] = None,
                 sleep: Callable[[float], None] = time.sleep, seed: Optional[int] = None, **kw: Any):
        api_key = read_api_key(cfg.api_key_env)  # before anything is created: fail fast
        super().__init__(cfg, run_dir, **kw)
        self.base_url = cfg.base_url or OPENAI_URL
        self.backoff = backoff or Backoff()
        self._sleep = sleep
        self._rng = random.Random(seed)
        self._client = openai.OpenAI(base_url=cfg.base_url, api_key=api_key, max_retries=0,
                                     timeout=cfg.timeout_s)
        # only for scrubbing messages; kept off the instance's repr and never written anywhere
        self._redact: Callable[[str], str] = lambda text, _k=api_key: redact(text, _k)

    def _request(self, messages: list[dict], params: dict[str, Any]) -> Completion:
        attempts = self.cfg.max_retries + 1
        last = ""
        for attempt in range(attempts):
            status_error: Optional[openai.APIStatusError] = None
            try:
                response = self._client.chat.completions.create(
                    model=self.model_string, messages=messages, **params)
            except openai.APITimeoutError:
                kind, wait = "timeout", None
                last = f"no answer within teacher.timeout_s={self.cfg.timeout_s}s"
            except openai.APIConnectionError as exc:
                kind, wait = "connection", None
                last = f"cannot connect ({self._redact(str(exc.__cause__ or exc))})"
            except openai.APIStatusError as exc:
                status_error = exc
            else:
                return self._parse(response, messages)
            if status_error is not None:
                # classified outside the except block: our exceptions carry no __context__, whose
                # message (the server's body) may echo the key
                kind, wait, last = self._classify(status_error)
                status_error = None
            self.usage.record_failure(kind)
            if attempt + 1 >= attempts:
                break
            delay = self.backoff.delay(attempt, self._rng) if wait is None else wait
            self.usage.record_retry()
            log.warning("teacher %s at %s: %s; retry %d/%d in %.2fs", self.model_string, self.base_url,
                        last, attempt + 1, self.cfg.max_retries, delay)
            self._sleep(delay)
        raise TeacherUnavailable(
            f"teacher {self.model_string!r} at {self.base_url} unavailable after {attempts} attempt(s): {last} "
            "(raise teacher.max_retries / teacher.timeout_s, or check the server)", kind=kind)

    def _classify(self, exc: openai.APIStatusError) -> tuple[str, Optional[float], str]:
        """(failure kind, wait before retry or None for backoff, message); raises when not retryable."""
        status = exc.status_code
        detail = self._redact(error_detail(exc))
        where = f"{status} from {self.base_url}"
        if status == 429:
            if getattr(exc, "code", None) == "insufficient_quota" or "quota" in detail.lower():
                self.usage.record_failure("quota")
                raise TeacherUnavailable(f"{where}: quota exhausted for the key in ${self.cfg.api_key_env}: {detail}",
                                         kind="quota") from None
            wait = retry_after_s(exc.response)
            if wait is not None and wait > self.backoff.max_retry_after_s:
                self.usage.record_failure("rate_limit")
                raise TeacherUnavailable(f"{where}: rate limited, Retry-After {wait:.0f}s is too long to wait",
                                         kind="rate_limit") from None
            return "rate_limit", wait, f"{where}: rate limited ({detail})"
        if status >= 500 or status in (408, 409):
            return "server_error", None, f"{where}: {detail}"
        if status in (401, 403):
            self.usage.record_failure("auth")
            raise TeacherConfigError(
                f"{where}: the key in ${self.cfg.api_key_env} was rejected ({detail}); "
                f"set a valid key in ${self.cfg.api_key_env} (teacher.api_key_env)") from None
        if status == 404:
            self.usage.record_failure("not_found")
            if is_model_not_found(exc):
                raise TeacherConfigError(
                    f"model {self.model_string!r} not found at {self.base_url}; set teacher.model") from None
            raise TeacherConfigError(
                f"{self.base_url}/chat/completions not found (404); teacher.base_url should be the API root, "
                "usually ending in /v1") from None
        self.usage.record_failure("bad_request")
        raise TeacherUnavailable(f"{where}: request rejected: {detail}", kind="bad_request") from None

    def _parse(self, response: Any, messages: list[dict]) -> Completion:
        try:
            text = response.choices[0].message.content or ""
        except (AttributeError, IndexError, TypeError):
            self.usage.record_failure("malformed_response")
            raise TeacherUnavailable(f"teacher at {self.base_url} sent a completion without choices",
                                     kind="malformed_response") from None
        usage = getattr(response, "usage", None)
        if usage is not None and usage.prompt_tokens is not None:
            return Completion(text, int(usage.prompt_tokens), int(usage.completion_tokens or 0))
        # No usage reported (some servers): estimate ~4 characters per token so costs are not zero.
        self.usage.record_failure("no_usage")
        prompt_chars = sum(len(str(m.get("content", ""))) for m in messages)
        return Completion(text, prompt_chars // 4, len(text) // 4)

    def close(self) -> None:
        super().close()
        self._client.close()

    def __repr__(self) -> str:
        return f"OpenAITeacher(model={self.model_string!r}, base_url={self.base_url!r})"

"""``OpenAITeacher``: the teacher behind any OpenAI-compatible chat-completions endpoint.

Built on ``openai.OpenAI(base_url=teacher.base_url, api_key=$teacher.api_key_env, max_retries=0)``;
the body is read by us, chunk by chunk, so that:

* ``teacher.timeout_s`` is a total deadline per attempt (connect + wait + body): a server that
  trickles its answer a byte at a time cannot hold a call longer than that;
* one call, retries and waits included, ends within ``timeout_s * (max_retries + 1)``: a wait
  (backoff or ``Retry-After``) that would pass that deadline is not taken;
* a body larger than ``teacher.max_response_chars`` allows is cut off (``too_large``);
* a body that is not the JSON of a chat completion (invalid JSON, no ``choices``, wrong types) is a
  ``malformed_response`` fault, retried like a 5xx - never an uncaught exception;
* token counts are untrusted (see :meth:`CachedTeacher._sane_usage`).

What the openai client does, and what we add. The client sends the request, parses error bodies
into its exception classes (``APIStatusError`` with the status, ``APITimeoutError``,
``APIConnectionError``) and applies per-operation timeouts of its HTTP library (connect, each read);
we use all of that. Its own retry loop (``max_retries``, jittered backoff, ``Retry-After`` up to
2 min in openai 3.x) is switched off (``max_retries=0``) because it cannot do what a training loop
needs, and ours is only that:

* a **total deadline**: each attempt within ``timeout_s`` (a per-read timeout lets a trickling body
  run on forever), the whole call within ``timeout_s * (max_retries + 1)``, and a wait (backoff or
  ``Retry-After``) that would pass it is not taken - the client sleeps what it is told (up to 2 min
  a retry) with no overall bound;
* **abort** from another thread (a stop: SIGTERM, Ctrl-C), retry waits included - the client's
  waits and reads cannot be interrupted;
* **fault classes** the client does not make: a body that is not a chat completion is a retried
  ``malformed_response`` (the client never retries a 200), a 429
  ``insufficient_quota`` is not retried (the client retries every 429), 401/403/404 raise
  :class:`TeacherDown` at once (``permanent``; also a ``TeacherConfigError``), other 4xx
  :class:`TeacherUnavailable`; each failure is counted by kind (``teacher.usage.failures``);
* ``Retry-After`` / ``retry-after-ms`` honoured as given, never shortened (one longer than
  ``Backoff.max_retry_after_s`` fails the call instead); read from the response by
  :func:`~.protocol.retry_after_s`, since the client's parser is private;
* 5xx, 408, 409, timeouts, connection errors and malformed bodies: jittered exponential backoff, up
  to ``teacher.max_retries`` retries, then :class:`TeacherUnavailable`.

The key is read from the environment once and only handed to the client; it never appears in a
message, log line or repr, and the environment is never written. Credentials inside
``teacher.base_url`` (``https://user:pass@host``) are scrubbed from every message and log line too.
:meth:`OpenAITeacher.abort` makes calls in flight (and their retry waits) end promptly.
"""
from __future__ import annotations

import json
import logging
import random
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

import openai

from neurosym.config.schema import TeacherConfig, redact_url, url_secrets

from .apikey import read_api_key, redact
from .base import CachedTeacher, Completion
from .errors import TeacherDown, TeacherUnavailable
from .protocol import (OPENAI_URL, _check_saved_url, _client, error_detail, is_model_not_found, retry_after_s,
                       timeout as http_timeout, transport_errors)

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


class _Fault(Exception):
    """One failed attempt: (kind, message), retried by :meth:`OpenAITeacher._request`."""

    def __init__(self, kind: str, message: str, retry: bool = True):
        super().__init__(message)
        self.kind, self.message, self.retry = kind, message, retry
        self.wait: Optional[float] = None       # a server-given wait before the retry (Retry-After)
        self.billed: Optional[tuple[int, int]] = None  # tokens to count although the call failed


def _jsonable_int(value: Any) -> Any:
    """An int from a JSON number, else the value as it came (judged by ``_sane_usage``)."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


class OpenAITeacher(CachedTeacher):
    """TextGrad engine over an OpenAI-compatible server (OpenAI, vLLM, Ollama, llama.cpp, ...).

    :param cfg: ``teacher`` config (``provider: openai``).
    :param run_dir: run directory (cache and logs go under ``<run_dir>/teacher/``).
    :param backoff: retry timing (tests use small values).
    :param sleep: the wait function (tests may record waits; the default wakes up on :meth:`abort`).
    :param seed: seeds the backoff jitter.
    """

    #: bytes of JSON a body may take per character of answer (escapes, the envelope) plus slack
    BODY_BYTES_PER_CHAR, BODY_SLACK_BYTES = 8, 64 * 1024

    def __init__(self, cfg: TeacherConfig, run_dir: str | Path, *, backoff: Optional[Backoff] = None,
                 sleep: Optional[Callable[[float], None]] = None, seed: Optional[int] = None, **kw: Any):
        api_key = read_api_key(cfg.api_key_env)  # before anything is created: fail fast
        _check_saved_url(cfg)
        super().__init__(cfg, run_dir, **kw)
        self.base_url = redact_url(cfg.base_url or OPENAI_URL)   # what messages and logs show
        self.backoff = backoff or Backoff()
        self._sleep = sleep or self._aborted.wait   # wakes up on abort()
        self._rng = random.Random(seed)
        self._rng_lock = threading.Lock()
        self._client = _client(cfg.base_url, api_key, cfg.timeout_s)
        # only for scrubbing messages; kept off the instance's repr and never written anywhere
        secrets = [api_key, *url_secrets(cfg.base_url)]
        self._redact: Callable[[str], str] = lambda text, _s=tuple(secrets): _scrub(text, _s)

    # -- the call ---------------------------------------------------------------------------------
    def _request(self, messages: list[dict], params: dict[str, Any]) -> Completion:
        attempts = self.cfg.max_retries + 1
        overall = time.monotonic() + self.cfg.timeout_s * attempts
        last, kind = "", "unavailable"
        for attempt in range(attempts):
            self._check_aborted()
            attempt_deadline = min(time.monotonic() + self.cfg.timeout_s, overall)
            try:
                return self._attempt(messages, params, attempt_deadline)
            except _Fault as fault:
                kind, last = fault.kind, fault.message
                retry_wait = fault.wait
                retryable = fault.retry
            self.usage.record_failure(kind)
            if not retryable or attempt + 1 >= attempts:
                break
            with self._rng_lock:
                delay = self.backoff.delay(attempt, self._rng) if retry_wait is None else retry_wait
            if time.monotonic() + delay >= overall:
                last += (f"; the next retry (in {delay:.1f}s) would pass the call's deadline of "
                         f"teacher.timeout_s x (teacher.max_retries + 1) = {self.cfg.timeout_s * attempts:g}s")
                break
            self.usage.record_retry()
            log.warning("teacher %s at %s: %s; retry %d/%d in %.2fs", self.model_string, self.base_url,
                        last, attempt + 1, self.cfg.max_retries, delay)
            self._sleep(delay)
        self._check_aborted()
        raise TeacherUnavailable(
            f"teacher {self.model_string!r} at {self.base_url} unavailable after {attempt + 1} attempt(s): {last} "
            "(raise teacher.max_retries / teacher.timeout_s, or check the server)", kind=kind)

    def _attempt(self, messages: list[dict], params: dict[str, Any], deadline: float) -> Completion:
        """One request under ``deadline``; raises :class:`_Fault` on failure.

        The request runs on a helper thread while this one waits for it, the deadline or
        :meth:`abort`, whichever comes first: neither a server that trickles its body nor one
        that never answers can hold the caller past the deadline. A request given up on is told
        to stop at its next chunk (its per-read timeout bounds it otherwise); its thread is a
        daemon. All accounting happens on this thread (usage meters are per thread)."""
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise _Fault("deadline", "no time left under the call's deadline")
        timeout = http_timeout(remaining, min(5.0, remaining))
        cancel, done, box = threading.Event(), threading.Event(), {}

        def fetch() -> None:
            try:
                box["body"] = self._fetch(messages, params, timeout, cancel)
            except BaseException as exc:  # noqa: BLE001 - handed to the waiting thread
                box["error"] = exc
            finally:
                done.set()

        threading.Thread(target=fetch, name="teacher-request", daemon=True).start()
        while not done.wait(max(0.0, min(0.05, deadline - time.monotonic()))):
            if self._aborted.is_set():
                cancel.set()
                raise _Fault("aborted", "call aborted (shutting down)", retry=False)
            if time.monotonic() >= deadline:
                cancel.set()
                raise _Fault("timeout", f"no complete answer within teacher.timeout_s={self.cfg.timeout_s}s "
                                         "(the server is stuck or sending it very slowly)")
        error = box.get("error")
        if error is None:
            return self._parse(box["body"], messages)
        if isinstance(error, _Fault):
            if error.billed:
                self.usage.record_call(*error.billed)
            raise error
        if isinstance(error, openai.APIStatusError):
            # classified here, outside any except block: our exceptions carry no __context__,
            # whose message (the server's body) may echo the key
            raise self._classify(error)
        timeouts, transport = transport_errors()   # httpx2's under openai>=3, httpx's before
        if isinstance(error, (openai.APITimeoutError, *timeouts)):
            raise _Fault("timeout", f"no answer within teacher.timeout_s={self.cfg.timeout_s}s")
        if isinstance(error, openai.APIConnectionError):
            raise _Fault("connection", f"cannot connect ({self._redact(str(error.__cause__ or error))})")
        if isinstance(error, (*transport, OSError)):
            raise _Fault("connection", f"connection broke while reading ({type(error).__name__})")
        raise error  # a bug, not a server fault: let it surface

    def _fetch(self, messages: list[dict], params: dict[str, Any], timeout: Any,
               cancel: threading.Event) -> bytes:
        """The response body (helper thread): read chunk by chunk, stopping on ``cancel`` or at the
        size cap (``too_large``, with what arrived billed to the budget by the caller)."""
        limit = self.cfg.max_response_chars * self.BODY_BYTES_PER_CHAR + self.BODY_SLACK_BYTES
        chunks, size = [], 0
        with self._client.chat.completions.with_streaming_response.create(
                model=self.model_string, messages=messages, timeout=timeout, **params) as response:
            for chunk in response.iter_bytes():
                if cancel.is_set():
                    raise _Fault("aborted", "request given up", retry=False)
                size += len(chunk)
                if size > limit:
                    fault = _Fault("too_large", f"answer body over {limit:,} bytes (teacher.max_response_chars="
                                                f"{self.cfg.max_response_chars:,}); cut off", retry=False)
                    # the server billed for it: count what arrived (~4 bytes a token) against the budget
                    fault.billed = (self._estimate(messages, "")[0], size // 4)
                    raise fault
                chunks.append(chunk)
        return b"".join(chunks)

    def _classify(self, exc: openai.APIStatusError) -> _Fault:
        """The fault for an HTTP error status; raises at once when retrying cannot help."""
        status = exc.status_code
        detail = self._redact(error_detail(exc))
        where = f"{status} from {self.base_url}"
        if status == 429:
            if getattr(exc, "code", None) == "insufficient_quota" or "quota" in detail.lower():
                return _Fault("quota", f"{where}: quota exhausted for the key in ${self.cfg.api_key_env}: {detail}",
                              retry=False)
            wait = retry_after_s(exc.response)
            if wait is not None and wait > self.backoff.max_retry_after_s:
                return _Fault("rate_limit", f"{where}: rate limited, Retry-After {wait:.0f}s is too long to wait",
                              retry=False)
            fault = _Fault("rate_limit", f"{where}: rate limited ({detail})")
            fault.wait = wait
            return fault
        if status >= 500 or status in (408, 409):
            return _Fault("server_error", f"{where}: {detail}")
        if status in (401, 403):
            kind = "auth" if status == 401 else "forbidden"
            self.usage.record_failure(kind)
            raise TeacherDown(
                f"{where}: the key in ${self.cfg.api_key_env} was rejected ({detail}); "
                f"set a valid key in ${self.cfg.api_key_env} (teacher.api_key_env)", kind=kind) from None
        if status == 404:
            self.usage.record_failure("not_found")
            if is_model_not_found(exc):
                raise TeacherDown(f"model {self.model_string!r} not found at {self.base_url}; set teacher.model",
                                  kind="not_found") from None
            raise TeacherDown(
                f"{self.base_url}/chat/completions not found (404); teacher.base_url should be the API root, "
                "usually ending in /v1", kind="not_found") from None
        return _Fault("bad_request", f"{where}: request rejected: {detail}", retry=False)

    def _parse(self, body: bytes, messages: list[dict]) -> Completion:
        """A :class:`Completion` from the JSON body; :class:`_Fault` ``malformed_response`` if it is not
        a chat completion (invalid JSON, no choices, content not text)."""
        def bad(why: str) -> _Fault:
            return _Fault("malformed_response", f"teacher at {self.base_url} sent {why}")

        try:
            data = json.loads(body.decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            raise bad(f"a body that is not JSON ({len(body):,} bytes: {self._redact(body[:80].decode('utf-8', 'replace'))!r})") from None
        if not isinstance(data, dict):
            raise bad(f"JSON that is not an object ({type(data).__name__})")
        choices = data.get("choices")
        if not isinstance(choices, list) or not choices:
            raise bad("a completion without choices")
        first = choices[0]
        message = first.get("message") if isinstance(first, dict) else None
        if not isinstance(message, dict):
            raise bad("a choice without a message")
        text = message.get("content")
        if text is None:
            text = ""
        if not isinstance(text, str):
            raise bad(f"message content of type {type(text).__name__}, not text")
        usage = data.get("usage")
        if isinstance(usage, dict) and usage.get("prompt_tokens") is not None:
            return Completion(text, _jsonable_int(usage.get("prompt_tokens")),
                              _jsonable_int(usage.get("completion_tokens", 0) or 0))
        # No usage reported (some servers): estimate ~4 characters per token so costs are not zero.
        self.usage.record_failure("no_usage")
        return Completion(text, *self._estimate(messages, text))

    def close(self) -> None:
        super().close()
        self._client.close()

    def __repr__(self) -> str:
        return f"OpenAITeacher(model={self.model_string!r}, base_url={self.base_url!r})"


def _scrub(text: str, secrets: tuple) -> str:
    text = redact_url(text)
    for secret in secrets:
        text = redact(text, secret)
    return text

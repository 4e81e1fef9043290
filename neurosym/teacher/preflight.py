"""``preflight(cfg)``: one cheap request at job start, so a bad teacher setting fails in seconds.

For ``provider: openai`` it sends a 1-token chat completion (this checks the URL, the key, the
model and the endpoint at once; llama.cpp-style servers that ignore the model name pass). For
``provider: local`` it loads the model's config. Every failure is a :class:`TeacherConfigError`
whose message names the ``teacher.*`` key to fix; none contains the key itself.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Optional

from neurosym.config.schema import TeacherConfig

from .apikey import read_api_key, redact
from .errors import TeacherConfigError

CONNECT_TIMEOUT_S = 5.0
LOCAL_MIN_CONTEXT = 4096  # tokens a local teacher should hold for TextGrad's prompts


@dataclass(frozen=True)
class PreflightResult:
    provider: str
    model: str
    base_url: Optional[str]
    latency_s: float
    note: str = ""


def preflight(cfg: TeacherConfig, *, timeout_s: Optional[float] = None) -> PreflightResult:
    """Check the teacher is reachable and accepts the key and model; raise :class:`TeacherConfigError`.

    :param timeout_s: read timeout of the test request (default ``teacher.timeout_s``; a model that
        loads on first use, as with Ollama, may need it). Connecting is capped at 5 s.
    """
    if cfg.provider == "local":
        return _preflight_local(cfg)
    return _preflight_openai(cfg, timeout_s)


def _preflight_local(cfg: TeacherConfig) -> PreflightResult:
    from neurosym.model.tiny import TINY_SCHEME

    t0 = time.monotonic()
    note = ""
    if not cfg.model.startswith(TINY_SCHEME):
        from transformers import AutoConfig

        try:
            model_cfg = AutoConfig.from_pretrained(cfg.model)
        except (OSError, ValueError) as exc:
            raise TeacherConfigError(
                f"teacher.model {cfg.model!r} (teacher.provider: local) is neither a model directory nor a "
                f"hub id in the local cache ({str(exc).splitlines()[0]}); set teacher.model") from None
        ctx = getattr(model_cfg, "max_position_embeddings", None)
        if ctx and ctx < LOCAL_MIN_CONTEXT:
            note = (f"context of only {ctx} tokens: TextGrad's prompts run to a few thousand; those that do not "
                    "fit are refused (a teacher fault), never cut")
    return PreflightResult("local", cfg.model, None, time.monotonic() - t0, note=note)


def _connect_reason(exc: BaseException) -> str:
    text = f"{exc} {exc.__cause__ or ''}".lower()
    if "refused" in text:
        return "connection refused — is the server running?"
    if "name or service not known" in text or "nodename nor servname" in text or "getaddrinfo" in text \
            or "name resolution" in text:
        return "host not found — check the host name"
    if "ssl" in text or "certificate" in text:
        return "TLS/SSL error — check http:// vs https://"
    return f"cannot connect ({str(exc.__cause__ or exc)[:200]})"


def _preflight_openai(cfg: TeacherConfig, timeout_s: Optional[float]) -> PreflightResult:
    import openai

    from .protocol import OPENAI_URL, timeout as http_timeout, transport_errors

    from neurosym.config.schema import redact_url, url_secrets

    from .protocol import _check_saved_url, _client

    key = read_api_key(cfg.api_key_env)
    _check_saved_url(cfg)
    url = redact_url(cfg.base_url or OPENAI_URL)
    secrets = [key, *url_secrets(cfg.base_url)]

    def redact(text: str, _key: str = "") -> str:  # every secret: the key and the URL's credentials
        from .apikey import redact as redact_one
        text = redact_url(text)
        for s in secrets:
            text = redact_one(text, s)
        return text

    env = f"${cfg.api_key_env}" if cfg.api_key_env else "(no key: teacher.api_key_env is empty)"
    read_timeout = timeout_s or cfg.timeout_s
    timeout = http_timeout(read_timeout, min(CONNECT_TIMEOUT_S, read_timeout))
    t0 = time.monotonic()
    try:
        client = _client(cfg.base_url, key, timeout)
    except Exception as exc:  # e.g. an unparsable URL
        raise TeacherConfigError(f"teacher.base_url {url}: {redact(str(exc), key)}") from None
    status_error: Optional[openai.APIStatusError] = None
    try:
        client.chat.completions.create(model=cfg.model, messages=[{"role": "user", "content": "Reply OK."}],
                                       max_tokens=1, temperature=0)
        client.close()
        return PreflightResult("openai", cfg.model, url, time.monotonic() - t0)
    except openai.APITimeoutError:
        problem = (f"teacher.base_url {url}: no answer within {read_timeout:g}s — the server is slow or stuck; "
                   "check it, or raise teacher.timeout_s")
    except openai.APIConnectionError as exc:
        problem = f"teacher.base_url {url}: {redact(_connect_reason(exc), key)}"
    except openai.APIStatusError as exc:
        status_error = exc
        problem = ""
    except (ValueError, TypeError, KeyError, AttributeError, *transport_errors()[1]) as exc:  # a body we cannot read
        problem = (f"teacher.base_url {url} answered with something that is not an OpenAI chat completion "
                   f"({type(exc).__name__}); check that it is the API root of an OpenAI-compatible server "
                   "(usually ending in /v1)")
    if status_error is not None:  # handled outside the except block: no __context__ echoing the key
        problem, ok_note = _status_problem(status_error, cfg, client, key, url, env, redact)
        if ok_note:
            client.close()
            return PreflightResult("openai", cfg.model, url, time.monotonic() - t0, note=ok_note)
    client.close()
    raise TeacherConfigError(problem)


def _status_problem(exc, cfg: TeacherConfig, client, key: str, url: str, env: str,
                    redact=redact) -> tuple[str, str]:
    """(error message, '') for a failed preflight, or ('', note) when the status means 'fine'."""
    from .protocol import error_detail, is_model_not_found

    status, detail = exc.status_code, redact(error_detail(exc), key)
    if status == 401:
        return (f"401 from {url}: the key in {env} was rejected ({detail}); set a valid key in {env} "
                "or point teacher.api_key_env at the variable that holds it"), ""
    if status == 403:
        return (f"403 from {url}: the key in {env} may not use model {cfg.model!r} ({detail}); "
                "check teacher.model and the key's permissions"), ""
    if status == 404 and is_model_not_found(exc):
        return f"model {cfg.model!r} not found at {url}{redact(_available(client, key))}; set teacher.model", ""
    if status == 404:
        return (f"{url}/chat/completions not found (404); teacher.base_url should be the API root of an "
                "OpenAI-compatible server, usually ending in /v1"), ""
    if status == 429:
        if getattr(exc, "code", None) == "insufficient_quota" or "quota" in detail.lower():
            return f"429 from {url}: quota exhausted for the key in {env} ({detail})", ""
        return "", "rate limited at preflight; key and model accepted"
    return f"{status} from {url} for model {cfg.model!r}: {detail} — check teacher.model and the server", ""


def _available(client, key: str) -> str:
    """'(available: a, b)' from GET /models, best effort."""
    try:
        ids = sorted(m.id for m in client.models.list())
    except Exception:
        return ""
    if not ids:
        return ""
    shown = ", ".join(ids[:10]) + (", ..." if len(ids) > 10 else "")
    return redact(f" (available: {shown})", key)


def check_teacher(cfg: TeacherConfig, *, timeout_s: Optional[float] = None) -> str:
    """One line for ``neurosym validate``: the teacher is reachable, the key accepted, the model
    served, and what a token costs. Raises :class:`TeacherConfigError` (a user error: exit 2) with
    the key to fix otherwise. Makes one 1-token request (``provider: openai``) or reads the model's
    config (``local``); writes nothing."""
    from .pricing import resolve_price

    res = preflight(cfg, timeout_s=timeout_s)
    price = resolve_price(cfg, warn=False)
    if res.provider == "local":
        head = f"teacher ok: local model {res.model} found"
    else:
        head = (f"teacher ok: {res.base_url} reachable, key accepted, model {res.model!r} served "
                f"({res.latency_s:.2f}s)")
    if res.note:
        head += f" [{res.note}]"
    line = f"{head}; {price.describe()}"
    if not price.enforceable:
        line += ("; teacher.budget_usd cannot be enforced: set teacher.price_per_1k_tokens"
                 if cfg.budget_usd is not None else "; set teacher.price_per_1k_tokens to count its cost")
    return line

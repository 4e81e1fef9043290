"""Small helpers for the OpenAI protocol: the client, reading error responses (no TextGrad import here)."""
from __future__ import annotations

import email.utils
import time
from typing import Any, Optional

import httpx

OPENAI_URL = "https://api.openai.com/v1"


def retry_after_s(response: Optional[httpx.Response]) -> Optional[float]:
    """Seconds from ``retry-after-ms`` / ``Retry-After`` (seconds or an HTTP date), else ``None``."""
    if response is None:
        return None
    headers = response.headers
    try:
        if headers.get("retry-after-ms"):
            return max(0.0, float(headers["retry-after-ms"]) / 1000.0)
    except ValueError:
        pass
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
        return max(0.0, when.timestamp() - time.time())
    except (TypeError, ValueError):
        return None


def error_detail(exc: Any) -> str:
    """The server's error message, short."""
    body = exc.body
    if isinstance(body, dict):
        msg = body.get("message") or body.get("detail") or body
    else:
        msg = body if body is not None else exc.message
    return str(msg)[:300]


def is_model_not_found(exc: Any) -> bool:
    """A 404 about the model (vs. a 404 because the URL path is wrong)."""
    code = getattr(exc, "code", None)
    return code == "model_not_found" or "model" in error_detail(exc).lower()


def split_credentials(url: Optional[str]) -> tuple[Optional[str], Optional[httpx.BasicAuth]]:
    """``https://user:pass@host/v1`` -> (``https://host/v1``, BasicAuth(user, pass)); others unchanged."""
    if not url or "@" not in url:
        return url, None
    parts = httpx.URL(url)
    if not (parts.username or parts.password):
        return url, None
    return str(parts.copy_with(username=None, password=None)), httpx.BasicAuth(parts.username, parts.password)


def _client(base_url: Optional[str], api_key: str, timeout_s: Any, **kw: Any) -> Any:
    """The OpenAI client. Credentials in the URL become HTTP basic auth (what httpx would have done
    with them), so the URL that the openai/httpx loggers print carries none."""
    import openai

    url, auth = split_credentials(base_url)
    if auth is not None:
        kw["http_client"] = openai.DefaultHttpxClient(auth=auth)
    return openai.OpenAI(base_url=url, api_key=api_key, max_retries=0, timeout=timeout_s, **kw)


def _check_saved_url(cfg: Any) -> None:
    """A base_url whose credentials were redacted when the run's config.yaml was saved cannot work."""
    from .errors import TeacherConfigError

    if cfg.base_url and "://***@" in cfg.base_url:
        raise TeacherConfigError(
            f"teacher.base_url {cfg.base_url} had credentials, which are never saved in a run's config.yaml; "
            "give it again (--set teacher.base_url=https://user:pass@host/v1), or put the key in "
            "teacher.api_key_env instead")

"""Small helpers for reading OpenAI-protocol error responses (no TextGrad import here)."""
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

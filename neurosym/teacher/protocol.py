"""Small helpers for the OpenAI protocol: the client, reading error responses (no TextGrad import here).

The ``openai`` package builds its client on an HTTP library that changed between its major
versions: ``httpx`` under openai 1.x, the separate ``httpx2`` package under openai 3.x. An object of the other
library (a ``BasicAuth``, a ``Timeout``) is refused or only accepted through a shim, and its
exceptions are not the ones raised. :func:`http_lib` names the library the installed ``openai``
uses; every auth, timeout and exception class here and in the engine comes from it (and
:func:`transport_errors` also covers the other one when it is loaded), so neurosym imports neither
by name.
"""
from __future__ import annotations

import email.utils
import functools
import importlib
import sys
import time
from typing import Any, Optional

OPENAI_URL = "https://api.openai.com/v1"
_HTTP_LIBS = ("httpx2", "httpx")


@functools.lru_cache(maxsize=1)
def http_lib() -> Any:
    """The HTTP module the installed ``openai`` builds its client on (``httpx2`` for openai 3.x, ``httpx``
    for 1.x), found from the bases of ``openai.DefaultHttpxClient``."""
    import openai

    for base in type.mro(openai.DefaultHttpxClient):
        root = base.__module__.split(".")[0]
        if root in _HTTP_LIBS:
            return importlib.import_module(root)
    return importlib.import_module("httpx")  # pragma: no cover - an openai without DefaultHttpxClient bases


def transport_errors() -> tuple[tuple[type, ...], tuple[type, ...]]:
    """(timeout classes, every transport error class) of the HTTP library openai uses, and of the
    other one too when something loaded it (openai's shims accept objects of both)."""
    libs = [http_lib()] + [sys.modules[n] for n in _HTTP_LIBS if n in sys.modules and sys.modules[n] is not http_lib()]
    return (tuple(lib.TimeoutException for lib in libs), tuple(lib.HTTPError for lib in libs))


def timeout(total_s: float, connect_s: float) -> Any:
    """A per-request timeout object of the library openai uses."""
    return http_lib().Timeout(total_s, connect=connect_s)


def retry_after_s(response: Any) -> Optional[float]:
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


def split_credentials(url: Optional[str]) -> tuple[Optional[str], Any]:
    """``https://user:pass@host/v1`` -> (``https://host/v1``, ``BasicAuth(user, pass)`` of
    :func:`http_lib`); others unchanged. Percent-escapes in the user info are decoded, as httpx does."""
    if not url or "@" not in url:
        return url, None
    lib = http_lib()
    parts = lib.URL(url)
    if not (parts.username or parts.password):
        return url, None
    return str(parts.copy_with(username=None, password=None)), lib.BasicAuth(parts.username, parts.password)


def _client(base_url: Optional[str], api_key: str, timeout_s: Any, **kw: Any) -> Any:
    """The OpenAI client (``max_retries=0``: retries are the engine's). Credentials in the URL become
    HTTP basic auth on the client's own HTTP library (what httpx would have done with them: the
    ``Authorization: Basic`` header replaces the bearer key), so the URL that the openai and
    httpx/httpx2 loggers print carries none."""
    import openai

    url, auth = split_credentials(base_url)
    if auth is not None:
        kw["http_client"] = openai.DefaultHttpxClient(auth=auth, timeout=timeout_s)
    return openai.OpenAI(base_url=url, api_key=api_key, max_retries=0, timeout=timeout_s, **kw)


def _check_saved_url(cfg: Any) -> None:
    """A base_url whose credentials were redacted when the run's config.yaml was saved cannot work."""
    from .errors import TeacherConfigError

    if cfg.base_url and "://***@" in cfg.base_url:
        raise TeacherConfigError(
            f"teacher.base_url {cfg.base_url} had credentials, which are never saved in a run's config.yaml; "
            "give it again (--set teacher.base_url=https://user:pass@host/v1), or put the key in "
            "teacher.api_key_env instead")

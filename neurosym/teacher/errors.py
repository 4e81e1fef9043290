"""Exceptions raised by the teacher engines.

How a caller should react:

* :class:`TeacherUnavailable` - transient (timeouts, 5xx, rate limits after retries, connection
  errors, a rejected request): take a LoRA step for this batch instead.
* :class:`BudgetExhausted` - ``teacher.budget_usd`` is spent: stop routing to the symbolic update
  (cached answers are still served).
* :class:`TeacherConfigError` - wrong URL, key, model or provider setting: the message names the
  config key to fix; stop the job (raised by :func:`~neurosym.teacher.preflight.preflight`, and
  mid-run on 401/403/404).

All three derive from :class:`TeacherError`. No message ever contains the API key.
"""
from __future__ import annotations

from neurosym.errors import UserError


class TeacherError(RuntimeError):
    """Base class of every teacher failure."""


class TeacherUnavailable(TeacherError):
    """The teacher could not answer this request (after retries); fall back to a LoRA step.

    ``kind`` is the failure class: ``timeout``, ``connection``, ``rate_limit``, ``server_error``,
    ``bad_request``, ``quota`` or ``malformed_response``.
    """

    def __init__(self, message: str, kind: str = "unavailable"):
        super().__init__(message)
        self.kind = kind


class BudgetExhausted(TeacherError):
    """``teacher.budget_usd`` has been spent; no further paid calls are made."""


class TeacherConfigError(UserError, TeacherError, ValueError):
    """The teacher is misconfigured; the message says which ``teacher.*`` key to fix and how."""

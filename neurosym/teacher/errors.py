"""Exceptions raised by the teacher engines.

How a caller should react:

* :class:`TeacherUnavailable` - transient (timeouts, 5xx, rate limits after retries, connection
  errors, a rejected request): take a LoRA step for this batch instead.
* :class:`BudgetExhausted` - ``teacher.budget_usd`` is spent: stop routing to the symbolic update
  (cached answers are still served).
* :class:`TeacherConfigError` - wrong URL, key, model or provider setting: the message names the
  config key to fix; stop the job (raised by :func:`~neurosym.teacher.preflight.preflight`).
* :class:`TeacherDown` - mid-run 401/403/404 (key revoked, model withdrawn, URL gone): both a
  :class:`TeacherUnavailable` with ``permanent=True`` and a :class:`TeacherConfigError`; retrying
  will not help, so the loop says so loudly and continues LoRA-only or stops
  (``symbolic.on_teacher_down``).

All derive from :class:`TeacherError`. No message ever contains the API key or credentials of
``teacher.base_url``.
"""
from __future__ import annotations

from neurosym.errors import UserError


class TeacherError(RuntimeError):
    """Base class of every teacher failure."""


class TeacherUnavailable(TeacherError):
    """The teacher could not answer this request (after retries); fall back to a LoRA step.

    ``kind`` is the failure class: ``timeout``, ``deadline``, ``connection``, ``rate_limit``,
    ``server_error``, ``bad_request``, ``quota``, ``malformed_response``, ``too_large``,
    ``context`` (a local teacher's context cannot hold the prompt) or ``aborted``.
    ``permanent`` is True when retrying later will not help (see :class:`TeacherDown`).
    """

    permanent = False

    def __init__(self, message: str, kind: str = "unavailable"):
        super().__init__(message)
        self.kind = kind


class BudgetExhausted(TeacherError):
    """``teacher.budget_usd`` has been spent; no further paid calls are made."""


class TeacherConfigError(UserError, TeacherError, ValueError):
    """The teacher is misconfigured; the message says which ``teacher.*`` key to fix and how."""


class TeacherDown(TeacherUnavailable, TeacherConfigError):
    """The teacher refuses us for good mid-run (401/403 key rejected, 404 model or URL gone).

    ``kind`` is ``auth``, ``forbidden`` or ``not_found``; ``permanent`` is always True. Catch it as
    a :class:`TeacherUnavailable` and test ``exc.permanent`` (or catch it by name).
    """

    permanent = True

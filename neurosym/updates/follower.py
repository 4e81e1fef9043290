"""The stand-in, on the other processes, for an update that runs on the main process only.

A symbolic update calls the teacher and writes the remake store: with several processes only the
main process does it. The others hold a ``Follower`` in its place; the run hands them the main
process's outcome (``outcome_as_dict``/``outcome_from_dict``, JSON) and the state the update changed
(``Run.share_state``: the prompt versions, the refined examples, failed batches to retry).
"""
from __future__ import annotations

from typing import Optional

from neurosym.updates.base import Outcome, Update


class RemoteUpdateError(RuntimeError):
    """An update that failed on the main process (its type and message, as the main process saw them)."""

    def __init__(self, type_name: str, message: str):
        super().__init__(message)
        self.type_name = type_name


class Follower(Update):
    budget_left = None  # the main process's router reads the teacher's budget

    def __init__(self, ctx, name: str):
        super().__init__(ctx)
        self.name = name

    def apply(self, batch: list, decision, step: int) -> Outcome:
        return Outcome(self.name)  # replaced by the main process's outcome

    def unavailable(self, step: int) -> Optional[str]:
        return None  # only the main process's router decides


def outcome_as_dict(out: Outcome) -> dict:
    return {"route": out.route, "loss": out.loss, "grad_norm": out.grad_norm, "tokens": out.tokens,
            "cost_usd": out.cost_usd, "pending": out.pending, "record": out.record, "changed": out.changed,
            "error": None if out.error is None else [type(out.error).__name__, str(out.error)]}


def outcome_from_dict(d: dict) -> Outcome:
    error = RemoteUpdateError(*d["error"]) if d["error"] else None
    return Outcome(d["route"], loss=d["loss"], grad_norm=d["grad_norm"], tokens=d["tokens"], cost_usd=d["cost_usd"],
                   pending=d["pending"], error=error, record=d["record"], changed=d["changed"])

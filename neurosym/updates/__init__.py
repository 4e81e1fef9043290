"""Kinds of update, registered by name. The first is the default route (always available).

A new kind of update is one module with an :class:`~neurosym.updates.base.Update` subclass plus one
line here; routers choose among the names of the kinds a job enables.
"""
from __future__ import annotations

from neurosym.updates.base import Changes, Landing, Outcome, Update, UpdateContext
from neurosym.updates.follower import Follower, outcome_as_dict, outcome_from_dict
from neurosym.updates.lora import LoraUpdate
from neurosym.updates.symbolic.update import SymbolicUpdate

UPDATES: dict[str, type[Update]] = {
    "lora": LoraUpdate,
    "symbolic": SymbolicUpdate,
}
DEFAULT_ROUTE = "lora"


def enabled_routes(cfg) -> tuple[str, ...]:
    """The kinds of update this job uses, the default first."""
    return tuple(name for name, kind in UPDATES.items() if kind.enabled(cfg))


__all__ = ["UPDATES", "DEFAULT_ROUTE", "enabled_routes", "Update", "UpdateContext", "Changes", "Outcome", "Landing", "LoraUpdate",
           "SymbolicUpdate", "Follower", "outcome_as_dict", "outcome_from_dict"]

"""Errors raised by the compiled networks and the gate."""
from __future__ import annotations

from neurosym.errors import UserError


class ConnInputError(UserError, ValueError):
    """An input a compiled network refuses: wrong characters, empty, or longer than it was compiled for.

    Refusing is the contract: a compiled network is exact up to its maximum length and never guesses
    beyond it. The message names the limit and how to raise it (compile with a larger ``max_len``).
    """

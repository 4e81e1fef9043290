"""The data package's user error (kept apart so readers and parsers share it without a cycle)."""
from neurosym.errors import UserError


class DataError(UserError, ValueError):
    """A bad record or file; the message names the file and line (or row) and how to fix it."""

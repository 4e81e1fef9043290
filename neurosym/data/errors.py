"""The data package's user error (kept apart so readers and parsers share it without a cycle)."""


class DataError(ValueError):
    """A bad record or file; the message names the file and line (or row) and how to fix it."""

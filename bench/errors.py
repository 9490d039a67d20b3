"""The one exception type for bad input: the CLI prints it as one line, exit 2."""

from __future__ import annotations


class BadInput(Exception):
    """Bad input from the user: a spec, an argument, a sweep id, a path.

    ``str(exc)`` is one line naming what is wrong (file, key, expected).
    """

    def __init__(self, message: str, *, where: str = "", key: str = ""):
        parts = [p for p in (where, key) if p]
        prefix = ": ".join(parts)
        text = f"{prefix}: {message}" if prefix else message
        super().__init__(" ".join(text.split()))

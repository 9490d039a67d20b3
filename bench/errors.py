"""The one exception type for bad input: the CLI prints it as one line, exit 2.

User text (a sweep's name, a path, a value from a spec) may hold terminal
escapes (``\\x1b[31m``), bidirectional overrides (``\\u202e``) or line breaks.
Such text is kept as data, unchanged, and escaped only where it is shown:
:func:`printable` is the one place that does it, and every :class:`BadInput`
message goes through it.
"""

from __future__ import annotations

import math
import os
import unicodedata
from dataclasses import dataclass

#: Unicode categories escaped on output: controls (C0, DEL, C1), format characters
#: (bidi overrides, zero-width joiners), surrogates, line and paragraph separators.
UNPRINTABLE_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Zl", "Zp"})


def printable(text: str) -> str:
    """``text`` with every control or format character escaped, safe for a terminal.

    Each such character becomes its Python escape (``\\x1b``, ``\\n``, ``\\u202e``,
    ``\\U000e0001``); everything else, including non-ASCII letters, is kept.

    Parameters
    ----------
    text : str
        Any text, e.g. a sweep's name from a spec.

    Returns
    -------
    str
        One line (no line break survives) that cannot move the cursor, change
        colours or reorder what follows it.
    """
    if text.isprintable():  # fast path: str.isprintable is False for every escaped category
        return text
    return "".join(
        ch.encode("unicode_escape").decode("ascii")
        if unicodedata.category(ch) in UNPRINTABLE_CATEGORIES else ch
        for ch in text)


class BadInput(Exception):
    """Bad input from the user: a spec, an argument, a sweep id, a path.

    ``str(exc)`` is one line naming what is wrong (file, key, expected):
    whitespace runs collapse to one space and control characters are escaped
    (see :func:`printable`).
    """

    def __init__(self, message: str, *, where: str = "", key: str = ""):
        parts = [p for p in (where, key) if p]
        prefix = ": ".join(parts)
        text = f"{prefix}: {message}" if prefix else message
        super().__init__(printable(" ".join(text.split())))


@dataclass(frozen=True)
class Range:
    """The values a number may take: ``[low, high]``, or ``(low, high]`` when ``low_open``.

    Every value must also be finite; ``high = inf`` means no upper bound.
    """

    low: float
    high: float
    low_open: bool = False

    def __contains__(self, value: float) -> bool:
        if isinstance(value, float) and not math.isfinite(value):
            return False  # an int of any size compares exactly; never float() it here
        above = value > self.low if self.low_open else value >= self.low
        return above and value <= self.high

    def describe(self, integer: bool) -> str:
        """E.g. ``an integer in [1, 1024]``, ``a number in (0, 60]``, ``a finite number > 0``."""
        low, high = (f"{int(x)}" if float(x).is_integer() else f"{x:g}"
                     for x in (self.low, self.high))
        if self.high == math.inf:
            return f"a finite number {'>' if self.low_open else '>='} {low}"
        kind = "an integer" if integer else "a number"
        return f"{kind} in {'(' if self.low_open else '['}{low}, {high}]"


def check_number(value: float, allowed: Range, *, key: str, integer: bool = False,
                 where: str = "", shown: str | None = None) -> float:
    """``value`` if finite and inside ``allowed`` (an int stays an int when ``integer``).

    ``typer``/``click`` ranges let ``nan`` through (every comparison with it is
    False) and a float option takes ``inf``: options call this instead.
    """
    if value not in allowed:
        raise BadInput(f"got {shown or value} (expected {allowed.describe(integer)})",
                       where=where, key=key)
    return value if integer else float(value)


#: Longest cause quoted in a StoreError.
MAX_REASON_CHARS = 200


class StoreError(Exception):
    """The dataset could not be written (disk full, permissions, I/O error).

    ``str(exc)`` is one line naming the path and the cause; ``path`` and
    ``cause`` (usually the ``OSError``) are kept. A caller should stop: what
    was stored before is intact, and nothing half-written is visible.
    """

    def __init__(self, path: str, cause: BaseException | str):
        self.path = path
        self.cause = cause
        super().__init__(f"cannot write {path}: {_reason(cause)}")


def _reason(cause: BaseException | str) -> str:
    """The cause in a few words: ``No space left on device (errno 28)``."""
    code = getattr(cause, "errno", None)
    if isinstance(cause, OSError) and code:
        return f"{os.strerror(code)} (errno {code})"
    lines = str(cause).splitlines()
    return lines[0][:MAX_REASON_CHARS] if lines and lines[0] else type(cause).__name__



class Unavailable(Exception):
    """A service kept failing for a bounded time (the Ray Jobs API answering HTTP 5xx).

    ``str(exc)`` is one line naming the service, how long it was retried and its
    last answer. The CLI prints it and exits 1: the input was fine, the cluster
    was not ready, and trying again later may work.
    """

    def __init__(self, service: str, waited_s: float, cause: BaseException | str):
        self.service = service
        self.cause = cause
        super().__init__(printable(
            f"{service} kept failing for {waited_s:.0f} s: {_reason(cause)}"))

"""Times and errors written for people: one wording for the CLI and the dashboard.

Pure functions: ``now`` is passed in, so one page or one table says "in 5 min" and
"3 h overdue" consistently with the one time it was made at.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Final

#: A traceback's exception line (``ValueError: ...``, ``mod.CustomError``), once the
#: indentation and the ``|`` of an exception group's frames are stripped.
_EXCEPTION_LINE: Final = re.compile(
    r"^(?:\w+\.)*[A-Za-z_]\w*(?:Error|Exception|Group|Exit|Interrupt|Cancelled|Warning)"
    r"(?::.*)?$"
)


def iso_seconds(value: datetime) -> str:
    """An exact time for a table cell: UTC, to the second."""
    return value.astimezone(UTC).replace(microsecond=0).isoformat()


def span(seconds: float) -> str:
    """A length of time as people say it, in one unit, rounded to the nearest:
    ``45 s``, ``5 min``, ``1 h`` (from 59 min 30 s), ``2 d`` (from 47 h 30 min)."""
    seconds = abs(seconds)
    if seconds < 59.5:
        return f"{max(1, round(seconds))} s"
    if seconds < 59.5 * 60:
        return f"{round(seconds / 60)} min"
    if seconds < 47.5 * 3600:
        return f"{round(seconds / 3600)} h"
    return f"{round(seconds / 86400)} d"


def relative(when: datetime, now: datetime) -> str:
    """A due time relative to ``now``: ``in 5 min``, ``3 h overdue``, ``now``."""
    seconds = (when - now).total_seconds()
    if abs(seconds) < 1:
        return "now"
    return f"in {span(seconds)}" if seconds > 0 else f"{span(seconds)} overdue"


def ago(when: datetime, now: datetime) -> str:
    """A past time relative to ``now``: ``5 min ago`` (``in 2 s`` if clocks differ)."""
    seconds = (now - when).total_seconds()
    if abs(seconds) < 1:
        return "now"
    return f"{span(seconds)} ago" if seconds > 0 else f"in {span(seconds)}"


def last_line(text: str, width: int = 80) -> str:
    """One table cell for an error: the last exception line of a traceback (the
    error that ended the call, with the first line of its message); the first line
    of a message the library wrote (``timed out after 5 s ...``); at most ``width``
    characters."""
    lines = [line.strip().lstrip("|").strip() for line in text.strip().splitlines()]
    lines = [line for line in lines if line]
    found = [i for i, line in enumerate(lines) if _EXCEPTION_LINE.match(line)]
    if lines and "Traceback (most recent call last)" not in lines[0]:
        line = lines[0] + (" ..." if len(lines) > 1 else "")
    elif found:
        line = lines[found[-1]]
        if found[-1] + 1 < len(lines) and not lines[found[-1] + 1].startswith("+"):
            line += " ..."  # the message goes on
    else:
        line = lines[-1] if lines else ""
    return line if len(line) <= width else line[: width - 3] + "..."

"""How the dashboard writes times, durations and error texts for people.

Pure functions (no I/O, no clock of their own): ``now`` is passed in, so a page shows
"in 5 min" and "3 h overdue" consistently with the one time it was rendered at, and
tests need no clock.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime

from .._human import last_line as _last_line
from .._human import span

__all__ = ["ago", "due_text", "duration", "exact", "last_line", "pretty_json", "until"]


def until(when: datetime, now: datetime) -> str:
    """``when`` relative to ``now``: "in 5 min", "3 h ago", or "now" (within 1 s)."""
    seconds = (when - now).total_seconds()
    if abs(seconds) < 1:
        return "now"
    return f"in {span(seconds)}" if seconds > 0 else f"{span(-seconds)} ago"


def ago(when: datetime, now: datetime) -> str:
    """A past time (a heartbeat, a failure): "12 s ago" (a future one: "in 3 s")."""
    return until(when, now)


def due_text(due_at: datetime, now: datetime) -> str:
    """A due time: "in 5 min" ahead of ``now``, "3 h overdue" behind it, or "due now"."""
    seconds = (due_at - now).total_seconds()
    if abs(seconds) < 1:
        return "due now"
    return f"in {span(seconds)}" if seconds > 0 else f"{span(-seconds)} overdue"


def exact(when: datetime) -> str:
    """The exact time in UTC, to the second: ``2026-11-27 17:30:05 UTC``."""
    return when.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def duration(seconds: float | None) -> str:
    """A wait or run time: "—" when none was measured, else ms, s, min or h."""
    if seconds is None:
        return "—"
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 60:
        return f"{seconds:.1f} s"
    if seconds < 3600:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def last_line(error: str) -> str:
    """The line of an error text that says what ended the call (the CLI's wording;
    a long one is cut at 200 characters: the call's page has it all)."""
    return _last_line(error, width=200)


def pretty_json(text: str) -> str:
    """A payload's JSON text, indented; as stored when it is not valid JSON, or nested
    too deep to decode and indent (another program may have written the row)."""
    try:
        return json.dumps(json.loads(text), indent=2, ensure_ascii=False, sort_keys=True)
    except (ValueError, RecursionError):
        return text

"""Helpers for testing code that uses trio_futurecalls."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import trio

#: Default start of :func:`trio_wall_clock`.
DEFAULT_START = datetime(2030, 1, 1, tzinfo=UTC)


def trio_wall_clock(start: datetime = DEFAULT_START) -> Callable[[], datetime]:
    """A wall clock that follows Trio's clock, for use with ``autojump_clock``.

    Call it inside ``trio.run``; pass the result as ``open_scheduler(clock=...)`` (and
    ``schedule_call(clock=...)``) so that hours of scheduled time pass in milliseconds.
    """
    if start.tzinfo is None:
        raise ValueError("start must be timezone-aware")
    origin = trio.current_time()
    return lambda: start + timedelta(seconds=trio.current_time() - origin)

"""How the dashboard writes times, durations and errors (pure functions)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from trio_futurecalls.dashboard._text import (
    due_text,
    duration,
    exact,
    last_line,
    pretty_json,
    until,
)

NOW = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("offset", "due", "relative"),
    [
        (timedelta(0), "due now", "now"),
        (timedelta(milliseconds=400), "due now", "now"),
        (timedelta(seconds=1), "in 1 s", "in 1 s"),
        (timedelta(seconds=40), "in 40 s", "in 40 s"),
        (timedelta(minutes=5), "in 5 min", "in 5 min"),
        (timedelta(minutes=5, seconds=20), "in 5 min", "in 5 min"),
        (timedelta(minutes=59, seconds=40), "in 1 h", "in 1 h"),
        (timedelta(hours=-3), "3 h overdue", "3 h ago"),
        (timedelta(seconds=-12), "12 s overdue", "12 s ago"),
        (timedelta(hours=47), "in 47 h", "in 47 h"),
        (timedelta(days=-3), "3 d overdue", "3 d ago"),
    ],
)
def test_relative_times(offset: timedelta, due: str, relative: str) -> None:
    assert due_text(NOW + offset, NOW) == due
    assert until(NOW + offset, NOW) == relative


def test_exact_is_utc_whatever_the_offset() -> None:
    paris = timezone(timedelta(hours=1))
    assert exact(datetime(2030, 1, 1, 13, 0, 5, tzinfo=paris)) == "2030-01-01 12:00:05 UTC"


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (None, "—"),
        (0.0, "0 ms"),
        (0.0123, "12 ms"),
        (1.25, "1.2 s"),
        (90, "1.5 min"),
        (7200, "2.0 h"),
    ],
)
def test_durations(seconds: float | None, text: str) -> None:
    assert duration(seconds) == text


def test_last_line_of_an_error() -> None:
    traceback_text = 'Traceback (most recent call last):\n  File "x", line 1\nValueError: bad\n\n'
    assert last_line(traceback_text) == "ValueError: bad"
    # A message the library wrote: its first line (the CLI's wording too).
    assert last_line("timed out after 5 s\nwhile stopping...") == "timed out after 5 s ..."
    assert last_line("") == ""
    assert last_line("  \n ") == ""


def test_pretty_json_keeps_text_it_cannot_read() -> None:
    assert pretty_json('{"b": 1, "a": [1]}') == '{\n  "a": [\n    1\n  ],\n  "b": 1\n}'
    assert pretty_json("not json <b>") == "not json <b>"
    assert pretty_json('"é"') == '"é"'

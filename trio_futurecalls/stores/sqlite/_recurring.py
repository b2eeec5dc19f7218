"""Recurring schedules in SQLite: what each store method runs on the connection.

A fire runs in the store's ``BEGIN IMMEDIATE`` transaction: one firing process at a
time, so each tick is stored as a run once, with the schedule's next tick, or not at
all. Each schedule fires under a savepoint: one that cannot be read or written (a
row another program wrote) is stopped, with an error logged, and the others fire.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime

from ..._errors import StoreError
from ..._model import NewCall, RecurringInfo
from .._dependencies import CANCELLED
from .._recurring import after_fire, merge_registration, plan_runs
from .._rows import recurring_to_row
from . import _dependencies as dependencies
from ._connection import OWN_ERRORS, to_micros
from ._inserts import insert_params
from ._rows import due_time, show
from ._rows import recurring as recurring_row

_log = logging.getLogger("trio_futurecalls.store.sqlite.recurring")


def put(
    q: Mapping[str, str], schedule: RecurringInfo, replace: bool, conn: sqlite3.Connection
) -> RecurringInfo:
    """Register ``schedule`` (see ``Store.put_recurring``); the schedule as stored."""
    row = conn.execute(q["recurring_get"], (schedule.key,)).fetchone()
    existing = None if row is None else recurring_row(row)
    merged = merge_registration(existing, schedule, replace)
    if merged is None:
        assert existing is not None
        return existing
    conn.execute(q["recurring_put"], recurring_to_row(merged, to_micros))
    return merged


def cancel(q: Mapping[str, str], key: str, conn: sqlite3.Connection) -> bool:
    """Delete a schedule and its runs that have not started (the calls that wait for
    them become dead letters); True if it existed."""
    if not conn.execute(q["recurring_delete"], (key,)).rowcount:
        return False
    runs = conn.execute(q["recurring_delete_runs"], (key,)).fetchall()
    dependencies.removed(q, runs, CANCELLED, to_micros(datetime.now(UTC)), conn)
    return True


def look(
    q: Mapping[str, str], now: datetime, conn: sqlite3.Connection
) -> tuple[bool, datetime | None]:
    """A read: is a schedule due by ``now``, and the earliest next tick."""
    due = conn.execute(q["recurring_due_any"], (to_micros(now),)).fetchone() is not None
    (next_us,) = conn.execute(q["recurring_next"]).fetchone()
    return due, None if next_us is None else due_time(next_us)


def fire(
    q: Mapping[str, str], path: str, now: datetime, limit: int, conn: sqlite3.Connection
) -> tuple[list[NewCall], datetime | None]:
    """Fire the schedules due by ``now`` (at most ``limit``): the runs stored, and
    the earliest next tick (``now`` when more are due)."""
    rows = conn.execute(q["recurring_due"], (to_micros(now), limit + 1)).fetchall()
    stored: list[NewCall] = []
    for row in rows[:limit]:
        stored.extend(_fire_one(q, path, now, row, conn))
    if len(rows) > limit:
        return stored, now
    (next_us,) = conn.execute(q["recurring_next"]).fetchone()
    return stored, None if next_us is None else due_time(next_us)


def _fire_one(
    q: Mapping[str, str], path: str, now: datetime, row: Sequence[object], conn: sqlite3.Connection
) -> list[NewCall]:
    """Fire one due schedule (``rowid`` and its columns) under a savepoint."""
    conn.execute("SAVEPOINT futurecalls_fire")
    try:
        info = recurring_row(row[1:])
        active = conn.execute(q["recurring_active"], (info.key,)).fetchone()
        plan, calls = plan_runs(info, now, active is not None)
        ids = [conn.execute(q["insert_call"], insert_params(c)).fetchone()[0] for c in calls]
        fired = after_fire(info, plan, ids)
        conn.execute(q["recurring_put"], recurring_to_row(fired, to_micros))
    except (StoreError, *OWN_ERRORS) as exc:
        conn.execute("ROLLBACK TO futurecalls_fire")
        conn.execute("RELEASE futurecalls_fire")
        _log.error(
            "%s: recurring schedule %s cannot fire and is stopped (no next tick): %s",
            path,
            show(row[1]),
            exc,
        )
        conn.execute(q["recurring_stop"], (row[0],))
        return []
    conn.execute("RELEASE futurecalls_fire")
    return calls

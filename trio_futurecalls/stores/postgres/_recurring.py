"""Recurring schedules on PostgreSQL: the transactions, on the asyncio side.

Each function runs inside one transaction the store opens on a connection of its own
(``Connections.transaction``). A fire locks the due schedules ``FOR UPDATE SKIP
LOCKED`` and, per schedule under a savepoint, stores its runs and its next tick: a
tick is handed out once however many workers fire at the same moment, and a schedule
whose writes fail on their own is stopped while the others fire.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import datetime
from typing import Any, Final

import asyncpg
import attrs

from ..._model import NewCall, RecurringInfo
from .._dependencies import CANCELLED
from .._recurring import after_fire, merge_registration, plan_runs
from .._rows import recurring_from_row, recurring_to_row
from ._dependencies import aio_gone
from ._inserts import insert_calls_args
from ._values import utc

_log = logging.getLogger("trio_futurecalls.store.postgres.recurring")

#: What one schedule's writes can raise on their own (a value the driver cannot send,
#: a CHECK): that schedule is stopped, the others fire.
ROW_ERRORS: Final = (
    asyncpg.exceptions.DataError,  # the server's class 22 (data exceptions)
    asyncpg.exceptions.IntegrityConstraintViolationError,
    asyncpg.exceptions._base.DataError,  # a value asyncpg cannot encode
    ValueError,
    OverflowError,
    TypeError,
)


def _same(value: datetime) -> datetime:
    """Times go to asyncpg as they are (aware datetimes)."""
    return value


async def aio_put_recurring(
    q: Mapping[str, str], schedule: RecurringInfo, replace: bool, conn: Any
) -> RecurringInfo:
    """Register ``schedule`` (see ``Store.put_recurring``); the schedule as stored."""
    values = recurring_to_row(schedule, _same)
    while True:
        if await conn.fetchval(q["recurring_insert_new"], *values) is not None:
            return schedule
        row = await conn.fetchrow(q["recurring_lock"], schedule.key)
        if row is not None:
            break
        # Cancelled by another transaction between the two statements: the key is
        # free again, so the insert goes through next time.
    existing = recurring_from_row(row, utc)
    merged = merge_registration(existing, schedule, replace)
    if merged is None:
        return existing
    await conn.execute(q["recurring_put"], *recurring_to_row(merged, _same))
    return merged


async def aio_cancel_recurring(
    q: Mapping[str, str], key: str, cancelled_at: datetime, conn: Any
) -> bool:
    """Delete a schedule and its runs that have not started; True if it existed.
    Calls waiting for those runs become dead letters."""
    # Two statements: the second one's snapshot is taken after the first waited for a
    # fire in progress, so it sees the runs that fire stored.
    if await conn.fetchval(q["recurring_delete"], key) is None:
        return False
    rows = await conn.fetch(q["recurring_delete_runs"], key)
    await aio_gone(q, rows, CANCELLED, cancelled_at, conn)
    return True


@attrs.frozen
class Fired:
    """What one fire transaction did."""

    #: The runs stored.
    stored: list[NewCall]
    #: As many due schedules as the limit were locked (more may be due).
    full: bool
    #: The earliest next tick after now, of all schedules.
    next_tick: datetime | None
    #: A schedule is still due: beyond the batch, or another worker is firing it.
    still_due: bool


async def aio_fire_recurring(
    q: Mapping[str, str], channel: str, now: datetime, limit: int, conn: Any
) -> Fired:
    """Fire the schedules due by ``now`` (at most ``limit``), each once."""
    rows = await conn.fetch(q["recurring_due"], now, limit)
    schedules = [recurring_from_row(row, utc) for row in rows]
    skipping = [s.key for s in schedules if s.overlap == "skip"]
    active = set()
    if skipping:
        active = {r[0] for r in await conn.fetch(q["recurring_active"], skipping)}
    stored: list[NewCall] = []
    for info in schedules:
        try:
            async with conn.transaction():  # a savepoint: one schedule's writes
                stored.extend(await _fire_one(q, channel, now, conn, info, info.key in active))
        except ROW_ERRORS as exc:
            _log.error(
                "recurring schedule %r cannot fire and is stopped (no next tick): %s",
                info.key,
                exc,
            )
            await conn.execute(q["recurring_stop"], info.key)
    next_tick, still_due = await conn.fetchrow(q["recurring_after_fire"], now)
    return Fired(stored, len(rows) >= limit, next_tick, still_due)


async def _fire_one(
    q: Mapping[str, str], channel: str, now: datetime, conn: Any, info: RecurringInfo, active: bool
) -> list[NewCall]:
    plan, calls = plan_runs(info, now, active)
    ids: list[int] = []
    if calls:
        args = insert_calls_args(calls, channel, min(c.due_at for c in calls))
        ids = [r[0] for r in await conn.fetch(q["insert_calls"], *args)]
    fired = after_fire(info, plan, ids)
    await conn.execute(q["recurring_put"], *recurring_to_row(fired, _same))
    return calls

"""Recurring calls on PostgreSQL, from a hostile review: each test once showed a bug."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest
import trio
import trio_asyncio
from pg_support import admin_fetch, open_test_postgres_store, pg_dsn
from trio_asyncio import aio_as_trio

from trio_futurecalls import PendingQuery, RecurringInfo
from trio_futurecalls._recurring import build_schedule

T0 = datetime(2030, 1, 1, tzinfo=UTC)

pytestmark = pytest.mark.postgres


def spec(key: str = "k", now: datetime = T0, **kwargs: Any) -> RecurringInfo:
    args: dict[str, Any] = dict(
        cron=None,
        every=10,
        timezone="UTC",
        start=T0,
        end=None,
        misfire="once",
        overlap="allow",
        identifier=None,
    )
    args.update(kwargs)
    return build_schedule("job", None, key=key, now=now, **args)


async def test_cancel_racing_a_fire_leaves_no_run() -> None:
    """A fire commits while cancel_recurring waits for its lock: the run it created
    survives the cancel (the CTE's DELETE on calls uses the statement's snapshot)."""
    async with open_test_postgres_store() as store:
        await store.put_recurring(spec("r"), True)
        schema = store.schema
        cancelled: list[bool] = []
        async with trio_asyncio.open_loop():
            conn = await aio_as_trio(asyncpg.connect)(
                pg_dsn(), server_settings={"application_name": f"fc-{schema}:fire"}
            )
            try:
                tr = conn.transaction()
                await aio_as_trio(tr.start)()
                # What fire_recurring does, statement by statement.
                await aio_as_trio(conn.execute)(
                    f'SELECT 1 FROM "{schema}".recurring WHERE key = $1 FOR UPDATE', "r"
                )
                await aio_as_trio(conn.execute)(
                    f'INSERT INTO "{schema}".calls (name, payload, due_at, scheduled_at, '
                    "attempts, recurring_key, tick_at) VALUES ('job', 'null', $1, $1, 0, 'r', $1)",
                    T0,
                )
                await aio_as_trio(conn.execute)(
                    f'UPDATE "{schema}".recurring SET next_tick = $1, runs = 1 WHERE key = $2',
                    T0 + timedelta(seconds=10),
                    "r",
                )
                async with trio.open_nursery() as nursery:

                    async def cancel() -> None:
                        cancelled.append(await store.cancel_recurring("r"))

                    nursery.start_soon(cancel)
                    await trio.sleep(1.0)  # cancel is now waiting for the row lock
                    await aio_as_trio(tr.commit)()
            finally:
                await aio_as_trio(conn.close)()
        assert cancelled == [True]
        assert await store.recurring_schedules() == []
        left = await store.pending(PendingQuery())
        assert [c.recurring_key for c in left] == [], "a run of a cancelled schedule survives"


async def test_hostile_counter_does_not_stall_other_schedules() -> None:
    async with open_test_postgres_store() as store:
        await store.put_recurring(spec("bad", start=T0), True)
        await store.put_recurring(spec("good", start=T0 + timedelta(seconds=1)), True)
        await admin_fetch(
            f'UPDATE "{store.schema}".recurring SET runs = 9223372036854775807 WHERE key = $1',
            "bad",
        )
        # expected: "bad" stopped or skipped, "good" fires.
        fire = await store.fire_recurring(T0 + timedelta(seconds=5), 100)
        assert fire.runs >= 1

"""Pause across workers: two schedulers on one schema; a pause made through one stops
the other from starting the class, and a resume wakes it at once through NOTIFY."""

from __future__ import annotations

from typing import Any

import pytest
import trio
from pg_support import open_test_postgres_store, pg_dsn, random_schema, require_postgres, until

from trio_futurecalls import FutureCall, PendingQuery, open_scheduler
from trio_futurecalls.stores.postgres import open_postgres_store

started: list[tuple[str, Any]] = []


@pytest.fixture(autouse=True)
def _needs_postgres() -> None:
    require_postgres()
    started.clear()


class Job(FutureCall):
    name = "pg.paused_job"
    max_concurrent = 10

    async def invoke(self, session: Any, payload: Any) -> None:
        started.append((self.name, payload))


class Other(FutureCall):
    name = "pg.other_job"

    async def invoke(self, session: Any, payload: Any) -> None:
        started.append((self.name, payload))


async def test_pause_through_one_scheduler_stops_the_other() -> None:
    schema = random_schema()
    async with (
        open_test_postgres_store(schema=schema) as store_a,
        # The worker: its own store on the same schema, with no fallback re-check, so
        # only a NOTIFY can wake it.
        open_postgres_store(
            pg_dsn(),
            schema=schema,
            application_name=f"fc-{schema}-b",
            max_pool_size=4,
            connect_timeout=5.0,
            recheck_interval=None,
        ) as store_b,
        open_scheduler(store_a, [Job, Other], execute=False) as a,
        open_scheduler(store_b, [Job, Other]) as b,
    ):
        assert await a.pause(Job) is True
        for i in range(3):
            await a.schedule(Job, i)
        # Due after the paused calls, so that once B started it, B's claim has seen
        # them (one claim looks at both classes): had they not been paused, they
        # would have started no later.
        await a.schedule(Other, "control")
        await until(lambda: ("pg.other_job", "control") in started, 10)
        assert started == [("pg.other_job", "control")]
        assert len(await store_b.pending(PendingQuery(name=Job.name))) == 3
        await b.queue_lengths()
        assert b.statistics().classes[Job.name].paused
        assert list(await b.paused()) == [Job.name]

        # Resumed through A: B hears it (NOTIFY) and starts them at once.
        resumed_at = trio.current_time()
        assert await a.resume(Job.name) is True
        await until(lambda: len(started) == 4, 5)
        assert trio.current_time() - resumed_at < 2
        assert sorted(p for n, p in started if n == Job.name) == [0, 1, 2]
        assert await store_a.paused() == {}
        await b.shutdown()

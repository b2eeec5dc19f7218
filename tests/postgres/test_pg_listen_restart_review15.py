"""Review of issue 15: the LISTEN connection stopped and wanted again before its run
ended (one scheduler stops as the next starts on the same store) misses nothing."""

from __future__ import annotations

from typing import Any

import asyncpg
import trio
from pg_support import new, open_test_postgres_store, pg_dsn

from trio_futurecalls import open_postgres_store


async def test_a_listen_run_wanted_again_while_ending_tells_what_it_missed() -> None:
    async with open_test_postgres_store() as store:
        first = store.add_listener(lambda due: None)
        assert await store.wait_listening()
        # The next run's LISTEN connection comes up only once the gate opens.
        gate = trio.Event()
        connect = store._listener._connect

        async def gated(lost: trio.Event) -> asyncpg.Connection:
            await gate.wait()
            conn: asyncpg.Connection = await connect(lost)
            return conn

        store._listener._connect = gated  # type: ignore[method-assign]
        heard = trio.Event()
        first()  # the LISTEN run is cancelled...
        second = store.add_listener(lambda due: heard.set())  # ...wanted before it ended
        await store.wait_listening()
        # Another process schedules while no LISTEN connection is up.
        producer: Any
        async with open_postgres_store(pg_dsn(), schema=store.schema) as producer:
            await producer.schedule([new("a")])
        gate.set()
        with trio.move_on_after(5):
            await heard.wait()
        second()
        assert heard.is_set(), "the listener never heard of the other process's call"

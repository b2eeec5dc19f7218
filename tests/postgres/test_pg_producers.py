"""A PostgreSQL store opened only to schedule: no LISTEN connection, no notification.

The store opens its LISTEN connection when the first wake-up listener is added (a
scheduler that runs calls adds one) and closes it with the last. These tests count
the store's connections in ``pg_stat_activity`` by their ``application_name`` (the
test's own), and the notifications the store heard.
"""

from __future__ import annotations

from typing import Any, ClassVar

import trio
from pg_support import admin_fetch, open_test_postgres_store, pg_dsn, until

from trio_futurecalls import (
    CallRequest,
    FutureCall,
    open_postgres_store,
    open_scheduler,
    schedule_call,
    schedule_many,
)
from trio_futurecalls.stores.postgres import PostgresStore


class Ping(FutureCall):
    name = "ping"
    max_concurrent = None
    got: ClassVar[list[Any]] = []

    async def invoke(self, session: Any, payload: Any) -> None:
        Ping.got.append(payload)


async def _connections(application_name: str) -> int:
    rows = await admin_fetch(
        "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1", application_name
    )
    return int(rows[0][0])


async def _listen_connections(store: PostgresStore) -> int:
    return await _connections(store.listener_application_name)


async def test_a_producer_store_opens_no_listen_connection_and_hears_nothing() -> None:
    Ping.got = []
    async with open_test_postgres_store(min_pool_size=1, recheck_interval=60.0) as producer:
        pool_name = f"fc-{producer.schema}"
        # The worker: another store on the same schema (its own application_name),
        # with a scheduler, so it listens; its 60 s recheck leaves NOTIFY to wake it.
        async with (
            open_postgres_store(
                pg_dsn(),
                schema=producer.schema,
                application_name=f"{pool_name}-worker",
                recheck_interval=60.0,
                min_pool_size=1,
            ) as worker,
            open_scheduler(worker, [Ping], max_concurrent=4),
        ):
            assert worker.listening
            assert await _listen_connections(worker) == 1
            await schedule_call(producer, "ping", 1)
            await schedule_many(
                producer, [("ping", 2, 0), CallRequest(call_class="ping", payload=3)]
            )
            with trio.fail_after(20):  # far below the 60 s recheck: NOTIFY woke it
                while len(Ping.got) < 3:  # noqa: ASYNC110 - another store's scheduler
                    await trio.sleep(0.02)
            assert sorted(Ping.got) == [1, 2, 3]
            assert worker.notifications_heard >= 1
            # The producer: its pool's connections, and no LISTEN connection.
            assert await _connections(pool_name) >= 1
            assert await _listen_connections(producer) == 0
            assert producer.listener_connects == 0
            assert producer.notifications_heard == 0
            assert not producer.listening


async def test_the_listen_connection_lives_as_long_as_a_scheduler_runs_calls() -> None:
    async with open_test_postgres_store(recheck_interval=60.0) as store:
        # A scheduler that only schedules listens to nothing.
        async with open_scheduler(store, [Ping], execute=False) as scheduler:
            await scheduler.schedule(Ping, "queued")
            assert store.listener_connects == 0
            assert await _listen_connections(store) == 0
        # One that runs calls opens it before it starts (nothing scheduled meanwhile
        # could go unheard), and it closes when the scheduler stops.
        Ping.got = []
        async with open_scheduler(store, [Ping]):
            assert store.listening
            assert store.listener_connects == 1
            assert await _listen_connections(store) == 1
            with trio.fail_after(20):
                while Ping.got != ["queued"]:  # noqa: ASYNC110
                    await trio.sleep(0.02)
        await until(lambda: not store.listening, 10)
        with trio.fail_after(10):
            while await _listen_connections(store):  # noqa: ASYNC110 - the server
                await trio.sleep(0.05)
        # A listener added by hand opens it again; removing it closes it.
        remove = store.add_listener(lambda due: None)
        assert await store.wait_listening()
        assert store.listener_connects == 2
        remove()
        assert not await store.wait_listening()
        await until(lambda: not store.listening, 10)

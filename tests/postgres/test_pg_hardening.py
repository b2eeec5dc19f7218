"""No row and no timing stops a worker or loses a call: the PostgreSQL store (issue 10).

Real server, no mocks of the database: hostile rows are written by an admin
connection (as another tool would), connections are cut by a TCP proxy, rows are
locked by a transaction of the test's own. Every test uses its own schema.
"""

from __future__ import annotations

import asyncpg
import pytest
import trio
import trio.testing
from pg_support import (
    Proxy,
    admin_fetch,
    open_test_postgres_store,
    random_schema,
    require_postgres,
    stored_call,
)

from trio_futurecalls import PendingQuery, StoreError, StoreUnavailableError


@pytest.fixture(autouse=True)
def _needs_postgres() -> None:
    require_postgres()


# -- item 4, and values: what asyncpg raises is translated by type ----------------------


async def test_a_value_python_cannot_hold_is_a_store_error() -> None:
    async with open_test_postgres_store() as store:
        # A session reads whatever it likes: a time beyond datetime is a StoreError
        # (not a raw OverflowError), and the connection stays usable.
        async with store.open_session(stored_call()) as session:
            with pytest.raises(StoreError, match="Python cannot hold") as error:
                await session.fetchval("SELECT '20000-01-01'::timestamptz")
            assert type(error.value.__cause__) is OverflowError
            assert await session.fetchval("SELECT 1") == 1
        assert await store.pending(PendingQuery()) == []


async def _pool_pids(name: str) -> list[int]:
    rows = await admin_fetch("SELECT pid FROM pg_stat_activity WHERE application_name = $1", name)
    return [r[0] for r in rows]


async def test_a_connection_the_server_closed_under_asyncpg_is_an_outage_and_replaced() -> None:
    proxy = Proxy()
    schema = random_schema()
    name = f"fc-{schema}"  # the pool's connections (the listener's name has ":listen")
    async with trio.open_nursery() as nursery:
        await nursery.start(proxy.serve)
        async with open_test_postgres_store(
            dsn=proxy.dsn(), schema=schema, application_name=name, min_pool_size=1
        ) as store:
            await store.pending(PendingQuery())  # the store keeps this connection
            proxy.mode = "linger"
            for pid in await _pool_pids(name):
                await admin_fetch("SELECT pg_terminate_backend($1)", pid)
            # The server's last message reached asyncpg; the end of the stream did not.
            await proxy.lingering.wait()
            await trio.testing.wait_all_tasks_blocked()
            proxy.mode = "forward"
            with pytest.raises(StoreUnavailableError) as outage:
                await store.pending(PendingQuery())
            assert type(outage.value.__cause__) is asyncpg.exceptions.InternalClientError
            # The broken connection was replaced: the next statement just works.
            assert await store.pending(PendingQuery()) == []
            assert store.connections_in_use() == 0

            # The same on a running call's session.
            proxy.lingering = trio.Event()
            async with store.open_session(stored_call()) as session:
                pid = await session.fetchval("SELECT pg_backend_pid()")
                proxy.mode = "linger"
                await admin_fetch("SELECT pg_terminate_backend($1)", pid)
                await proxy.lingering.wait()
                await trio.testing.wait_all_tasks_blocked()
                proxy.mode = "forward"
                with pytest.raises(StoreUnavailableError) as outage:
                    await session.fetchval("SELECT 1")
                assert type(outage.value.__cause__) is asyncpg.exceptions.InternalClientError
                with pytest.raises(StoreUnavailableError):
                    await session.fetchval("SELECT 1")  # terminated: it stays gone
            assert store.connections_in_use() == 0
            assert await store.pending(PendingQuery()) == []
        nursery.cancel_scope.cancel()

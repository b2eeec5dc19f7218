"""The PostgreSQL store's own single statements are bounded by a Trio deadline
instead of asyncpg's per-statement timer (cheaper through trio-asyncio), with the same
bound: ``command_timeout``. Claims, the store's transactions and running calls'
sessions keep asyncpg's timer."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import Any

import pytest
import trio
from pg_support import holding_lock, new, now, open_test_postgres_store, stored_call

from trio_futurecalls import Lease, PendingQuery, StoreUnavailableError
from trio_futurecalls.stores.postgres import PostgresStore
from trio_futurecalls.stores.postgres._errors import bridge


def lease(owner: str) -> Lease:
    return Lease(owner=owner, expires_at=now() + timedelta(minutes=5), names=frozenset("a"))


@contextmanager
def asyncpg_timers(store: PostgresStore) -> Iterator[Counter[str]]:
    """Count the timers asyncpg arms on the store's loop for its statements' command
    timeout (``BaseProtocol._on_timeout``), while the block runs."""
    loop = store._loop
    armed: Counter[str] = Counter()
    original: Callable[..., Any] = loop.call_later

    def call_later(delay: float, callback: Callable[..., Any], *args: Any, **kw: Any) -> Any:
        if getattr(callback, "__name__", "") == "_on_timeout":
            armed["command timeout"] += 1
        return original(delay, callback, *args, **kw)

    loop.call_later = call_later
    try:
        yield armed
    finally:
        del loop.call_later  # the class's method again


async def test_the_stores_statements_arm_no_asyncpg_timer_but_claims_and_sessions_do() -> None:
    async with open_test_postgres_store() as store:
        with asyncpg_timers(store) as armed:
            ids = await store.schedule([new("a", now() - timedelta(seconds=1)) for _ in range(3)])
            assert armed["command timeout"] == 0
            # A claim keeps asyncpg's timer: it does nothing once the rows have reached
            # the client (a cancellation would lose them).
            claimed = (await store.claim(now(), {"a": 3}, 3, lease("w1"))).calls
            assert sorted(c.id for c in claimed) == sorted(ids)
            assert armed["command timeout"] >= 1
            before = armed["command timeout"]
            assert await store.complete("w1", claimed[0].id)
            assert await store.pending(PendingQuery()) == []  # the other two are leased
            assert armed["command timeout"] == before
            # A running call's session: asyncpg's timer, as the pool was opened with.
            async with store.open_session(stored_call(ids[1])) as session:
                assert await session.fetchval("SELECT 1") == 1
            # (Its connection's reset, when released, runs statements with it too.)
            assert armed["command timeout"] >= 1
            # So does a statement on the store's connection run without a deadline.
            before = armed["command timeout"]
            await bridge(store._loop, "probe", store._connections.run, "fetchval", "SELECT 1", [])
            assert armed["command timeout"] > before  # (its prepare, and its run)


@pytest.mark.parametrize("statement", ["pending", "claim", "schedule", "complete"])
async def test_a_statement_stuck_on_the_server_ends_at_command_timeout(statement: str) -> None:
    async with open_test_postgres_store(command_timeout=1.0, connect_timeout=2.0) as store:
        (call_id,) = await store.schedule([new("a", now() - timedelta(seconds=1))])
        run: dict[str, Callable[[], Any]] = {
            "pending": lambda: store.pending(PendingQuery()),
            "claim": lambda: store.claim(now(), {"a": 1}, 1, lease("w1")),  # asyncpg's timer
            "schedule": lambda: store.schedule([new("a", now())]),
            "complete": lambda: store.complete("w1", call_id),
        }
        table = f'"{store.schema}".calls'
        async with holding_lock(store.schema, f"LOCK TABLE {table} IN ACCESS EXCLUSIVE MODE"):
            started = trio.current_time()
            with trio.fail_after(10), pytest.raises(StoreUnavailableError) as error:
                await run[statement]()
            # The deadline counts from the statement's start (not from a pool acquire).
            assert trio.current_time() - started >= 1.0
            assert isinstance(error.value.__cause__, TimeoutError)  # ours, or asyncpg's
            # The store's deadline says so; a claim's timeout is asyncpg's.
            assert ("command_timeout=1.0" in str(error.value)) is (statement != "claim")
            # Cancelled on the server, its connection back in the pool, usable.
            assert store.connections_in_use() == 0
        # The lock is gone: nothing happened to the row, and the store goes on.
        (row,) = await store.pending(PendingQuery())
        assert row.id == call_id
        assert [c.id for c in (await store.claim(now(), {"a": 1}, 1)).calls] == [call_id]


async def test_sessions_on_connections_the_store_held_keep_the_command_timeout() -> None:
    # A pool of 3: the two connections the store holds for its statements (which run
    # them without asyncpg's timer) go to sessions when the sessions need them.
    async with open_test_postgres_store(max_pool_size=3, command_timeout=1.0) as store:
        await store.schedule([new("a", now() - timedelta(seconds=1))])
        await store.claim(now(), {"a": 1}, 1, lease("w1"))
        assert store._connections.held_idle == 2
        outcomes: list[str] = []

        async def one(call_id: int) -> None:
            async with store.open_session(stored_call(call_id)) as session:
                with pytest.raises(StoreUnavailableError) as error:
                    await session.fetchval("SELECT pg_sleep(30)")
                if isinstance(error.value.__cause__, TimeoutError):  # asyncpg's timer
                    outcomes.append("timed out")

        with trio.fail_after(20):
            async with trio.open_nursery() as nursery:
                for call_id in (101, 102, 103):
                    nursery.start_soon(one, call_id)
        assert outcomes == ["timed out"] * 3
        # The store's statements are still bounded (by the deadline) and still work.
        assert await store.pending(PendingQuery()) == []  # the one call is leased

"""The Trio deadline on the PostgreSQL store's statements, under a hostile review:
which connections keep asyncpg's command timeout (every session and transaction, at
every pool size), what a killed connection leaves behind, and how the deadline meets
the caller's own cancellation."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
import trio
from pg_support import admin_fetch, holding_lock, new, now, open_test_postgres_store, stored_call

from trio_futurecalls import Lease, PendingQuery, StoreUnavailableError
from trio_futurecalls.stores.postgres import PostgresStore
from trio_futurecalls.stores.postgres._errors import bridge


def lease(owner: str) -> Lease:
    return Lease(owner=owner, expires_at=now() + timedelta(minutes=5), names=frozenset("a"))


def timeout_of(conn: Any) -> Any:
    """asyncpg's command timeout on ``conn`` (a pool proxy forwards to its connection)."""
    return conn._config.command_timeout


async def held_timeouts(store: PostgresStore) -> list[Any]:
    """The command timeout of each connection the store holds right now."""
    held = (store._connections._kept.conn, store._connections._claimer.conn)
    return [timeout_of(c) for c in held if c is not None]


async def use_held(store: PostgresStore) -> None:
    """Run statements on both held connections: a claim (asyncpg's timer on), then a
    single statement (the kept connection then runs without it)."""
    await store.claim(now(), {"zzz": 1}, 1)
    await store.pending(PendingQuery())


@pytest.mark.parametrize("pool_size", [1, 2, 3])
async def test_sessions_and_transactions_always_get_asyncpg_timer(pool_size: int) -> None:
    async with open_test_postgres_store(max_pool_size=pool_size, command_timeout=7.0) as store:
        seen: list[Any] = []

        async def one(call_id: int) -> None:
            await use_held(store)  # interleaved with the sessions
            async with store.open_session(stored_call(call_id)) as session:
                seen.append(timeout_of(await session.connection()))
                assert await session.fetchval("SELECT 1") == 1
                seen.append(timeout_of(await session.connection()))

        async def in_transaction(conn: Any) -> Any:
            return timeout_of(conn)

        with trio.fail_after(60):
            for _ in range(3):
                await use_held(store)
                assert None in await held_timeouts(store)  # the store's own: no timer
                async with trio.open_nursery() as nursery:
                    for call_id in range(pool_size):
                        nursery.start_soon(one, 100 + call_id)
                    nursery.start_soon(use_held, store)
                await use_held(store)
                seen.append(
                    await bridge(store._loop, "t", store._connections.transaction, in_transaction)
                )
        assert seen
        assert all(t == 7.0 for t in seen), seen


async def backend_pid(conn: Any) -> int:
    pid: int = conn.get_server_pid()
    return pid


async def terminate(pid: int) -> None:
    await admin_fetch("SELECT pg_terminate_backend($1)", pid)


async def test_held_connections_killed_idle_or_mid_statement_leave_sessions_timed() -> None:
    async with open_test_postgres_store(
        max_pool_size=2, command_timeout=1.0, connect_timeout=2.0
    ) as store:
        await store.schedule([new("a", now() - timedelta(seconds=1))])
        await use_held(store)
        kept = store._connections._kept.conn
        assert kept is not None
        await terminate(await backend_pid(kept))  # idle
        with trio.fail_after(30):
            await trio.sleep(0.2)
            # The next statement finds it lost and replaces it.
            assert await store.pending(PendingQuery()) != []
            # Killed mid-statement (stuck on a lock).
            table = f'"{store.schema}".calls'
            async with holding_lock(store.schema, f"LOCK TABLE {table} IN ACCESS EXCLUSIVE MODE"):
                kept = store._connections._kept.conn
                assert kept is not None
                pid = await backend_pid(kept)

                async def kill_soon() -> None:
                    await trio.sleep(0.3)
                    await terminate(pid)

                async with trio.open_nursery() as nursery:
                    nursery.start_soon(kill_soon)
                    with pytest.raises(StoreUnavailableError):
                        await store.pending(PendingQuery())
            assert store.connections_in_use() == 0
            await use_held(store)
            async with (
                store.open_session(stored_call(1)) as s1,
                store.open_session(stored_call(2)) as s2,
            ):
                assert timeout_of(await s1.connection()) == 1.0
                assert timeout_of(await s2.connection()) == 1.0
            await use_held(store)


async def test_the_callers_own_cancellation_is_a_cancellation() -> None:
    async with open_test_postgres_store(command_timeout=3.0, connect_timeout=2.0) as store:
        await store.schedule([new("a", now() - timedelta(seconds=1))])
        table = f'"{store.schema}".calls'
        async with holding_lock(store.schema, f"LOCK TABLE {table} IN ACCESS EXCLUSIVE MODE"):
            with trio.fail_after(30):
                for run in (
                    lambda: store.pending(PendingQuery()),
                    lambda: store.schedule([new("a", now())]),
                    lambda: store.pending(PendingQuery()),
                ):
                    with trio.move_on_after(0.3) as scope:
                        await run()
                    assert scope.cancelled_caught
                    assert store.connections_in_use() == 0
                # A claim is shielded (its rows must reach the dispatcher): the
                # caller's cancellation waits for it, and the deadline still bounds it.
                with trio.move_on_after(0.3) as scope, pytest.raises(StoreUnavailableError):
                    await store.claim(now(), {"a": 1}, 1, lease("w1"))
                assert store.connections_in_use() == 0
        (row,) = await store.pending(PendingQuery())
        assert [c.id for c in (await store.claim(now(), {"a": 1}, 1)).calls] == [row.id]

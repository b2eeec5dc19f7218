"""The connection the PostgreSQL store holds for its claims: generic plans there, and
nowhere else (no session, no other statement of the store gets the setting)."""

from __future__ import annotations

from contextlib import AbstractAsyncContextManager
from datetime import timedelta
from typing import Any

import pytest
import trio
import trio.testing
from pg_support import (
    Proxy,
    admin_fetch,
    holding_lock,
    new,
    now,
    open_test_postgres_store,
    random_schema,
    store_behind_proxy,
    stored_call,
    until,
)

from trio_futurecalls import PendingQuery, StoreUnavailableError
from trio_futurecalls.stores.postgres import PostgresStore
from trio_futurecalls.stores.postgres._errors import bridge, lost


async def _on_claims_connection(store: PostgresStore, sql: str) -> Any:
    return await bridge(store._loop, "probe", store._connections.run_claim, "fetchval", sql, [])


async def _on_store_connection(store: PostgresStore, sql: str) -> Any:
    return await bridge(store._loop, "probe", store._connections.run, "fetchval", sql, [])


async def test_claims_run_with_generic_plans_and_the_other_statements_do_not() -> None:
    async with open_test_postgres_store(max_pool_size=4) as store:
        (call_id,) = await store.schedule([new("a", now() - timedelta(seconds=1))])
        claim = await store.claim(now(), {"a": 1}, 1)
        assert [c.id for c in claim.calls] == [call_id]
        assert await _on_claims_connection(store, "SHOW plan_cache_mode") == "force_generic_plan"
        assert await _on_store_connection(store, "SHOW plan_cache_mode") == "auto"


async def _session_settings(store: PostgresStore, count: int, first_id: int) -> list[str]:
    """``plan_cache_mode`` as ``count`` sessions open at once see it (a pool of
    ``count``: every connection goes to a session, the claims' one included)."""
    seen: list[str] = []
    opened = trio.Semaphore(0)
    done = trio.Event()

    async def one(call_id: int) -> None:
        async with store.open_session(stored_call(call_id)) as session:
            seen.append(await session.fetchval("SHOW plan_cache_mode"))
            opened.release()
            await done.wait()

    async with trio.open_nursery() as nursery:
        for i in range(count):
            nursery.start_soon(one, first_id + i)
        for _ in range(count):
            await opened.acquire()
        done.set()
    return seen


@pytest.mark.parametrize("pool_size", [1, 2, 3])
async def test_no_session_gets_the_claims_setting(pool_size: int) -> None:
    """Whatever the pool's size, a session never runs with the claims' setting: the
    claims' connection is reset before the pool hands it to anyone else."""
    async with open_test_postgres_store(max_pool_size=pool_size, min_pool_size=1) as store:
        for round_ in range(3):
            await store.schedule([new("a", now() - timedelta(seconds=1))])
            assert len((await store.claim(now(), {"a": 1}, 1)).calls) == 1
            await store.pending_counts(now())  # the store's other connection, if room
            seen = await _session_settings(store, pool_size, 100 * round_)
            assert seen == ["auto"] * pool_size


async def test_a_claims_connection_killed_while_idle_is_replaced() -> None:
    name = f"fc-{random_schema()}"
    async with open_test_postgres_store(application_name=name, max_pool_size=3) as store:
        pid = await _on_claims_connection(store, "SELECT pg_backend_pid()")
        killed = await admin_fetch("SELECT pg_terminate_backend($1)", pid)
        assert killed == [(True,)] or [tuple(r) for r in killed] == [(True,)]
        # Until asyncpg has seen the end of the stream (the test says when, not a sleep).
        held = store._connections._claimer.conn
        assert held is not None
        await until(lambda: lost(held), 10)
        (call_id,) = await store.schedule([new("a", now() - timedelta(seconds=1))])
        assert [c.id for c in (await store.claim(now(), {"a": 1}, 1)).calls] == [call_id]
        assert await _on_claims_connection(store, "SELECT pg_backend_pid()") != pid
        assert await _on_claims_connection(store, "SHOW plan_cache_mode") == "force_generic_plan"


# -- giving the claims' connection back: its reset is a round trip that can fail ----------


def _locked_calls(schema: str) -> AbstractAsyncContextManager[None]:
    """Hold the test schema's calls table locked (ACCESS EXCLUSIVE) on a connection of
    the test's own while the block runs: statements on it wait."""
    return holding_lock(schema, f'LOCK TABLE "{schema}".calls IN ACCESS EXCLUSIVE MODE')


async def _waits_for_lock(pid: int) -> bool:
    rows = await admin_fetch(
        "SELECT 1 FROM pg_stat_activity WHERE pid = $1 AND wait_event_type = 'Lock'", pid
    )
    return bool(rows)


async def test_a_claim_whose_connection_cannot_be_reset_afterwards_still_hands_over_its_calls() -> (
    None
):
    """The claim deleted its rows: they reach the caller even when giving its
    connection back to a waiting session fails (the reset gets no answer)."""
    async with store_behind_proxy(
        # (min_pool_size=0: no connection is opened in the background while the proxy
        # drops what clients send.)
        max_pool_size=1,
        min_pool_size=0,
        acquire_timeout=1.0,
    ) as (store, proxy):
        schema = store.schema
        (call_id,) = await store.schedule([new("a", now() - timedelta(seconds=1))])
        assert (await store.claim(now(), {"b": 1}, 1)).calls == []  # prepared, held
        pid = await _on_claims_connection(store, "SELECT pg_backend_pid()")
        got: list[Any] = []
        session_errors: list[StoreUnavailableError] = []

        async def claim() -> None:
            try:
                got.append((await store.claim(now(), {"a": 1}, 1)).calls)
            except StoreUnavailableError as exc:
                got.append(exc)

        async def session() -> None:
            async with store.open_session(stored_call(call_id)) as s:
                try:
                    await s.fetchval("SELECT 1")
                except StoreUnavailableError as exc:  # waited out acquire_timeout
                    session_errors.append(exc)

        async with trio.open_nursery() as inner:
            async with _locked_calls(schema):
                inner.start_soon(claim)
                with trio.fail_after(10):
                    while not await _waits_for_lock(pid):  # noqa: ASYNC110 (the server)
                        await trio.sleep(0.02)
                # A session waits for the pool's only connection, the claim's.
                inner.start_soon(session)
                await until(lambda: store._connections.out == 2, 10)
                # The claim's request is on the server; what the client sends
                # from now on never arrives (the reset after the claim included).
                proxy.mode = "deaf"
            await until(lambda: bool(got), 10)
            proxy.mode = "forward"
        (claimed,) = got
        # The row is gone from the table either way (claim_delete): before, the
        # claim raised and the call was lost.
        assert await store.pending(PendingQuery()) == []
        assert not isinstance(claimed, BaseException), claimed
        assert [c.id for c in claimed] == [call_id]


async def _kill_idle_claims_connection(store: PostgresStore, proxy: Proxy) -> int:
    """End the idle claims connection's backend so that the client sees the server's
    last message but not yet the end of the stream (the proxy lingers); return its pid.
    The proxy forwards again afterwards."""
    pid: int = await _on_claims_connection(store, "SELECT pg_backend_pid()")
    proxy.mode = "linger"
    await admin_fetch("SELECT pg_terminate_backend($1)", pid)
    await proxy.lingering.wait()
    await trio.testing.wait_all_tasks_blocked()
    proxy.mode = "forward"
    return pid


async def test_a_session_does_not_fail_because_the_idle_claims_connection_is_dead() -> None:
    """The pool is short, the claims' connection is idle and its server is gone (the
    client saw the server's last message, not yet the end of the stream): the session
    gets a connection all the same."""
    async with store_behind_proxy(max_pool_size=2, min_pool_size=1) as (store, proxy):
        assert (await store.claim(now(), {"a": 1}, 1)).calls == []
        await store.pending_counts(now())  # the store's other connection
        assert store._connections.short
        pid = await _kill_idle_claims_connection(store, proxy)
        async with store.open_session(stored_call()) as session:
            assert await session.fetchval("SHOW plan_cache_mode") == "auto"
        # The claims' connection was replaced.
        assert await _on_claims_connection(store, "SELECT pg_backend_pid()") != pid


async def test_closing_closes_the_pool_though_the_idle_claims_connection_is_dead(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async with store_behind_proxy(max_pool_size=3, min_pool_size=1) as (store, proxy):
        assert (await store.claim(now(), {"a": 1}, 1)).calls == []
        await _kill_idle_claims_connection(store, proxy)
    assert "closing the pool failed" not in caplog.text

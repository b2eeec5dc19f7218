"""The connection the PostgreSQL store holds for its claims: generic plans there, and
nowhere else (no session, no other statement of the store gets the setting)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
import trio
from pg_support import admin_fetch, new, now, open_test_postgres_store, random_schema, stored_call

from trio_futurecalls.stores.postgres import PostgresStore
from trio_futurecalls.stores.postgres._errors import bridge


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
        await trio.sleep(0.2)
        (call_id,) = await store.schedule([new("a", now() - timedelta(seconds=1))])
        assert [c.id for c in (await store.claim(now(), {"a": 1}, 1)).calls] == [call_id]
        assert await _on_claims_connection(store, "SELECT pg_backend_pid()") != pid
        assert await _on_claims_connection(store, "SHOW plan_cache_mode") == "force_generic_plan"

"""``open_postgres_store(schedule_commit="asynchronous")``: schedules commit with
``synchronous_commit = off`` for their own transaction, and nothing else does.

The setting is read with ``SHOW synchronous_commit``: inside the transaction of an
opt-in statement (off), then on the same pool connection afterwards, and in running
calls' sessions (the server's setting, read on a connection of the test's own).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any, ClassVar

import asyncpg
import attrs
import pytest
import trio
import trio_asyncio
from pg_support import admin_fetch, new, open_test_postgres_store, pg_dsn, stored_call
from trio_asyncio import aio_as_trio

from trio_futurecalls import (
    CallRequest,
    FutureCall,
    InvalidArgumentError,
    PendingQuery,
    Scheduler,
    open_scheduler,
    open_store,
    schedule_call,
    schedule_many,
)
from trio_futurecalls.stores._sql import queries
from trio_futurecalls.stores.postgres import PostgresStore, open_postgres_store
from trio_futurecalls.stores.postgres._inserts import (
    SCHEDULE_QUERIES,
    insert_calls_args,
    insert_new_calls_args,
)
from trio_futurecalls.stores.postgres._listener import notify_payload

SHOW: str = "SHOW synchronous_commit"


async def server_setting() -> str:
    """``synchronous_commit`` of a new connection: the server's (or database's) own."""
    rows = await admin_fetch(SHOW)
    return str(rows[0][0])


# -- which statements carry it --------------------------------------------------------


def test_only_the_schedule_statements_set_synchronous_commit() -> None:
    found = queries("postgres")
    carrying = {name for name, sql in found.items() if "synchronous_commit" in sql}
    assert carrying == {f"{name}_async_commit" for name in SCHEDULE_QUERIES}
    for name in SCHEDULE_QUERIES:
        assert "set_config" not in found[name]  # the default statements: untouched
        assert "set_config('synchronous_commit', 'off', true)" in found[f"{name}_async_commit"]
    # Nothing else in the store sets anything for its connection or transaction.
    others = [sql for name, sql in found.items() if name not in carrying]
    assert not any("set_config" in sql or "SET LOCAL" in sql.upper() for sql in others)


@pytest.mark.parametrize(
    "value", ["off", "async", "Asynchronous", "on", True, False, None, 0, b"durable"]
)
async def test_bad_schedule_commit_values_are_rejected_before_connecting(value: object) -> None:
    # Port 1: nothing listens there, so reaching the network would fail differently.
    with pytest.raises(InvalidArgumentError, match="schedule_commit must be one of"):
        async with open_postgres_store(
            "postgresql://nobody@127.0.0.1:1/none",
            schedule_commit=value,  # type: ignore[arg-type]
        ):
            pass


async def test_open_store_passes_the_option_on() -> None:
    with pytest.raises(InvalidArgumentError, match="schedule_commit"):
        async with open_store("postgresql://nobody@127.0.0.1:1/none", schedule_commit="fast"):
            pass
    async with open_test_postgres_store(schedule_commit="asynchronous") as store:
        assert store.schedule_commit == "asynchronous"
    async with open_test_postgres_store() as store:
        assert store.schedule_commit == "durable"


# -- the statements themselves, in a transaction of the test's own -------------------


def _args(store: PostgresStore, query: str) -> list[Any]:
    """The parameters the store gives ``query`` for one new call."""
    call = new("commit.probe")
    wake = notify_payload(call.due_at)
    if query == "insert_one_call":
        row = [call.name, call.payload, call.due_at, None, call.scheduled_at]
        return [*row, store.channel, wake, 0]
    if query == "insert_new_calls":
        return insert_new_calls_args([call], store.channel, call.due_at)
    if query == "insert_calls":
        return insert_calls_args([call], store.channel, call.due_at)
    assert query == "insert_keyed_calls"
    row = [[call.name], [call.payload], [call.due_at], [None], [call.scheduled_at]]
    return [*row, store.channel, wake, [0], ["k"], ["ignore"], [None], [None], [0]]


@pytest.mark.parametrize("query", SCHEDULE_QUERIES)
async def test_the_setting_is_off_in_the_statements_transaction_only(query: str) -> None:
    default = await server_setting()
    async with open_test_postgres_store(schedule_commit="asynchronous") as store:
        args = _args(store, query)
        async with trio_asyncio.open_loop():
            conn = await aio_as_trio(asyncpg.connect)(
                pg_dsn(), server_settings={"application_name": f"fc-{store.schema}:probe"}
            )
            try:
                fetch = aio_as_trio(conn.fetch)
                fetchval = aio_as_trio(conn.fetchval)
                for variant, inside in ((query, default), (f"{query}_async_commit", "off")):
                    async with aio_as_trio(conn.transaction()):
                        assert await fetchval(SHOW) == default
                        rows = await fetch(store._q[variant], *args)
                        assert [row[0] is not None for row in rows] == [True]
                        # Evaluated (not planned away), for this transaction:
                        assert await fetchval(SHOW) == inside
                    assert await fetchval(SHOW) == default  # and no further
                # Alone, in its implicit transaction: nothing stays on the connection.
                await fetch(store._q[f"{query}_async_commit"], *args)
                assert await fetchval(SHOW) == default
            finally:
                await aio_as_trio(conn.close)()


# -- through the store ----------------------------------------------------------------


async def test_no_setting_is_left_on_the_pool_connection() -> None:
    # One pool connection: every statement of the store, and the session, use it.
    default = await server_setting()
    async with open_test_postgres_store(
        schedule_commit="asynchronous", min_pool_size=1, max_pool_size=1
    ) as store:
        await schedule_call(store, "commit.one", 1)
        await schedule_many(store, [("commit.many", k, 0) for k in range(3)])
        await schedule_call(store, "commit.keyed", 2, unique_key="k")
        async with trio.open_nursery() as nursery:  # a group commit
            for k in range(10):
                nursery.start_soon(partial(schedule_call, store, "commit.group", k))
        await store.schedule([attrs.evolve(new("commit.retry"), attempts=1)])  # insert_calls
        assert len(await store.pending(PendingQuery())) == 16
        assert store._live_pool().get_size() == 1
        async with store.open_session(stored_call()) as session:
            assert await session.fetchval(SHOW) == default
            backend = await session.fetchval("SELECT pg_backend_pid()")
        # ...the very connection the schedules used (the pool never had another).
        assert store._live_pool().get_size() == 1
        rows = await admin_fetch(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1 AND pid = $2",
            f"fc-{store.schema}",
            backend,
        )
        assert rows[0][0] == 1


class Probe(FutureCall):
    """Reads the setting its session's connection has while it runs."""

    name = "commit.probe"
    max_concurrent = None
    seen: ClassVar[list[tuple[Any, str]]] = []

    async def invoke(self, session: Any, payload: Any) -> None:
        Probe.seen.append((payload, await session.fetchval(SHOW)))


async def _until(predicate: Callable[[], bool]) -> None:
    with trio.fail_after(20):
        while not predicate():  # noqa: ASYNC110 - calls run in the scheduler's tasks
            await trio.sleep(0.02)


async def test_opted_in_schedules_land_and_run_with_the_servers_setting() -> None:
    default = await server_setting()
    Probe.seen = []
    async with (
        open_test_postgres_store(schedule_commit="asynchronous") as store,
        open_scheduler(store, [Probe], max_concurrent=4) as scheduler,
    ):
        ids = [await schedule_call(store, Probe, "one")]
        ids += await schedule_many(
            store, [(Probe, "many", 0), CallRequest(call_class=Probe, payload="request")]
        )
        ids.append(await scheduler.schedule(Probe, "keyed", unique_key="k"))
        async with trio.open_nursery() as nursery:  # concurrent: group commits
            for k in range(20):
                nursery.start_soon(_schedule, scheduler, f"group {k}", ids)
        assert len(set(ids)) == 24
        await _until(lambda: len(Probe.seen) == 24)
    assert sorted(payload for payload, _ in Probe.seen) == sorted(
        ["one", "many", "request", "keyed", *(f"group {k}" for k in range(20))]
    )
    # Each call's session (from the same pool) has the server's setting.
    assert {setting for _, setting in Probe.seen} == {default}


async def _schedule(scheduler: Scheduler, payload: str, ids: list[int]) -> None:
    ids.append(await scheduler.schedule(Probe, payload))


class InTransaction(FutureCall):
    """Schedules a call while its session's transaction is open, then rolls it back."""

    name = "commit.in-transaction"
    store: ClassVar[PostgresStore | None] = None
    seen: ClassVar[list[str]] = []
    scheduled: ClassVar[list[int]] = []

    async def invoke(self, session: Any, payload: Any) -> None:
        assert InTransaction.store is not None
        try:
            async with session.transaction():
                InTransaction.seen.append(await session.fetchval(SHOW))
                InTransaction.scheduled.append(
                    await schedule_call(InTransaction.store, "commit.later", None, delay=3600)
                )
                InTransaction.seen.append(await session.fetchval(SHOW))
                raise _RollBack
        except _RollBack:
            pass


class _RollBack(Exception):
    pass


async def test_a_schedule_made_during_a_sessions_transaction_is_not_part_of_it() -> None:
    # Schedules go through the store's own connections, never a session's: the
    # session's transaction keeps its setting and its rollback does not undo them.
    default = await server_setting()
    InTransaction.seen = []
    InTransaction.scheduled = []
    async with (
        open_test_postgres_store(schedule_commit="asynchronous") as store,
        open_scheduler(store, [InTransaction], max_concurrent=2),
    ):
        InTransaction.store = store
        try:
            await schedule_call(store, InTransaction)
            await _until(lambda: len(InTransaction.seen) == 2)
            await _until(lambda: store.open_sessions == 0)
        finally:
            InTransaction.store = None
        pending = await store.pending(PendingQuery())
    assert InTransaction.seen == [default, default]
    assert [c.id for c in pending] == InTransaction.scheduled

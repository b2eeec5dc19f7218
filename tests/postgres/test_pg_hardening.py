"""No row and no timing stops a worker or loses a call: the PostgreSQL store (issue 10).

Real server, no mocks of the database: hostile rows are written by an admin
connection (as another tool would), connections are cut by a TCP proxy, rows are
locked by a transaction of the test's own. Every test uses its own schema.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta, timezone
from typing import Any, ClassVar
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import attrs
import pytest
import trio
import trio.testing
from pg_support import (
    admin_execute,
    admin_fetch,
    drop_schema,
    locked_row,
    migrate_to,
    new,
    now,
    open_test_postgres_store,
    pg_dsn,
    random_schema,
    require_postgres,
    store_behind_proxy,
    stored_call,
    until,
)

from trio_futurecalls import (
    Delivery,
    FutureCall,
    InvalidArgumentError,
    Lease,
    PendingQuery,
    QueueLength,
    StoredCall,
    StoreError,
    StoreNotFoundError,
    StoreUnavailableError,
    open_scheduler,
)
from trio_futurecalls.stores.postgres import (
    PostgresStore,
    open_postgres_store,
    recommended_pool_size,
)
from trio_futurecalls.stores.postgres._migrations import server_problem
from trio_futurecalls.stores.postgres._values import MAX_ATTEMPTS, MAX_TIME, MIN_TIME


def lease(owner: str = "w1", *names: str) -> Lease:
    return Lease(
        owner=owner,
        expires_at=now() + timedelta(minutes=5),
        names=frozenset(names or ("a",)),
    )


@pytest.fixture(autouse=True)
def _needs_postgres() -> None:
    require_postgres()


# -- item 1: values no worker can read ---------------------------------------------------

#: Calls another tool wrote: (due_at, scheduled_at, attempts, lease_owner) as SQL, and
#: what the dead letter's error must then say.
HOSTILE_CALLS = [
    ("'-infinity'", "now()", "0", "NULL", "due_at was -infinity"),
    ("'infinity'", "now()", "0", "NULL", "due_at was infinity"),
    ("'0044-03-15 BC'", "now()", "0", "NULL", "due_at was 0044-03-15 00:00:00+00 BC"),
    ("'20000-01-01 00:00+00'", "now()", "0", "NULL", "due_at was 20000-01-01 00:00:00+00"),
    ("'0001-01-01 12:00+00'", "now()", "0", "NULL", "due_at was 0001-01-01 12:00:00+00"),
    ("'9999-12-31 00:00+00'", "now()", "0", "NULL", "due_at was 9999-12-31 00:00:00+00"),
    ("now() - interval '1 s'", "'-infinity'", "0", "NULL", "scheduled_at was -infinity"),
    (
        "now() - interval '1 s'",
        "'20000-01-01 00:00+00'",
        "0",
        "NULL",
        "scheduled_at was 20000-01-01 00:00:00+00",
    ),
    ("now() - interval '1 s'", "now()", "2147483647", "NULL", "attempts was 2147483647"),
    ("now() - interval '1 s'", "now()", "1000001", "NULL", "attempts was 1000001"),
    ("'infinity'", "now()", "3", "'ghost'", "it was leased by ghost"),
]
#: Dead letters another tool wrote: (due_at, scheduled_at, failed_at, attempts), and
#: what must be added to their error.
HOSTILE_DEAD_LETTERS = [
    ("'-infinity'", "now()", "now()", "1", "due_at was -infinity"),
    ("now()", "'0044-03-15 BC'", "now()", "1", "scheduled_at was 0044-03-15 00:00:00+00 BC"),
    ("now()", "now()", "'infinity'", "1", "failed_at was infinity"),
    ("now()", "now()", "now()", "2147483647", "attempts was 2147483647"),
]


async def refused(write: Awaitable[Any]) -> None:
    """Assert that the database refuses ``write`` with a CHECK violation (raised as it
    is, or in the group of the admin connection's asyncio loop)."""
    with pytest.RaisesGroup(
        asyncpg.exceptions.CheckViolationError, allow_unwrapped=True, flatten_subgroups=True
    ):
        await write


async def _insert_call(
    schema: str, name: str, due: str, scheduled: str, attempts: str, owner: str
) -> int:
    rows = await admin_fetch(
        f'INSERT INTO "{schema}".calls (name, payload, due_at, scheduled_at, attempts, '
        f"lease_owner) VALUES ($1, '\"hostile\"', {due}, {scheduled}, {attempts}, {owner}) "
        "RETURNING id",
        name,
    )
    return int(rows[0][0])


async def _insert_dead_letter(
    schema: str, due: str, scheduled: str, failed: str, attempts: str
) -> int:
    rows = await admin_fetch(
        f'INSERT INTO "{schema}".dead_letters (call_id, name, payload, due_at, scheduled_at, '
        f"failed_at, error, attempts) VALUES (-1, 'pg.good', 'null', {due}, {scheduled}, "
        f"{failed}, 'it failed', {attempts}) RETURNING id"
    )
    return int(rows[0][0])


async def test_migration_0003_moves_unreadable_rows_to_dead_letters_and_keeps_them_out() -> None:
    ran: list[str] = []

    class Good(FutureCall):
        name = "pg.good"
        max_concurrent = 10

        async def invoke(self, session: Any, payload: Any) -> None:
            ran.append(payload)

    schema = random_schema()
    await migrate_to(schema, 2)  # what an older library left
    try:
        past = now() - timedelta(seconds=5)
        good = [
            (
                await admin_fetch(
                    f'INSERT INTO "{schema}".calls (name, payload, due_at, scheduled_at) '
                    "VALUES ('pg.good', $1, $2, $2) RETURNING id",
                    f'"good {i}"',
                    past,
                )
            )[0][0]
            for i in range(3)
        ]
        hostile = {
            await _insert_call(schema, "pg.good", due, scheduled, attempts, owner): why
            for due, scheduled, attempts, owner, why in HOSTILE_CALLS
        }
        fine_dead = await _insert_dead_letter(schema, "now()", "now()", "now()", "1")
        hostile_dead = {
            await _insert_dead_letter(schema, due, scheduled, failed, attempts): why
            for due, scheduled, failed, attempts, why in HOSTILE_DEAD_LETTERS
        }

        async with open_test_postgres_store(schema=schema) as store:  # migrates: 0003 runs
            # The good calls are untouched...
            pending = await store.pending(PendingQuery())
            assert [(c.id, c.payload, c.due_at) for c in pending] == [
                (i, f'"good {k}"', past) for k, i in enumerate(good)
            ]
            # ...and every call no worker could read or claim is a dead letter that says
            # why, with its original values, clamped so that it reads back.
            dead = {d.call_id: d for d in await store.dead_letters()}
            for call_id, why in hostile.items():
                letter = dead[call_id]
                assert letter.error.startswith("migration 0003: moved to dead letters"), letter
                assert why in letter.error, (why, letter.error)
                assert letter.payload == '"hostile"'
                assert MIN_TIME <= letter.due_at <= MAX_TIME
                assert MIN_TIME <= letter.scheduled_at <= MAX_TIME
                assert 0 <= letter.attempts <= MAX_ATTEMPTS
            assert dead[next(i for i, w in hostile.items() if "-infinity" in w)].due_at == MIN_TIME
            # Dead letters that held such values keep them only as text.
            letters = {d.id: d for d in await store.dead_letters()}
            assert letters[fine_dead].error == "it failed"
            for dead_id, why in hostile_dead.items():
                assert letters[dead_id].error.startswith("it failed\nmigration 0003:")
                assert why in letters[dead_id].error
            assert letters[next(iter(hostile_dead))].due_at == MIN_TIME

            # A scheduler runs the good calls, and keeps running.
            async with open_scheduler(store, [Good], max_concurrent=4) as scheduler:
                await until(lambda: len(ran) == 3, 20)
                await scheduler.schedule(Good, "later")
                await until(lambda: len(ran) == 4, 20)
            assert sorted(ran) == ["good 0", "good 1", "good 2", "later"]

            # After 0003 the database refuses such rows, whoever writes them.
            for due, scheduled, attempts, owner, _ in HOSTILE_CALLS:
                await refused(_insert_call(schema, "pg.good", due, scheduled, attempts, owner))
            for due, scheduled, failed, attempts, _ in HOSTILE_DEAD_LETTERS:
                await refused(_insert_dead_letter(schema, due, scheduled, failed, attempts))
            assert (await store.pending_counts(now())) == {}
            # The migration's helper functions went with it.
            functions = await admin_fetch(
                "SELECT proname FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace "
                "WHERE n.nspname = $1",
                schema,
            )
            assert functions == []
    finally:
        await drop_schema(schema)


async def test_the_checks_and_the_stores_bounds_are_the_same() -> None:
    async with open_test_postgres_store() as store:
        micro = timedelta(microseconds=1)
        edges = [new(due=MIN_TIME), new(due=MAX_TIME)]
        ids = await store.schedule(edges)
        assert [c.due_at for c in await store.pending(PendingQuery())] == [MIN_TIME, MAX_TIME]
        for due in (MIN_TIME - micro, MAX_TIME + micro):
            with pytest.raises(InvalidArgumentError, match="a stored time must be between"):
                await store.schedule([new(due=due)])
            await refused(
                admin_fetch(
                    f'UPDATE "{store.schema}".calls SET due_at = $1 WHERE id = $2', due, ids[0]
                )
            )
        with pytest.raises(InvalidArgumentError, match="attempts"):
            await store.schedule([attrs.evolve(new(), attempts=MAX_ATTEMPTS + 1)])
        # A time in a far zone that is inside the bounds once in UTC is fine.
        east = timezone(timedelta(hours=14))
        (inside,) = await store.schedule([new(due=datetime(1, 1, 2, 23, tzinfo=east))])
        assert await store.cancel(inside)


@pytest.mark.parametrize("leased", [False, True])
async def test_a_call_at_the_attempt_bound_is_claimed_and_handed_over(leased: bool) -> None:
    async with open_test_postgres_store() as store:
        t = now() - timedelta(seconds=1)
        ids = await store.schedule([attrs.evolve(new("a", t), attempts=MAX_ATTEMPTS), new("a", t)])
        claim = await store.claim(now(), {"a": 5}, 5, lease() if leased else None)
        assert [(c.id, c.attempts) for c in claim.calls] == [(ids[0], MAX_ATTEMPTS), (ids[1], 1)]
        # And it goes back as it came (the engine takes back the claim's attempt).
        back = [attrs.evolve(c, attempts=c.attempts - 1) for c in claim.calls]
        assert await store.put_back(back, "w1" if leased else None) == 2
        pending = await store.pending(PendingQuery())
        assert [(c.id, c.attempts) for c in pending] == [(ids[0], MAX_ATTEMPTS - 1), (ids[1], 0)]


async def test_reads_of_rows_forced_past_the_checks_are_store_errors() -> None:
    async with open_test_postgres_store() as store:
        # Rows that another tool forced in (with the CHECKs dropped): every read that
        # turns rows into values says StoreError, and the store goes on.
        (call_id,) = await store.schedule([new()])
        await store.dead_letter(
            StoredCall(
                id=call_id,
                name="a",
                payload="null",
                due_at=now(),
                identifier=None,
                scheduled_at=now(),
                attempts=1,
            ),
            "boom",
            now(),
        )
        calls, dead = f'"{store.schema}".calls', f'"{store.schema}".dead_letters'
        await admin_execute(
            f"ALTER TABLE {calls} DROP CONSTRAINT calls_scheduled_at_range; "
            f"UPDATE {calls} SET scheduled_at = '20000-01-01 00:00+00'; "
            f"ALTER TABLE {dead} DROP CONSTRAINT dead_letters_failed_at_range; "
            f"UPDATE {dead} SET failed_at = '20000-01-01 00:00+00'"
        )
        for read in (lambda: store.pending(PendingQuery()), store.dead_letters):
            with pytest.raises(StoreError) as error:
                await read()
            assert type(error.value) is StoreError
            assert isinstance(error.value.__cause__, (ValueError, OverflowError))
        assert await store.pending_counts(now()) == {"a": QueueLength(pending=1, due=1)}


async def test_opening_without_migrating_refuses_a_schema_that_is_not_current() -> None:
    schema = random_schema()
    try:
        for version in (0, 2):
            if version:
                await migrate_to(schema, version)
            # Version 0 (nothing there): no store, and nothing created by looking.
            expected = f"at version {version} but" if version else "no trio_futurecalls store in"
            with pytest.raises(StoreNotFoundError if version == 0 else StoreError, match=expected):
                async with open_postgres_store(pg_dsn(), schema=schema, migrate=False):
                    pass
            if version == 0:
                assert not await admin_fetch(
                    "SELECT 1 FROM pg_namespace WHERE nspname = $1", schema
                )
        async with open_postgres_store(pg_dsn(), schema=schema):  # migrates
            pass
        async with open_postgres_store(pg_dsn(), schema=schema, migrate=False) as store:
            assert await store.pending(PendingQuery()) == []
    finally:
        await drop_schema(schema)


# -- item 2: writes after calls share statements; advice the server can follow -------------

Write = Callable[[PostgresStore, StoredCall], Awaitable[Any]]


async def _release(store: PostgresStore, call: StoredCall) -> Any:
    return await store.release("w1", call.id, now(), refund_attempt=True)


async def _put_back(store: PostgresStore, call: StoredCall) -> Any:
    return await store.put_back([attrs.evolve(call, attempts=0)], None)


async def _put_back_leased(store: PostgresStore, call: StoredCall) -> Any:
    return await store.put_back([attrs.evolve(call, attempts=0)], "w1")


async def _dead_letter(store: PostgresStore, call: StoredCall) -> Any:
    return await store.dead_letter(call, f"error of {call.id}", now())


async def _dead_letter_leased(store: PostgresStore, call: StoredCall) -> Any:
    return await store.dead_letter(call, f"error of {call.id}", now(), "w1")


async def _complete(store: PostgresStore, call: StoredCall) -> Any:
    return await store.complete("w1", call.id)


@pytest.mark.parametrize(
    ("write", "leased"),
    [
        (_release, True),
        (_put_back, False),
        (_put_back_leased, True),
        (_dead_letter, False),
        (_dead_letter_leased, True),
        (_complete, True),
    ],
    ids=lambda v: getattr(v, "__name__", str(v)),
)
async def test_concurrent_writes_after_calls_share_one_statement_per_batch(
    write: Write, leased: bool
) -> None:
    total = 300
    async with open_test_postgres_store(max_pool_size=3) as store:
        t = now() - timedelta(seconds=1)
        ids = await store.schedule([new("a", t) for _ in range(total)])
        calls = (await store.claim(now(), {"a": total}, total, lease() if leased else None)).calls
        assert len(calls) == total
        statements: list[str] = []
        peak = 0
        run = store._connections.run

        async def counting_run(
            method: str, sql: str, args: Any, deadline: trio.CancelScope | None = None
        ) -> Any:
            nonlocal peak
            statements.append(sql)
            peak = max(peak, store.connections_in_use())
            return await run(method, sql, args, deadline)

        store._connections.run = counting_run  # type: ignore[method-assign]
        answers: dict[int, Any] = {}

        async def one(call: StoredCall) -> None:
            answers[call.id] = await write(store, call)

        async with trio.open_nursery() as nursery:
            for call in calls:
                nursery.start_soon(one, call)
        # The first request ran alone and all that arrived meanwhile shared the next;
        # completions and releases, which join the round, all share the first.
        if write in (_complete, _release):
            assert len(statements) == 1, len(statements)
        else:
            assert 2 <= len(statements) <= 3, len(statements)
        assert peak <= 1
        store._connections.run = run  # type: ignore[method-assign]
        if write in (_release, _complete):
            assert set(answers.values()) == {True}
        elif write in (_put_back, _put_back_leased):
            assert set(answers.values()) == {1}
        else:
            assert len(set(answers.values())) == total  # a dead letter id each
            letters = await store.dead_letters()
            assert sorted(d.call_id for d in letters) == ids
            assert all(d.error == f"error of {d.call_id}" for d in letters)
            assert {d.id: d.call_id for d in letters} == {v: k for k, v in answers.items()}
        if write in (_release, _put_back, _put_back_leased):
            pending = await store.pending(PendingQuery())
            assert sorted((c.id, c.attempts) for c in pending) == [(i, 0) for i in ids]
        else:
            assert await store.pending_counts(now()) == {}
            assert await admin_fetch(f'SELECT id FROM "{store.schema}".calls') == []


async def test_grouped_writes_answer_each_caller_as_alone() -> None:
    async with open_test_postgres_store() as store:
        t = now() - timedelta(seconds=1)
        ids = await store.schedule([new("a", t) for _ in range(4)])
        mine = (await store.claim(now(), {"a": 4}, 4, lease("w1"))).calls
        results: list[tuple[str, Any]] = []

        async def record(what: str, fn: Callable[[], Awaitable[Any]]) -> None:
            try:
                results.append((what, await fn()))
            except InvalidArgumentError as exc:
                results.append((what, type(exc).__name__))

        bad = attrs.evolve(mine[1], due_at=datetime(1, 1, 1, tzinfo=UTC))
        requests: list[tuple[str, Callable[[], Awaitable[Any]]]] = [
            # The same call released twice, and by someone who does not own it.
            ("release 0", lambda: store.release("w1", ids[0], now())),
            ("release 0 again", lambda: store.release("w1", ids[0], now())),
            ("release 1 by w2", lambda: store.release("w2", ids[1], now())),
            # A dead letter by the owner, and one by someone who is not.
            ("dead 2", lambda: store.dead_letter(mine[2], "x", now(), "w1")),
            ("dead 3 by w2", lambda: store.dead_letter(mine[3], "x", now(), "w2")),
            # A bad item is refused for its caller only.
            ("bad put back", lambda: store.put_back([bad], "w1")),
        ]
        async with trio.open_nursery() as nursery:
            for what, fn in requests:
                nursery.start_soon(record, what, fn)
        answers = dict(results)
        # Whichever of the two runs first (trio starts tasks in no fixed order) releases it.
        assert sorted([answers["release 0"], answers["release 0 again"]]) == [False, True]
        assert answers["release 1 by w2"] is False
        assert isinstance(answers["dead 2"], int)
        assert answers["dead 3 by w2"] is None
        assert answers["bad put back"] == "InvalidArgumentError"
        leased = await admin_fetch(
            f'SELECT id FROM "{store.schema}".calls WHERE lease_owner = $1 ORDER BY id', "w1"
        )
        assert [r[0] for r in leased] == [ids[1], ids[3]]


async def test_shutdown_releases_many_running_calls_in_few_statements() -> None:
    running = 0
    all_running = trio.Event()
    total = 100

    class Hold(FutureCall):
        name = "pg.hold"
        delivery = Delivery.AT_LEAST_ONCE
        max_concurrent = None

        async def invoke(self, session: Any, payload: Any) -> None:
            nonlocal running
            running += 1
            if running == total:
                all_running.set()
            await trio.sleep_forever()

    async with open_test_postgres_store(max_pool_size=4) as store:
        names = {sql: name for name, sql in store._q.items()}
        statements: list[str] = []
        run = store._connections.run

        async def counting_run(
            method: str, sql: str, args: Any, deadline: trio.CancelScope | None = None
        ) -> Any:
            statements.append(names.get(sql, sql))
            return await run(method, sql, args, deadline)

        store._connections.run = counting_run  # type: ignore[method-assign]
        t = now() - timedelta(seconds=1)
        ids = await store.schedule([new("pg.hold", t) for _ in range(total)])
        async with open_scheduler(store, [Hold], max_concurrent=total, grace_period=0):
            with trio.fail_after(30):
                await all_running.wait()
            statements.clear()
        # Every call was released (its attempt refunded), in a handful of statements.
        released = [s for s in statements if s.startswith("release")]
        assert 1 <= len(released) <= 3, statements
        pending = await store.pending(PendingQuery())
        assert sorted((c.id, c.attempts) for c in pending) == [(i, 0) for i in ids]


async def test_pool_size_advice_fits_the_server(caplog: pytest.LogCaptureFixture) -> None:
    (limit,) = await admin_fetch("SELECT current_setting('max_connections')::int")
    if limit[0] >= 500:
        pytest.skip("this server takes 500 connections: a pool of 500 fits it")
    caplog.set_level(logging.WARNING, logger="trio_futurecalls.store.postgres")
    async with open_test_postgres_store(max_pool_size=500, min_pool_size=0) as store:
        room = store.server_room
        assert room is not None
        assert room.max_connections == limit[0]
        assert room.free < 500
        # Warned at open: the pool could outgrow the server.
        opened = [r.message for r in caplog.records if "max_pool_size=500" in r.message]
        assert opened
        assert f"max_pool_size <= {room.free - 1}" in opened[0]
        caplog.clear()
        # The scheduler's check gives numbers that fit the server.
        assert not store.check_pool_size(498)
        (message,) = [r.message for r in caplog.records]
        match = re.search(r"use max_concurrent <= (\d+) with max_pool_size=(\d+)", message)
        assert match, message
        concurrent, pool = int(match[1]), int(match[2])
        assert pool == concurrent + 2
        assert pool + 1 <= room.free  # the LISTEN connection too
        assert f"max_connections={limit[0]}" in message
        assert recommended_pool_size(498, server_room=room.free) == pool
        assert recommended_pool_size(10, server_room=room.free) == min(12, room.free - 1)


# -- item 3: a write stuck on the server does not outlive the engine's bound ---------------


@pytest.mark.parametrize("write", [_complete, _release, _dead_letter_leased])
async def test_a_write_stuck_on_the_server_is_abandoned_at_the_callers_bound(write: Write) -> None:
    # A short command timeout: without the fix the write would wait for it.
    async with open_test_postgres_store(command_timeout=5.0, max_pool_size=3) as store:
        (call_id,) = await store.schedule([new("a", now() - timedelta(seconds=1))])
        (call,) = (await store.claim(now(), {"a": 1}, 1, lease("w1"))).calls
        await store.pending(PendingQuery())
        async with locked_row(store.schema, call_id):
            # The engine's way: shielded from shutdown, bounded (CLEANUP_TIMEOUT).
            with trio.move_on_after(0.5, shield=True) as bound:
                await write(store, call)
            assert bound.cancelled_caught
            # Its statement was cancelled on the server and its connection is back,
            # usable: nothing checked out, nothing poisoned.
            assert store.connections_in_use() == 0
            assert await store.pending(PendingQuery()) == []
        # The abandoned write did not happen later: the row is still leased by w1...
        rows = await admin_fetch(f'SELECT lease_owner FROM "{store.schema}".calls')
        assert [r[0] for r in rows] == ["w1"]
        # ...and the same write now goes through.
        assert await write(store, call) not in (None, False)


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
    schema = random_schema()
    name = f"fc-{schema}"  # the pool's connections (the listener's name has ":listen")
    async with store_behind_proxy(schema=schema, application_name=name, min_pool_size=1) as (
        store,
        proxy,
    ):
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


async def test_a_database_that_is_not_utf8_is_refused() -> None:
    # In SQL_ASCII, a row another program writes with bytes that are not UTF-8 cannot
    # be sent to the store: every claim of every class would fail on it. Refused at
    # open, before anything is created.
    require_postgres()
    database = f"fc_ascii_{random_schema()}"
    await admin_execute(
        f"CREATE DATABASE \"{database}\" ENCODING 'SQL_ASCII' LC_COLLATE 'C' "
        "LC_CTYPE 'C' TEMPLATE template0"
    )
    try:
        parts = urlsplit(pg_dsn())
        dsn = urlunsplit(parts._replace(path=f"/{database}"))
        with pytest.raises(
            StoreError, match="encoding is SQL_ASCII; the PostgreSQL store needs UTF8"
        ):
            async with open_postgres_store(dsn, schema=random_schema(), min_pool_size=0):
                pass
    finally:
        await admin_execute(f'DROP DATABASE IF EXISTS "{database}"')


@pytest.mark.parametrize(
    ("encoding", "version_num", "version", "problem"),
    [
        ("UTF8", 150020, "15.20", None),
        ("utf-8", 120000, "12.0", None),
        ("UTF8", 110022, "11.22", "the server is PostgreSQL 11.22; the PostgreSQL store needs 12"),
        ("SQL_ASCII", 150020, "15.20", "encoding is SQL_ASCII"),
    ],
)
def test_an_older_server_or_another_encoding_is_refused(
    encoding: str, version_num: int, version: str, problem: str | None
) -> None:
    # (No server older than 12 to open here: the decision is tested on its own, and
    # the check runs at every open of the tests above, against this machine's server.)
    found = server_problem(encoding, version_num, version)
    if problem is None:
        assert found is None
    else:
        assert found is not None
        assert problem in found


# -- recurring schedules another tool wrote -----------------------------------------------


class _Tick(FutureCall):
    name = "pg.tick"
    max_concurrent = None
    ran: ClassVar[list[str | None]] = []

    async def invoke(self, session: Any, payload: Any) -> None:
        _Tick.ran.append(self.info.recurring_key)


#: (key, cron, timezone) of schedules no worker can plan: a cron expression cronsim
#: refuses, and a time zone no machine knows.
HOSTILE_SCHEDULES = [
    ("bad-cron", "every day at noon", "UTC"),
    ("bad-cron-field", "61 * * * * *", "UTC"),
    ("bad-zone", "* * * * * *", "Mars/Olympus_Mons"),
]


async def test_hostile_recurring_rows_stop_with_an_error_and_the_rest_keep_firing(
    caplog: pytest.LogCaptureFixture,
) -> None:
    _Tick.ran = []
    async with (
        open_test_postgres_store(recheck_interval=0.05) as store,
        open_scheduler(store, [_Tick], max_concurrent=4) as scheduler,
    ):
        schema = store.schema
        await scheduler.schedule_recurring(_Tick, key="good", every=0.05)
        for key, cron, zone in HOSTILE_SCHEDULES:
            # A copy of the good row, due now, as another tool would write it.
            await admin_fetch(
                f'INSERT INTO "{schema}".recurring (key, name, payload, cron, timezone, '
                "misfire, overlap, anchor, next_tick, created_at, updated_at) "
                "SELECT $1, name, payload, $2, $3, misfire, overlap, anchor, now(), "
                f"created_at, updated_at FROM \"{schema}\".recurring WHERE key = 'good'",
                key,
                cron,
                zone,
            )

        async def next_ticks() -> dict[str, datetime | None]:
            rows = await admin_fetch(f'SELECT key, next_tick FROM "{schema}".recurring')
            return {r[0]: r[1] for r in rows}

        async def all_stopped() -> bool:
            ticks = await next_ticks()
            return all(ticks[key] is None for key, _, _ in HOSTILE_SCHEDULES)

        with trio.fail_after(10):
            while not await all_stopped():  # noqa: ASYNC110 - the scheduler's writes
                await trio.sleep(0.05)
        # Each is stopped (no next tick) with an error that names it...
        errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
        for key, _, _ in HOSTILE_SCHEDULES:
            assert any(repr(key) in r.getMessage() for r in errors), (key, caplog.text)
        # ...and the worker keeps firing the good schedule.
        ran = len(_Tick.ran)
        await until(lambda: len(_Tick.ran) >= ran + 3, 10)
        assert (await next_ticks())["good"] is not None
    assert set(_Tick.ran) == {"good"}


async def test_priorities_out_of_range_are_refused_by_the_check() -> None:
    async with open_test_postgres_store() as store:
        for priority in (1001, -1001, 2**31 - 1):
            await refused(
                admin_fetch(
                    f'INSERT INTO "{store.schema}".calls (name, payload, due_at, scheduled_at, '
                    "priority) VALUES ('a', 'null', now(), now(), $1) RETURNING id",
                    priority,
                )
            )
        # The bounds themselves are stored, and claimed in priority order.
        ids = [
            (
                await admin_fetch(
                    f'INSERT INTO "{store.schema}".calls (name, payload, due_at, scheduled_at, '
                    "priority) VALUES ('a', 'null', now() - interval '1 hour', now(), $1) "
                    "RETURNING id",
                    priority,
                )
            )[0][0]
            for priority in (-1000, 1000)
        ]
        claimed = (await store.claim(now(), {"a": 5}, 5)).calls
        assert [(c.id, c.priority) for c in claimed] == [(ids[1], 1000), (ids[0], -1000)]

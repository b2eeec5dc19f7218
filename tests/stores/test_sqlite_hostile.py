"""SQLite rows another program wrote: whatever they hold, no row stops the scheduler.

A database at schema version 2 gets every hostile row we could think of, written with
``sqlite3`` directly. Opening the store runs migration 0003, which moves the calls
that break its constraints to dead letters (the reason and the original values in
the error) and fixes broken dead letters in place; afterwards such rows are refused.
Rows no CHECK can see (text that is not UTF-8) or that bypass them
(``PRAGMA ignore_check_constraints``) are dead-lettered by the claim that meets them.

Real files and threads, so real time (short waits on what the scheduler did).
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Callable, Iterator
from contextlib import closing, contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, ClassVar

import attrs
import pytest
import trio

from trio_futurecalls import (
    DeadLetter,
    FutureCall,
    PendingQuery,
    StoreError,
    open_scheduler,
    open_sqlite_store,
)
from trio_futurecalls.stores._sql import migrations
from trio_futurecalls.stores.sqlite._connection import to_micros
from trio_futurecalls.stores.sqlite._migrate import statements

NOW = datetime.now(UTC).replace(microsecond=0)
PAST = to_micros(NOW - timedelta(hours=1))
FUTURE = to_micros(NOW + timedelta(days=1))


class Ok(FutureCall):
    name = "ok"
    max_concurrent = None
    ran: ClassVar[list[Any]] = []

    async def invoke(self, session: Any, payload: Any) -> None:
        Ok.ran.append(payload)


@attrs.frozen
class Raw:
    """An SQL expression written as is (for values Python cannot bind, like text
    whose bytes are not UTF-8)."""

    sql: str


CALL_COLUMNS = ("name", "payload", "due_at", "identifier", "scheduled_at", "attempts")
GOOD_CALL: dict[str, object] = {
    "name": "ok",
    "payload": '"good"',
    "due_at": PAST,
    "identifier": None,
    "scheduled_at": PAST,
    "attempts": 0,
}

#: (label, what differs from a good call, text the dead letter's error must hold).
HOSTILE_CALLS: list[tuple[str, dict[str, object], str]] = [
    ("text scheduled_at", {"scheduled_at": "yesterday"}, "scheduled_at text 'yesterday'"),
    ("text due_at", {"due_at": "2030-01-01T00:00:00Z"}, "due_at text '2030-01-01T00:00:00Z'"),
    ("huge due_at", {"due_at": 2**62}, f"due_at integer {2**62}"),
    ("huge negative due_at", {"due_at": -(2**62)}, f"due_at integer {-(2**62)}"),
    ("real due_at", {"due_at": 1.5}, "due_at real 1.5"),
    ("blob due_at", {"due_at": b"\x01"}, "due_at blob X'01'"),
    ("largest scheduled_at", {"scheduled_at": 2**63 - 1}, f"scheduled_at integer {2**63 - 1}"),
    ("blob name", {"name": b"ok"}, "name blob X'6F6B'"),
    ("empty name", {"name": ""}, "name text ''"),
    ("name with a space", {"name": "has space"}, "name text 'has space'"),
    ("name too long", {"name": "n" * 201}, "name text 'nnn"),
    ("name not UTF-8", {"name": Raw("CAST(x'6fff' AS TEXT)")}, "name text X'6FFF'"),
    ("name with NUL", {"name": Raw("'ok' || char(0) || 'x'")}, "name text X'6F6B0078'"),
    ("blob payload", {"payload": b"{}"}, "payload blob X'7B7D'"),
    ("payload over 1 MiB", {"payload": '"' + "x" * (1 << 20) + '"'}, "payload text '\"xxxx"),
    ("payload with NUL", {"payload": Raw("'\"a' || char(0) || '\"'")}, "payload text X'22610022'"),
    ("empty identifier", {"identifier": ""}, "identifier text ''"),
    ("identifier too long", {"identifier": "i" * 256}, "identifier text 'iii"),
    ("blob identifier", {"identifier": b"k"}, "identifier blob X'6B'"),
    ("negative attempts", {"attempts": -1}, "attempts integer -1"),
    ("text attempts", {"attempts": "many"}, "attempts text 'many'"),
    ("huge attempts", {"attempts": 2**40}, f"attempts integer {2**40}"),
    ("real attempts", {"attempts": 2.5}, "attempts real 2.5"),
    ("empty lease owner", {"lease_owner": ""}, "lease_owner text ''"),
    ("negative id", {"id": -5}, "id -5 is not positive"),
    ("zero id", {"id": 0}, "id 0 is not positive"),
]

#: Calls 0003 cannot refuse (no CHECK sees bytes that are not UTF-8): the claim that
#: meets them moves them to dead letters.
NOT_UTF8_CALLS: list[tuple[str, dict[str, object], str]] = [
    ("payload not UTF-8", {"payload": Raw("CAST(x'22ff22' AS TEXT)")}, "payload text X'22FF22'"),
    ("identifier not UTF-8", {"identifier": Raw("CAST(x'ff' AS TEXT)")}, "identifier text X'FF'"),
]

DEAD_COLUMNS = (
    "call_id",
    "name",
    "payload",
    "due_at",
    "identifier",
    "scheduled_at",
    "failed_at",
    "error",
    "attempts",
)
GOOD_DEAD: dict[str, object] = {
    "call_id": 1000,
    "name": "ok",
    "payload": '"dead"',
    "due_at": PAST,
    "identifier": None,
    "scheduled_at": PAST,
    "failed_at": PAST,
    "error": "it failed",
    "attempts": 1,
}
HOSTILE_DEAD: list[tuple[str, dict[str, object], str]] = [
    ("text failed_at", {"failed_at": "then"}, "failed_at text 'then'"),
    ("blob name", {"name": b"\x00"}, "name blob X'00'"),
    ("blob payload", {"payload": b"\xff"}, "payload blob X'FF'"),
    ("negative attempts", {"attempts": -3}, "attempts integer -3"),
    ("text call_id", {"call_id": "x"}, "call_id text 'x'"),
    ("blob error", {"error": b"\x01"}, "error blob X'01'"),
    ("empty identifier", {"identifier": ""}, "identifier text ''"),
    ("huge due_at", {"due_at": 2**62}, f"due_at integer {2**62}"),
    ("negative id", {"id": -1}, "id -1 is not positive"),
]


def insert(conn: sqlite3.Connection, table: str, row: dict[str, object]) -> int:
    columns = list(row)
    values = [value.sql if isinstance(value, Raw) else "?" for value in row.values()]
    params = [value for value in row.values() if not isinstance(value, Raw)]
    cursor = conn.execute(
        f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({', '.join(values)})", params
    )
    assert cursor.lastrowid is not None
    return cursor.lastrowid


def refused(conn: sqlite3.Connection, table: str, row: dict[str, object]) -> bool:
    try:
        insert(conn, table, row)
    except sqlite3.IntegrityError as exc:
        return "CHECK constraint failed" in str(exc)
    return False


def v2_database(path: Path) -> sqlite3.Connection:
    """A database as the library left it at schema version 2."""
    conn = sqlite3.connect(path, isolation_level=None)
    for migration in migrations("sqlite")[:2]:
        for statement in statements(migration.sql):
            conn.execute(statement)
    conn.execute("PRAGMA user_version=2")
    return conn


@contextmanager
def raw_connection(path: Path, *, ignore_checks: bool = False) -> Iterator[sqlite3.Connection]:
    with closing(sqlite3.connect(path, isolation_level=None)) as conn:
        if ignore_checks:
            conn.execute("PRAGMA ignore_check_constraints=ON")
        yield conn


async def wait_for(predicate: Callable[[], bool], limit: float = 10.0) -> None:
    with trio.fail_after(limit):
        while not predicate():  # noqa: ASYNC110 - another thread/connection does the work
            await trio.sleep(0.02)


def by_call_id(letters: list[DeadLetter]) -> dict[int, DeadLetter]:
    return {d.call_id: d for d in letters}


async def test_hostile_rows_become_dead_letters_and_the_scheduler_runs_the_rest(
    tmp_path: Path,
) -> None:
    path = tmp_path / "calls.sqlite3"
    Ok.ran = []
    with closing(v2_database(path)) as conn:
        good_ids = [
            insert(conn, "futurecalls_calls", {**GOOD_CALL, "payload": f'"good-{i}"'})
            for i in range(3)
        ]
        later_id = insert(
            conn, "futurecalls_calls", {**GOOD_CALL, "payload": '"later"', "due_at": FUTURE}
        )
        hostile = {
            insert(conn, "futurecalls_calls", {**GOOD_CALL, **changes}): (label, says)
            for label, changes, says in HOSTILE_CALLS
        }
        not_utf8 = {
            insert(conn, "futurecalls_calls", {**GOOD_CALL, **changes}): (label, says)
            for label, changes, says in NOT_UTF8_CALLS
        }
        good_dead = insert(conn, "futurecalls_dead_letters", GOOD_DEAD)
        broken_dead = [
            (insert(conn, "futurecalls_dead_letters", {**GOOD_DEAD, **changes}), label, says)
            for label, changes, says in HOSTILE_DEAD
        ]
        # The highest id so far goes, as calls do: its id must never come back.
        highest_id = insert(conn, "futurecalls_calls", GOOD_CALL)
        conn.execute("DELETE FROM futurecalls_calls WHERE id = ?", (highest_id,))

    async with open_sqlite_store(path, recheck_interval=0.05) as store:
        # 0003 moved every call that breaks its constraints, with the reason and the
        # original value, and fixed the broken dead letters in place.
        letters = await store.dead_letters()
        moved = by_call_id(letters)
        for call_id, (label, says) in hostile.items():
            assert call_id in moved, label
            assert "schema migration 0003" in moved[call_id].error, label
            assert says in moved[call_id].error, (label, moved[call_id].error[:300])
        (kept,) = [d for d in letters if d.id == good_dead]
        assert (kept.error, kept.payload, kept.call_id) == ("it failed", '"dead"', 1000)
        fixed = [d for d in letters if "Schema migration 0003 fixed this dead letter" in d.error]
        assert len(fixed) == len(broken_dead)
        for dead_id, label, says in broken_dead:
            (match,) = [d for d in fixed if says in d.error]
            old_ids = [good_dead, *(d for d, _, _ in broken_dead)]
            assert match.id == dead_id if dead_id >= 1 else match.id > max(old_ids), label
        # A call that no CHECK could refuse is read as an error, never a raw exception.
        with pytest.raises(StoreError, match="not be read"):
            await store.pending(PendingQuery())
        async with open_scheduler(store, [Ok]) as scheduler:
            await wait_for(lambda: sorted(Ok.ran) == ["good-0", "good-1", "good-2"])
            # The claim that met the rows that are not UTF-8 moved them, with the reason.
            moved = by_call_id(await store.dead_letters())
            for call_id, (label, says) in not_utf8.items():
                assert "Moved to dead letters when claimed" in moved[call_id].error, label
                assert says in moved[call_id].error, label
            assert [c.id for c in await scheduler.pending()] == [later_id]
            # It keeps running: a call scheduled now runs, under a new id.
            new_id = await scheduler.schedule(Ok, "new")
            await wait_for(lambda: "new" in Ok.ran)
    assert new_id > highest_id
    assert not set(good_ids) & set(moved)


async def test_hostile_rows_are_refused_once_migrated(tmp_path: Path) -> None:
    path = tmp_path / "calls.sqlite3"
    v2_database(path).close()
    async with open_sqlite_store(path):
        pass
    with raw_connection(path) as conn:
        insert(conn, "futurecalls_calls", GOOD_CALL)
        insert(conn, "futurecalls_dead_letters", GOOD_DEAD)
        for label, changes, _ in HOSTILE_CALLS:
            assert refused(conn, "futurecalls_calls", {**GOOD_CALL, **changes}), label
        for label, changes, _ in HOSTILE_DEAD:
            assert refused(conn, "futurecalls_dead_letters", {**GOOD_DEAD, **changes}), label
        # The limits are the library's, to the microsecond and the character.
        for edge in (
            {"due_at": to_micros(datetime(1, 1, 2, tzinfo=UTC))},
            {"scheduled_at": to_micros(datetime(9999, 12, 30, 23, 59, 59, 999999, tzinfo=UTC))},
            {"name": "n" * 200, "identifier": "i" * 255, "attempts": 1_000_000},
            {"payload": '"' + "x" * ((1 << 20) - 2) + '"'},
        ):
            insert(conn, "futurecalls_calls", {**GOOD_CALL, **edge})


async def test_rows_that_bypass_the_constraints_are_dead_letters_when_claimed(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "calls.sqlite3"
    Ok.ran = []
    async with (
        open_sqlite_store(path, recheck_interval=0.05) as store,
        open_scheduler(store, [Ok], unknown_check_interval=0.05) as scheduler,
    ):
        with raw_connection(path, ignore_checks=True) as conn:
            bad = {
                insert(conn, "futurecalls_calls", {**GOOD_CALL, **changes}): says
                for label, changes, says in HOSTILE_CALLS
                if label in ("huge negative due_at", "text scheduled_at", "real due_at")
            }
            at_limit = insert(conn, "futurecalls_calls", {**GOOD_CALL, "attempts": 1_000_000})
            ghost = insert(conn, "futurecalls_calls", {**GOOD_CALL, "name": b"ghost"})
            insert(conn, "futurecalls_calls", {**GOOD_CALL, "payload": '"fine"'})
        await wait_for(lambda: Ok.ran == ["fine"])
        moved = by_call_id(await store.dead_letters())
        for call_id, says in bad.items():
            assert "Moved to dead letters when claimed" in moved[call_id].error
            assert says in moved[call_id].error
        # The claim counts an attempt: a row already at the limit cannot run.
        assert "the claim can add one to" in moved[at_limit].error
        assert moved[at_limit].attempts == 1_000_000
        # A name no claim asks for is kept; reading it is a StoreError, not a crash of
        # the unknown-names check, and the scheduler goes on.
        assert ghost not in moved
        with pytest.raises(StoreError, match="blob X'67686F7374'"):
            await scheduler.queue_lengths()
        await trio.sleep(0.2)
        await scheduler.schedule(Ok, "still running")
        await wait_for(lambda: "still running" in Ok.ran)
    assert "moved to dead letters" in caplog.text


async def test_rows_past_the_constraints_do_not_stop_later_migrations(tmp_path: Path) -> None:
    # Adding a column makes SQLite check every row against all the table's CHECKs:
    # a row written past them at schema 3 must not keep 0004 and later from running.
    path = tmp_path / "calls.sqlite3"
    with closing(v2_database(path)) as conn:
        for migration in migrations("sqlite")[2:3]:
            for statement in statements(migration.sql):
                conn.execute(statement)
        conn.execute("DROP TABLE futurecalls_calls_v2")  # (0003's data step, no rows)
        conn.execute("DROP TABLE futurecalls_dead_letters_v2")
        conn.execute("PRAGMA user_version=3")
    with raw_connection(path, ignore_checks=True) as conn:
        bad = insert(conn, "futurecalls_calls", {**GOOD_CALL, "attempts": -1})
        good = insert(conn, "futurecalls_calls", GOOD_CALL)
    async with open_sqlite_store(path) as store:
        with raw_connection(path) as conn:
            assert conn.execute("PRAGMA user_version").fetchone() == (len(migrations("sqlite")),)
        claim = await store.claim(NOW, {"ok": 5}, 5)
        assert [c.id for c in claim.calls] == [good]
        (moved,) = await store.dead_letters()
        assert moved.call_id == bad
        assert "attempts integer -1" in moved.error
    with raw_connection(path) as conn:  # the constraints hold again for new rows
        assert refused(conn, "futurecalls_calls", {**GOOD_CALL, "attempts": -1})


#: (A number becomes text in a TEXT column: not a bad key.)
BAD_KEYS: list[tuple[str, object, str]] = [
    ("empty unique_key", "", "unique_key text ''"),
    ("over-long unique_key", "k" * 256, "unique_key text 'kkk"),
    ("blob unique_key", b"k", "unique_key blob X'6B'"),
]


async def test_bad_unique_keys_are_refused_or_never_stop_a_claim(tmp_path: Path) -> None:
    path = tmp_path / "calls.sqlite3"
    Ok.ran = []
    async with open_sqlite_store(path):
        pass
    with raw_connection(path) as conn:
        for label, key, _ in BAD_KEYS:
            assert refused(conn, "futurecalls_calls", {**GOOD_CALL, "unique_key": key}), label
        insert(conn, "futurecalls_calls", {**GOOD_CALL, "unique_key": "k" * 255, "due_at": FUTURE})
    # Written past the CHECKs, a bad key makes listing fail with the reason (as any
    # bad value does); a claim never reads the key (it frees it): the calls run.
    with raw_connection(path, ignore_checks=True) as conn:
        for label, key, _ in BAD_KEYS:
            insert(
                conn, "futurecalls_calls", {**GOOD_CALL, "unique_key": key, "payload": f'"{label}"'}
            )
    async with open_sqlite_store(path) as store:
        with pytest.raises(StoreError, match="unique_key") as caught:
            await store.pending(PendingQuery())
        assert any(says in str(caught.value) for _, _, says in BAD_KEYS)
        async with open_scheduler(store, [Ok]) as scheduler:
            await wait_for(lambda: len(Ok.ran) == len(BAD_KEYS))
            # The keys were freed with their claims: the same keys are free again.
            assert await scheduler.schedule(
                Ok, "again", delay=60, unique_key="k", on_conflict="error"
            )
        assert sorted(Ok.ran) == sorted(label for label, _, _ in BAD_KEYS)
        assert [c.unique_key for c in await store.pending(PendingQuery())] == ["k", "k" * 255]


class Tick(FutureCall):
    name = "tick"
    max_concurrent = None
    ran: ClassVar[list[str | None]] = []

    async def invoke(self, session: Any, payload: Any) -> None:
        Tick.ran.append(self.info.recurring_key)


#: Schedules another tool wrote (columns changed from a good row): a cron expression
#: cronsim refuses, and a time zone no machine knows.
HOSTILE_SCHEDULES = {
    "bad-cron": {"cron": "every day at noon", "every": None},
    "bad-cron-field": {"cron": "61 * * * * *", "every": None},
    "bad-zone": {"cron": "* * * * * *", "every": None, "timezone": "Mars/Olympus_Mons"},
}


async def test_hostile_recurring_rows_stop_with_an_error_and_the_rest_keep_firing(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "calls.sqlite3"
    Tick.ran = []

    def next_ticks() -> dict[str, int | None]:
        with raw_connection(path) as conn:
            rows = conn.execute("SELECT key, next_tick FROM futurecalls_recurring").fetchall()
        return dict(rows)

    async with (
        open_sqlite_store(path, recheck_interval=0.05) as store,
        open_scheduler(store, [Tick]) as scheduler,
    ):
        await scheduler.schedule_recurring(Tick, key="good", every=0.05)
        with raw_connection(path) as conn:
            conn.row_factory = sqlite3.Row
            good = dict(conn.execute("SELECT * FROM futurecalls_recurring").fetchone())
            for key, changes in HOSTILE_SCHEDULES.items():
                insert(conn, "futurecalls_recurring", {**good, "key": key, **changes})
        # Each is stopped (no next tick) with an error that names it...
        await wait_for(lambda: all(next_ticks()[key] is None for key in HOSTILE_SCHEDULES))
        errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
        for key in HOSTILE_SCHEDULES:
            assert any(repr(key) in r.getMessage() for r in errors), (key, caplog.text)
        # ...and the worker keeps firing the good schedule.
        ran = len(Tick.ran)
        await wait_for(lambda: len(Tick.ran) >= ran + 3)
        assert next_ticks()["good"] is not None
    assert set(Tick.ran) == {"good"}


#: Priorities another program may write past the CHECK: (label, value, what the dead
#: letter's error says). A text that looks like a number becomes a number in an
#: INTEGER column, so it is no bad priority.
BAD_PRIORITIES: list[tuple[str, object, str]] = [
    ("priority above the range", 5000, "priority integer 5000"),
    ("priority below the range", -5000, "priority integer -5000"),
    ("real priority", 2.5, "priority real 2.5"),
    ("text priority", "high", "priority text 'high'"),
    ("blob priority", b"\x07", "priority blob X'07'"),
]


async def test_bad_priorities_are_refused_or_dead_lettered_when_claimed(tmp_path: Path) -> None:
    path = tmp_path / "calls.sqlite3"
    Ok.ran = []
    async with open_sqlite_store(path):
        pass
    with raw_connection(path) as conn:
        for label, priority, _ in BAD_PRIORITIES:
            assert refused(conn, "futurecalls_calls", {**GOOD_CALL, "priority": priority}), label
    with raw_connection(path, ignore_checks=True) as conn:
        bad = {
            insert(conn, "futurecalls_calls", {**GOOD_CALL, "priority": priority}): says
            for _, priority, says in BAD_PRIORITIES
        }
        # A bad row not due yet is never read by a claim.
        later = insert(conn, "futurecalls_calls", {**GOOD_CALL, "priority": 9999, "due_at": FUTURE})
        for priority in (-1000, 0, 1000):
            insert(
                conn,
                "futurecalls_calls",
                {**GOOD_CALL, "priority": priority, "payload": str(priority)},
            )
    async with open_sqlite_store(path) as store:
        with pytest.raises(StoreError, match="priority"):
            await store.pending(PendingQuery())
        async with open_scheduler(store, [Ok], max_concurrent=1) as scheduler:
            await wait_for(lambda: len(Ok.ran) == 3)
            moved = by_call_id(await store.dead_letters())
            assert set(moved) == set(bad)
            for call_id, says in bad.items():
                assert "Moved to dead letters when claimed" in moved[call_id].error
                assert says in moved[call_id].error
            await scheduler.shutdown(grace_period=0)
        # Highest priority first, one at a time (global limit 1).
        assert Ok.ran == [1000, 0, -1000]
    with raw_connection(path) as conn:
        assert conn.execute("SELECT id FROM futurecalls_calls").fetchall() == [(later,)]


@pytest.mark.parametrize(
    ("column", "value", "says"),
    [
        ("recurring_key", "", "recurring_key text ''"),
        ("recurring_key", b"\x01", "recurring_key blob X'01'"),
        ("tick_at", "soon", "tick_at text 'soon'"),
        ("tick_at", 2**62, f"tick_at integer {2**62}"),
    ],
)
async def test_bad_recurring_columns_are_dead_letters_when_claimed(
    tmp_path: Path, column: str, value: object, says: str
) -> None:
    # Every column a claim decodes is checked, the recurring ones included, whether
    # the row passes the claim's usual path or not (see claimed_call).
    path = tmp_path / "calls.sqlite3"
    Ok.ran = []
    async with (
        open_sqlite_store(path, recheck_interval=0.05) as store,
        open_scheduler(store, [Ok]),
    ):
        with raw_connection(path, ignore_checks=True) as conn:
            bad = insert(conn, "futurecalls_calls", {**GOOD_CALL, column: value})
            insert(conn, "futurecalls_calls", {**GOOD_CALL, "payload": '"fine"'})
        await wait_for(lambda: Ok.ran == ["fine"])
        moved = by_call_id(await store.dead_letters())
        assert "Moved to dead letters when claimed" in moved[bad].error
        assert says in moved[bad].error

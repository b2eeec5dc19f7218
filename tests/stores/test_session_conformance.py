"""Sessions: the same methods, with the same meanings, on every store.

The SQL stores (SQLite, PostgreSQL) run the same portable SQL here (``$1``
placeholders, a temporary table of the session's own connection); the memory store's
session has the methods but no database, and says so.
"""

from __future__ import annotations

from typing import Any

import pytest
from conftest import STORE_KINDS, open_store

from trio_futurecalls import (
    MemorySession,
    NewCall,
    NoDatabaseError,
    PendingQuery,
    Session,
    SQLiteSession,
    Store,
    StoredCall,
    StoreError,
)
from trio_futurecalls.stores.postgres import PostgresSession


def _all_sessions_are_sessions(
    pg: PostgresSession, sqlite: SQLiteSession, memory: MemorySession
) -> list[Session]:
    """mypy checks that every store's session class satisfies the protocol."""
    return [pg, sqlite, memory]


async def _raise_in_a_transaction(session: Session, sql: str) -> None:
    async with session.transaction():
        await session.execute(sql)
        raise KeyError("undo")


SQL_KINDS = [kind for kind in STORE_KINDS if kind != "memory"]


async def _a_call(store: Store) -> StoredCall:
    from datetime import UTC, datetime

    now = datetime.now(UTC)
    await store.schedule([NewCall(name="a", payload="null", due_at=now, scheduled_at=now)])
    (call,) = await store.pending(PendingQuery())
    return call


@pytest.mark.parametrize("store_kind", SQL_KINDS)
async def test_sql_sessions_run_the_same_code(store: Store) -> None:
    call = await _a_call(store)
    async with store.open_session(call) as session:
        assert isinstance(session, Session)
        assert session.call_id == call.id
        await session.execute("CREATE TEMP TABLE notes (id INTEGER PRIMARY KEY, body TEXT)")
        assert await session.execute("INSERT INTO notes (id, body) VALUES ($1, $2)", 1, "a") == (
            "INSERT 0 1"
        )
        await session.executemany(
            "INSERT INTO notes (id, body) VALUES ($1, $2)", [(2, "b"), (3, "c")]
        )
        assert await session.execute(
            "UPDATE notes SET body = body || $1 WHERE id > $2", "!", 1
        ) == ("UPDATE 2")
        assert await session.execute("DELETE FROM notes WHERE id = $1", 99) == "DELETE 0"
        assert await session.execute("SELECT id FROM notes") == "SELECT 3"
        rows = await session.fetch("SELECT id, body FROM notes ORDER BY id")
        assert [(row[0], row["body"]) for row in rows] == [(1, "a"), (2, "b!"), (3, "c!")]
        row = await session.fetchrow("SELECT id, body FROM notes WHERE id = $1", 2)
        assert row is not None
        assert (row["id"], row[1]) == (2, "b!")
        assert await session.fetchrow("SELECT id FROM notes WHERE id = $1", 99) is None
        assert await session.fetchval("SELECT count(*) FROM notes") == 3
        assert await session.fetchval("SELECT id FROM notes WHERE id = $1", 99) is None

        # A transaction commits when its block ends...
        async with session.transaction() as same:
            assert same is session
            await session.execute("INSERT INTO notes (id, body) VALUES ($1, $2)", 4, "d")
        assert await session.fetchval("SELECT count(*) FROM notes") == 4
        # ... and rolls back when it raises; nested, it is a savepoint.
        with pytest.raises(KeyError):
            await _raise_in_a_transaction(session, "DELETE FROM notes")
        assert await session.fetchval("SELECT count(*) FROM notes") == 4
        async with session.transaction():
            await session.execute("INSERT INTO notes (id, body) VALUES ($1, $2)", 5, "e")
            with pytest.raises(KeyError):  # (only the inner one is undone)
                await _raise_in_a_transaction(session, "DELETE FROM notes")
            await session.executemany("INSERT INTO notes (id, body) VALUES ($1, $2)", [(6, "f")])
        assert await session.fetchval("SELECT count(*) FROM notes") == 6

        # Driver errors are the library's, with the driver's as the cause.
        with pytest.raises(StoreError) as failed:
            await session.execute("INSERT INTO notes (id, body) VALUES ($1, $2)", 1, "again")
        assert failed.value.__cause__ is not None
        with pytest.raises(StoreError):
            await session.fetch("SELEKT nothing")
        assert await session.fetchval("SELECT count(*) FROM notes") == 6  # still usable
    assert session.closed


@pytest.mark.parametrize("store_kind", ["memory"])
async def test_the_memory_session_has_no_database_and_says_so(store: Store) -> None:
    call = await _a_call(store)
    async with store.open_session(call) as session:
        assert isinstance(session, Session)
        assert session.call_id == call.id
        calls: list[Any] = [
            lambda: session.execute("SELECT 1"),
            lambda: session.executemany("SELECT $1", [(1,)]),
            lambda: session.fetch("SELECT 1"),
            lambda: session.fetchrow("SELECT 1"),
            lambda: session.fetchval("SELECT 1"),
        ]
        for call_sql in calls:
            with pytest.raises(NoDatabaseError, match=r"no database.*SQLite store"):
                await call_sql()
        with pytest.raises(NoDatabaseError, match=r"MemorySession\.transaction\(\)"):
            session.transaction()
    # It is also a NotImplementedError (what code that probes for support catches).
    assert issubclass(NoDatabaseError, NotImplementedError)


async def test_sqlite_sessions_still_take_one_tuple_of_parameters(tmp_path: Any) -> None:
    async with open_store("sqlite", tmp_path) as store:
        call = await _a_call(store)
        async with store.open_session(call) as session:
            await session.execute("CREATE TABLE t (x, y)")
            await session.execute("INSERT INTO t VALUES (?, ?)", (1, 2))  # as before
            await session.execute("INSERT INTO t VALUES (?, ?)", 3, 4)
            await session.execute("INSERT INTO t VALUES (:x, :y)", {"x": 5, "y": 6})
            await session.execute("INSERT INTO t VALUES ($1, $2)", [7, 8])
            rows = await session.fetch("SELECT x, y FROM t ORDER BY x")
            assert [tuple(r) for r in rows] == [(1, 2), (3, 4), (5, 6), (7, 8)]
            assert dict(rows[0]) == {"x": 1, "y": 2}

"""Review of issue 15: the SQLite session's PostgreSQL-style placeholders, and the
command tags ``execute`` returns (the same on every SQL store)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
from conftest import STORE_KINDS

from trio_futurecalls import NewCall, PendingQuery, Store, StoreError, open_sqlite_store

SQL_KINDS = [kind for kind in STORE_KINDS if kind != "memory"]


async def test_a_dollar_digit_in_a_literal_or_comment_is_no_placeholder(tmp_path: Path) -> None:
    # SQL with SQLite's own "?" placeholders that holds "$1" in a string literal or a
    # comment (a price, a note) is not PostgreSQL-style SQL: its "?" must still bind.
    async with open_sqlite_store(tmp_path / "s.sqlite3") as store:
        now = datetime.now(UTC)
        await store.schedule([NewCall(name="a", payload="null", due_at=now, scheduled_at=now)])
        (call,) = await store.pending(PendingQuery())
        async with store.open_session(call) as session:
            assert await session.fetchval("SELECT '$1 off: ' || ?", "x") == "$1 off: x"
            assert await session.fetchval("SELECT ? -- $1", "y") == "y"
            assert await session.fetchval('SELECT ? AS "$1"', "z") == "z"
            # And real $1 placeholders next to a literal that holds one still work.
            assert await session.fetchval("SELECT '$2' || $1", "w") == "$2w"


@pytest.mark.parametrize("store_kind", SQL_KINDS)
async def test_execute_returns_the_command_tag_whatever_precedes_the_verb(store: Store) -> None:
    # The session protocol: execute returns PostgreSQL's command tag, on every store.
    # A leading comment, a WITH clause or a RETURNING clause does not change it.
    now = datetime.now(UTC)
    await store.schedule([NewCall(name="a", payload="null", due_at=now, scheduled_at=now)])
    (call,) = await store.pending(PendingQuery())
    async with store.open_session(call) as session:
        await session.execute("CREATE TEMP TABLE tags (x INTEGER)")
        tags = [
            await session.execute("-- a note\nINSERT INTO tags (x) VALUES ($1)", 1),
            await session.execute("/* a note */ INSERT INTO tags (x) VALUES ($1)", 2),
            await session.execute("INSERT INTO tags (x) VALUES ($1) RETURNING x", 3),
            await session.execute("WITH s AS (SELECT 1 AS v) UPDATE tags SET x = x + 1"),
            await session.execute("UPDATE tags SET x = x + 1 WHERE x > $1 RETURNING x", 3),
            await session.execute("WITH s AS (SELECT 1 AS v) SELECT v FROM s"),
            await session.execute("DELETE FROM tags WHERE x > $1 RETURNING x", 4),
        ]
    assert tags == [
        "INSERT 0 1",
        "INSERT 0 1",
        "INSERT 0 1",
        "UPDATE 3",
        "UPDATE 1",
        "SELECT 1",
        "DELETE 1",
    ]


@pytest.mark.parametrize("store_kind", SQL_KINDS)
async def test_executemany_is_atomic_inside_a_transaction_too(store: Store) -> None:
    # "executemany: one statement per row of arguments, atomically": a row that fails
    # takes the rows before it along, in a transaction as outside one.
    now = datetime.now(UTC)
    await store.schedule([NewCall(name="a", payload="null", due_at=now, scheduled_at=now)])
    (call,) = await store.pending(PendingQuery())
    async with store.open_session(call) as session:
        await session.execute("CREATE TEMP TABLE once (x INTEGER PRIMARY KEY)")
        with pytest.raises(StoreError):
            await session.executemany("INSERT INTO once (x) VALUES ($1)", [(1,), (2,), (1,)])
        assert await session.fetchval("SELECT count(*) FROM once") == 0
        async with session.transaction():
            with pytest.raises(StoreError):
                await session.executemany("INSERT INTO once (x) VALUES ($1)", [(1,), (2,), (1,)])
        assert await session.fetchval("SELECT count(*) FROM once") == 0

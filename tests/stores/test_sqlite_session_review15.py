"""Review of issue 15: the SQLite session's PostgreSQL-style placeholders."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from trio_futurecalls import NewCall, PendingQuery, open_sqlite_store


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

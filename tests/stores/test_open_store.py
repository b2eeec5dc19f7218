"""``open_store(url, **options)`` opens real stores: memory, SQLite files, PostgreSQL.

The URL and option errors (no store opened) are in ``tests/unit/test_store_urls.py``.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
import trio

from trio_futurecalls import MemoryStore, NewCall, PendingQuery, SQLiteStore, Store, open_store

T0 = datetime(2030, 1, 1, tzinfo=UTC)


def new(name: str) -> NewCall:
    return NewCall(name=name, payload="null", due_at=T0, identifier=None, scheduled_at=T0)


async def names(store: Store) -> list[str]:
    return sorted(call.name for call in await store.pending(PendingQuery()))


async def test_memory_is_a_new_empty_store_each_time() -> None:
    async with open_store("memory://") as store:
        assert isinstance(store, MemoryStore)
        await store.schedule([new("a")])
        assert await names(store) == ["a"]
    async with open_store("memory://") as again:
        assert again is not store
        assert await names(again) == []


async def test_sqlite_relative_and_absolute_paths(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "sub").mkdir()
    async with open_store("sqlite:///sub/calls.sqlite3") as store:
        assert isinstance(store, SQLiteStore)
        await store.schedule([new("a")])
    absolute = f"sqlite:///{tmp_path / 'sub' / 'calls.sqlite3'}"
    assert absolute.startswith("sqlite:////")
    async with open_store(absolute) as store:
        assert await names(store) == ["a"]


async def test_sqlite_options_reach_the_opener(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'calls.sqlite3'}"
    for mode, number in (("NORMAL", 1), ("FULL", 2)):
        async with open_store(url, synchronous=mode, busy_timeout=1.0) as store:
            await store.schedule([new(mode)])
            call = (await store.pending(PendingQuery()))[-1]
            async with store.open_session(call) as session:
                assert await session.fetchval("PRAGMA synchronous") == number


@pytest.mark.postgres
@pytest.mark.parametrize("scheme", ["postgresql", "postgres"])
async def test_postgres_with_its_options(scheme: str) -> None:
    from pg_support import admin_fetch, drop_schema, pg_dsn, random_schema, require_postgres

    require_postgres()
    schema = random_schema()
    url = pg_dsn().replace("postgresql://", f"{scheme}://", 1)
    assert url.startswith(f"{scheme}://")
    try:
        async with open_store(
            url,
            schema=schema,
            application_name="trio_futurecalls_test_open_store",
            max_pool_size=2,
        ) as store:
            assert type(store).__name__ == "PostgresStore"
            await store.schedule([new("pg")])
            assert await names(store) == ["pg"]
        rows = await admin_fetch(f'SELECT name FROM "{schema}".calls')
        assert [row["name"] for row in rows] == ["pg"]
    finally:
        with trio.CancelScope(shield=True):
            await drop_schema(schema)

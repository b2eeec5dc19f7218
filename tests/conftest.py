"""Shared fixtures. ``store`` runs a test once per store adapter (the conformance suite)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from trio_futurecalls import MemoryStore, Store, open_sqlite_store


def _postgres_kinds() -> list[str]:
    """["postgres"] when the test server is reachable, or under CI=true (where an
    unreachable server then fails the tests instead of skipping them)."""
    from pg_support import postgres_available

    return ["postgres"] if postgres_available() else []


#: Every store adapter the conformance suite runs against.
STORE_KINDS = ["memory", "sqlite", *_postgres_kinds()]


@asynccontextmanager
async def _memory_store() -> AsyncIterator[MemoryStore]:
    store = MemoryStore()
    yield store
    assert not store.open_sessions, "a session was left open"


def open_store(kind: str, tmp_path: Path) -> AbstractAsyncContextManager[Any]:
    """Open a fresh, isolated store of ``kind``."""
    if kind == "memory":
        return _memory_store()
    if kind == "sqlite":
        return open_sqlite_store(tmp_path / "calls.sqlite3", synchronous="NORMAL")
    if kind == "postgres":
        from pg_support import open_test_postgres_store

        return open_test_postgres_store()
    raise AssertionError(kind)


@pytest.fixture(params=STORE_KINDS)
def store_kind(request: pytest.FixtureRequest) -> str:
    kind: str = request.param
    return kind


@pytest.fixture
async def store(store_kind: str, tmp_path: Path) -> AsyncIterator[Store]:
    async with open_store(store_kind, tmp_path) as opened:
        yield opened

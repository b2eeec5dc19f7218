"""Shared fixtures. ``store`` runs a test once per store adapter (the conformance suite).

Tests live in folders by kind:

* ``unit/``: pure functions and small objects; no scheduler loop, no I/O.
* ``engine/``: the scheduler on the memory store, under Trio's ``autojump_clock``.
* ``stores/``: the conformance suite every store passes, and SQLite specifics.
* ``postgres/``: the PostgreSQL store against a real server (marked ``postgres``).
* ``cli/``: the ``futurecalls`` command in process (``cli.main``), on SQLite in ``tmp_path``.
* ``processes/``: real subprocesses: the CLI, SIGKILLed workers (marked ``slow``).

Markers follow the folder, so ``-m "not slow"`` runs everything quick.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from cli_support import cli_runner

from trio_futurecalls import MemoryStore, Store, open_sqlite_store
from trio_futurecalls.testing import trio_wall_clock


def _postgres_kinds() -> list[str]:
    """["postgres"] when the test server is reachable, or under CI=true (where an
    unreachable server then fails the tests instead of skipping them)."""
    from pg_support import postgres_available

    return ["postgres"] if postgres_available() else []


_FOLDER_MARKERS = {"postgres": ("postgres", "slow"), "processes": ("slow",)}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        folder = item.path.parent.name
        for marker in _FOLDER_MARKERS.get(folder, ()):
            item.add_marker(marker)
        # The conformance suite's PostgreSQL runs need the server too.
        callspec = getattr(item, "callspec", None)
        if callspec is not None and callspec.params.get("store_kind") == "postgres":
            item.add_marker("postgres")


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


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    """The CLI's main() installs its own root handler, on the stderr pytest captured
    for that test (closed afterwards), and sets logger levels: undo it after every
    test, or a later test's log record goes to a closed file."""
    loggers = [logging.getLogger(), *map(logging.getLogger, logging.root.manager.loggerDict)]
    saved = [(logger, logger.handlers[:], logger.level) for logger in loggers]
    yield
    for logger, handlers, level in saved:
        logger.handlers[:] = handlers
        logger.setLevel(level)


@pytest.fixture(params=STORE_KINDS)
def store_kind(request: pytest.FixtureRequest) -> str:
    kind: str = request.param
    return kind


@pytest.fixture
async def store(store_kind: str, tmp_path: Path) -> AsyncIterator[Store]:
    async with open_store(store_kind, tmp_path) as opened:
        yield opened


@pytest.fixture
def db(tmp_path: Path) -> Path:
    """The SQLite file of the ``cli`` fixture's store."""
    return tmp_path / "calls.sqlite3"


@pytest.fixture
def cli(db: Path, capsys: pytest.CaptureFixture[str]) -> Any:
    """Runs ``futurecalls`` in process on the SQLite store ``db`` (see cli_support)."""
    return cli_runner(db, capsys)


@pytest.fixture
async def clock() -> Callable[[], datetime]:
    """A wall clock that follows Trio's clock (with ``autojump_clock``: engine tests)."""
    return trio_wall_clock()

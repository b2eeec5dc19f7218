"""The embedded durable default store: one SQLite file, stdlib ``sqlite3``.

``sqlite3`` blocks, so every operation runs in a worker thread
(``trio.to_thread.run_sync``) and never on the event loop. The store's own connection
is used by one thread at a time (a ``CapacityLimiter(1)``); each running call's session
opens its own connection to the same file. The database is in WAL mode (readers do not
block the writer), ``synchronous=FULL`` by default (a call acknowledged by ``schedule``
survives power loss), and its schema is versioned with ``PRAGMA user_version``.

Several processes may share one file (e.g. a web process that schedules and a worker
that runs): SQLite's locking keeps claims atomic (``BEGIN IMMEDIATE``). Changes made
through this store wake the dispatcher at once; SQLite cannot push changes made by
other connections, so a watcher task reads ``PRAGMA data_version`` (one cheap pragma,
no table access) every ``recheck_interval`` seconds and wakes the dispatcher only when
another connection committed something. The dispatcher itself never polls. The watcher
runs only while the store has wake-up listeners (a scheduler that runs calls): a
process that only schedules reads nothing.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Final

import trio

from ..._errors import InvalidArgumentError, StoreError
from ..._util import BlockError, background_nursery, fixup_module_metadata, raise_unwrapped
from ..._validate import check_positive_seconds
from ._connection import SYNC_MODES, connect, translate
from ._migrate import migrate
from ._session import SQLiteSession as SQLiteSession
from ._store import SQLiteStore as SQLiteStore

__all__ = ["DEFAULT_RECHECK_INTERVAL", "SQLiteSession", "SQLiteStore", "open_sqlite_store"]

#: Seconds between the dispatcher's re-checks for changes made by other processes.
DEFAULT_RECHECK_INTERVAL: Final = 1.0


@asynccontextmanager
async def open_sqlite_store(
    path: str | os.PathLike[str],
    *,
    recheck_interval: float | None = DEFAULT_RECHECK_INTERVAL,
    synchronous: str = "FULL",
    busy_timeout: float = 5.0,
) -> AsyncIterator[SQLiteStore]:
    """Open (creating and migrating if needed) the SQLite store at ``path``.

    * ``recheck_interval``: seconds between checks (``PRAGMA data_version``) for
      changes made by *other* connections, e.g. calls scheduled by another process;
      the dispatcher is woken only when there was one (None: never check; only calls
      scheduled through this store wake the dispatcher).
    * ``synchronous``: SQLite's ``PRAGMA synchronous`` (``FULL`` keeps every
      acknowledged call through power loss; ``NORMAL`` is faster and still safe against
      process crashes in WAL mode).
    * ``busy_timeout``: seconds to wait for another process's lock.
    """
    text_path = os.fspath(path)
    if not isinstance(text_path, str) or not text_path:
        raise InvalidArgumentError(f"path must be a non-empty path, got {path!r}")
    if "\x00" in text_path:
        raise InvalidArgumentError(f"path must not contain NUL characters, got {path!r}")
    if text_path == ":memory:":
        raise InvalidArgumentError(
            "':memory:' would give every session its own empty database; use MemoryStore"
        )
    mode = synchronous.upper() if isinstance(synchronous, str) else synchronous
    if mode not in SYNC_MODES:
        raise InvalidArgumentError(f"synchronous must be one of {SYNC_MODES}, got {synchronous!r}")
    recheck = check_positive_seconds(recheck_interval, "recheck_interval", allow_none=True)
    if recheck == 0:
        raise InvalidArgumentError("recheck_interval must be > 0 or None")
    timeout = check_positive_seconds(busy_timeout, "busy_timeout")
    assert timeout is not None

    def open_and_migrate() -> sqlite3.Connection:
        conn = connect(text_path, mode, timeout)
        try:
            migrate(conn)
        except BaseException:
            conn.close()
            raise
        return conn

    try:
        conn = await trio.to_thread.run_sync(open_and_migrate)
    except sqlite3.Error as exc:
        raise translate(exc) from exc
    store = SQLiteStore(
        text_path, conn, recheck_interval=recheck, synchronous=mode, busy_timeout=timeout
    )
    block = BlockError()
    try:
        try:
            async with background_nursery(block) as nursery:
                if store._watch is not None:
                    # Runs while the store has wake-up listeners (a scheduler that
                    # runs calls): a store that only schedules polls nothing.
                    store._watch.attach(nursery)
                try:
                    yield store
                finally:
                    if store._watch is not None:
                        store._watch.detach()
        finally:
            with trio.CancelScope(shield=True):
                await store.aclose()
    except BaseExceptionGroup as group:
        raise_unwrapped(group, block.exc, lambda e: StoreError(f"SQLite store: {e!r}"))


fixup_module_metadata(__name__, globals())

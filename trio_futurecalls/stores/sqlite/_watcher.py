"""Other processes' commits to a SQLite file, seen through ``PRAGMA data_version``.

SQLite cannot push a change to another connection (PostgreSQL has NOTIFY:
``postgres/_listener.py``). :class:`DataVersionWatcher` reads ``data_version`` every
``interval`` on the store's own connection; it moves only when *another* connection
committed, and then the store's listeners are woken (``WAKE_NOW``). The store runs it
only while someone listens (``_on_demand.py``).
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Awaitable, Callable

import trio

from ..._errors import StoreClosedError, StoreError

_log = logging.getLogger("trio_futurecalls.store.sqlite")

#: Runs a function on the store's connection (in its thread).
RunOnConnection = Callable[[Callable[[sqlite3.Connection], int]], Awaitable[int]]


def _version(conn: sqlite3.Connection) -> int:
    value: int = conn.execute("PRAGMA data_version").fetchone()[0]
    return value


class DataVersionWatcher:
    """Wakes the store's listeners (``changed()``) when another connection committed."""

    def __init__(
        self, path: str, run: RunOnConnection, changed: Callable[[], None], interval: float
    ) -> None:
        self._path = path
        self._run = run
        self._changed = changed
        self._interval = interval
        #: Set once the current run has read its first data_version.
        self.watching = trio.Event()
        #: The data_version read last (None: never read).
        self._last: int | None = None

    async def run(self) -> None:
        """Read ``data_version`` every interval until cancelled or the store closes."""
        try:
            while True:
                try:
                    current = await self._run(_version)
                except StoreClosedError:
                    return
                except StoreError as exc:
                    _log.warning("could not check %s for changes: %s", self._path, exc)
                else:
                    # data_version moves only for commits by *other* connections. The
                    # last one read is kept across runs (same connection): a run that
                    # follows another (stopped, then wanted again before it ended, so
                    # that wait_listening did not wait for this one) tells the commits
                    # made in between.
                    if self._last is not None and current != self._last:
                        self._changed()
                    self._last = current
                    self.watching.set()
                await trio.sleep(self._interval)
        finally:
            self.watching = trio.Event()

"""The session a running call gets from the SQLite store: its own connection."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar, final

import trio

from ..._errors import StoreClosedError
from ._connection import connect, translate

T = TypeVar("T")


@final
class SQLiteSession:
    """A running call's own connection to the store's SQLite file.

    The connection is opened on first use and closed when the call ends. Methods run in
    a worker thread; the session is never shared between calls.
    """

    def __init__(self, path: str, synchronous: str, busy_timeout: float) -> None:
        self._path = path
        self._synchronous = synchronous
        self._busy_timeout = busy_timeout
        self._conn: sqlite3.Connection | None = None
        self._limiter = trio.CapacityLimiter(1)
        self.closed = False

    @property
    def path(self) -> str:
        return self._path

    async def _run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        if self.closed:
            raise StoreClosedError("this session ended with its call")

        def work() -> T:
            if self._conn is None:
                self._conn = connect(self._path, self._synchronous, self._busy_timeout)
            return fn(self._conn)

        try:
            return await trio.to_thread.run_sync(work, limiter=self._limiter)
        except sqlite3.Error as exc:
            raise translate(exc) from exc

    async def execute(
        self, sql: str, parameters: Sequence[Any] | Mapping[str, Any] = ()
    ) -> list[Any]:
        """Run one parameterized statement (autocommit); return all result rows."""
        return await self._run(lambda conn: conn.execute(sql, parameters).fetchall())

    async def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        """Run one statement for each parameter row, in one transaction."""

        def work(conn: sqlite3.Connection) -> None:
            with conn:
                conn.execute("BEGIN")
                conn.executemany(sql, rows)

        await self._run(work)

    async def aclose(self) -> None:
        self.closed = True
        conn, self._conn = self._conn, None
        if conn is not None:
            await trio.to_thread.run_sync(conn.close, limiter=self._limiter)

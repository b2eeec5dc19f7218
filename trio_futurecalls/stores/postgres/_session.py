"""Sessions: a running call's own database handle, and the scope that opens and closes
it around the call.

A session takes one pool connection on first use and keeps it until its call ends;
it is never shared between calls. Its connection is fully reset when released (see
:mod:`._pool`).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager, suppress
from typing import Any, Literal, final

import asyncpg
import asyncpg.exceptions
import trio
from asyncpg.pool import PoolConnectionProxy

from ..._errors import StoreClosedError, StoreError
from ._errors import bridge, on_connection
from ._pool import Connections

_log = logging.getLogger("trio_futurecalls.store.postgres.session")

#: Transaction isolation levels accepted by :meth:`PostgresSession.transaction`.
IsolationLevel = Literal["read_committed", "read_uncommitted", "serializable", "repeatable_read"]


@final
class PostgresSession:
    """A running call's own database handle: one pool connection, taken on first use.

    The connection is released when the call ends; the session is never shared
    between calls. Methods take ``$1, $2...`` parameters. Driver errors are raised as
    :class:`StoreError` / :class:`StoreUnavailableError` with the asyncpg exception as
    ``__cause__`` (e.g. to inspect a unique violation).

    For anything not wrapped here, :meth:`connection` returns the raw asyncpg
    connection. It lives on the store's asyncio loop, so call it through the bridge
    with that loop::

        from trio_asyncio import aio_as_trio

        conn = await session.connection()
        await aio_as_trio(conn.copy_records_to_table, loop=session.loop)("t", records=rows)

    Do not keep the connection after the call ends.
    """

    def __init__(self, loop: Any, connections: Connections, call_id: int) -> None:
        self._loop = loop
        self._connections = connections
        self._conn: PoolConnectionProxy | None = None
        self._lock: trio.Lock | None = None  # made on first use: most calls never use it
        self.call_id = call_id
        self.closed = False

    @property
    def loop(self) -> Any:
        """The store's asyncio loop (trio-asyncio), for raw calls on :meth:`connection`."""
        return self._loop

    @property
    def acquired(self) -> bool:
        """Whether this session holds a pool connection (it took one on first use)."""
        return self._conn is not None

    async def connection(self) -> PoolConnectionProxy:
        """The session's asyncpg connection (acquired now if not yet)."""
        if self.closed:
            raise StoreClosedError("this session ended with its call")
        if self._conn is None:
            if self._lock is None:
                self._lock = trio.Lock()
            async with self._lock:
                if self._conn is None:
                    self._conn = await bridge(
                        self._loop, "acquire", self._connections.acquire_session
                    )
        return self._conn

    async def _run(self, what: str, method: str, *args: Any) -> Any:
        """One bridge crossing: ``method`` of the session's connection."""
        conn = await self.connection()
        return await bridge(self._loop, what, on_connection, conn, getattr(conn, method), *args)

    async def execute(self, sql: str, *args: Any) -> str:
        """Run a statement; return its status (e.g. ``"INSERT 0 1"``)."""
        result: str = await self._run("session execute", "execute", sql, *args)
        return result

    async def executemany(self, sql: str, args: Sequence[Sequence[Any]]) -> None:
        """Run a statement once per argument tuple (in one implicit transaction)."""
        await self._run("session executemany", "executemany", sql, args)

    async def fetch(self, sql: str, *args: Any) -> list[asyncpg.Record]:
        """Run a query; return every row (asyncpg ``Record``: by index or by name)."""
        rows: list[asyncpg.Record] = await self._run("session fetch", "fetch", sql, *args)
        return rows

    async def fetchrow(self, sql: str, *args: Any) -> asyncpg.Record | None:
        """Run a query; return its first row or None."""
        row: asyncpg.Record | None = await self._run("session fetchrow", "fetchrow", sql, *args)
        return row

    async def fetchval(self, sql: str, *args: Any) -> Any:
        """Run a query; return the first column of its first row (None if no row)."""
        return await self._run("session fetchval", "fetchval", sql, *args)

    @asynccontextmanager
    async def transaction(
        self, *, isolation: IsolationLevel | None = None, readonly: bool = False
    ) -> AsyncIterator[PostgresSession]:
        """``async with session.transaction():`` commits on success, rolls back on error."""
        conn = await self.connection()
        tx = conn.transaction(isolation=isolation, readonly=readonly)
        try:
            # Inside the try: a BEGIN cancelled half-way must still be rolled back.
            await bridge(self._loop, "begin", on_connection, conn, tx.start)
            yield self
        except BaseException:
            with trio.move_on_after(10, shield=True):
                try:
                    await bridge(self._loop, "rollback", on_connection, conn, tx.rollback)
                except StoreError as exc:
                    _log.warning("rollback failed: %s", exc)
            raise
        await bridge(self._loop, "commit", on_connection, conn, tx.commit)

    async def aclose(self) -> None:
        """Release the connection to the pool (the store does this when the call ends)."""
        self.closed = True
        conn, self._conn = self._conn, None
        if conn is None:
            return
        with trio.move_on_after(10, shield=True) as scope:
            try:
                # release() resets the connection (rolls back an open transaction,
                # or terminates a connection left busy by a cancelled query).
                await bridge(self._loop, "release", self._connections.release_session, conn, 5)
            except StoreError as exc:
                _log.warning("could not release a session's connection cleanly: %s", exc)
        if scope.cancelled_caught:
            with suppress(asyncpg.exceptions.InterfaceError):  # already detached
                conn.terminate()


@final
class Sessions:
    """The store's open sessions: :meth:`scope` opens one per running call.

    ``check_open`` raises :class:`StoreClosedError` once the store is closed: no
    session opens after that.
    """

    __slots__ = ("_check_open", "_connections", "_loop", "_open")

    def __init__(
        self, loop: Any, connections: Connections, check_open: Callable[[], object]
    ) -> None:
        self._loop = loop
        self._connections = connections
        self._check_open = check_open
        self._open: set[PostgresSession] = set()

    def __len__(self) -> int:
        return len(self._open)

    def scope(self, call_id: int) -> SessionScope:
        """``async with sessions.scope(call_id) as session``: closed on exit."""
        return SessionScope(self, call_id)


@final
class SessionScope:
    """What :meth:`PostgresStore.open_session` returns: opens the session on entry and
    closes it (releasing its connection, if it took one) on exit. A plain class rather
    than ``@asynccontextmanager``: every call opens one, even calls that never use it.
    """

    __slots__ = ("_call_id", "_session", "_sessions")

    def __init__(self, sessions: Sessions, call_id: int) -> None:
        self._sessions = sessions
        self._call_id = call_id
        self._session: PostgresSession | None = None

    async def __aenter__(self) -> PostgresSession:
        sessions = self._sessions
        sessions._check_open()
        session = self._session = PostgresSession(
            sessions._loop, sessions._connections, self._call_id
        )
        sessions._open.add(session)
        return session

    async def __aexit__(self, *exc_info: object) -> None:
        session = self._session
        if session is not None:
            self._sessions._open.discard(session)
            await session.aclose()  # shielded inside

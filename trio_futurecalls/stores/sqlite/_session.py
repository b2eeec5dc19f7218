"""The session a running call gets from the SQLite store: its own connection.

It offers the methods of every SQL store's session (:class:`trio_futurecalls.Session`:
``execute``, ``executemany``, ``fetch``, ``fetchrow``, ``fetchval``,
``transaction()``) with PostgreSQL's meanings, so that a call's code tested on SQLite
runs on PostgreSQL (SQL dialects aside).
"""

from __future__ import annotations

import logging
import re
import sqlite3
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import Any, Final, TypeVar, final

import trio

from ..._errors import StoreClosedError, StoreError
from ..._model import StoredCall
from ._connection import connect, translate

T = TypeVar("T")

_log = logging.getLogger("trio_futurecalls.store.sqlite.session")

#: The parts of SQL that matter here: a PostgreSQL-style placeholder (``$1``, which
#: SQLite reads as a named parameter), a word, a parenthesis; and, matched first so
#: that what they hold is skipped, string literals, quoted identifiers and comments.
_PARTS: Final = re.compile(
    r"""'(?:[^']|'')*'|"(?:[^"]|"")*"|`[^`]*`|\[[^\]]*\]|--[^\n]*|/\*.*?(?:\*/|\Z)"""
    r"|(\$[0-9])|([A-Za-z_]+)|([()])",
    re.DOTALL,
)
#: The words that start the statement after a ``WITH`` clause.
_MAIN_VERBS: Final = frozenset({"SELECT", "INSERT", "REPLACE", "UPDATE", "DELETE", "VALUES"})


def _numbered(sql: str) -> bool:
    """Whether ``sql`` has a ``$1``-style placeholder (outside literals and comments)."""
    return any(match.group(1) for match in _PARTS.finditer(sql))


def _verb(sql: str) -> str:
    """The statement's verb, upper case: its first word past comments, or for one
    that opens with ``WITH``, the verb of the statement its clause leads to."""
    depth = 0
    first = None
    for match in _PARTS.finditer(sql):
        word, paren = match.group(2), match.group(3)
        if paren is not None:
            depth += 1 if paren == "(" else -1
        elif word is not None:
            word = word.upper()
            if first is None:
                if word != "WITH":
                    return word
                first = word
            elif depth == 0 and word in _MAIN_VERBS:
                return word
    return first or ""


Parameters = Sequence[Any] | Mapping[str, Any]


def parameters(sql: str, args: tuple[Any, ...]) -> Parameters:
    """What ``sqlite3`` binds for ``args``.

    ``args`` are the values of the placeholders (``execute(sql, a, b)``), or, as
    before, one tuple, list or mapping of them (``execute(sql, (a, b))``; ``sqlite3``
    binds no tuple, list or dict as a value, so this is never ambiguous). SQL with
    PostgreSQL's ``$1, $2`` placeholders gets them by number (SQLite takes ``$1`` as
    a parameter *named* ``1``).
    """
    values: Parameters = args
    if len(args) == 1 and isinstance(args[0], list | tuple | Mapping):
        values = args[0]
    if not isinstance(values, Mapping) and _numbered(sql):
        return {str(number): value for number, value in enumerate(values, 1)}
    return values


def status(sql: str, cursor: sqlite3.Cursor) -> str:
    """A status like PostgreSQL's command tag: ``INSERT 0 n``, ``UPDATE n``,
    ``DELETE n`` (with ``RETURNING`` too), ``SELECT n`` (rows returned), else the
    statement's verb (leading comments and a ``WITH`` clause skipped)."""
    verb = _verb(sql)
    if verb in ("INSERT", "REPLACE", "UPDATE", "DELETE"):
        if cursor.description is not None:  # RETURNING: a row per row changed
            count = len(cursor.fetchall())
        else:
            # (Not rowcount: sqlite3 counts only statements that open with the verb.)
            count = cursor.connection.execute("SELECT changes()").fetchone()[0]
        return f"INSERT 0 {count}" if verb in ("INSERT", "REPLACE") else f"{verb} {count}"
    if cursor.description is not None:
        return f"SELECT {len(cursor.fetchall())}"
    return verb


@final
class SQLiteSession:
    """A running call's own connection to the store's SQLite file.

    The connection is opened on first use and closed when the call ends. Methods run in
    a worker thread; the session is never shared between calls. Placeholders are
    SQLite's (``?``, ``:name``) or PostgreSQL's (``$1``); rows are ``sqlite3.Row``
    (by index or by column name, like asyncpg's ``Record``). Driver errors are raised
    as :class:`StoreError` / :class:`StoreUnavailableError` with the ``sqlite3``
    exception as ``__cause__``.
    """

    def __init__(self, path: str, synchronous: str, busy_timeout: float, call_id: int = 0) -> None:
        self._path = path
        self._synchronous = synchronous
        self._busy_timeout = busy_timeout
        self._conn: sqlite3.Connection | None = None
        #: One thread job at a time; made on first use (most calls never use theirs).
        self._limiter: trio.CapacityLimiter | None = None
        self._depth = 0  # open transactions (the outer one, then savepoints)
        #: The id of the call this session belongs to.
        self.call_id = call_id
        self.closed = False

    @property
    def path(self) -> str:
        return self._path

    async def _run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        if self.closed:
            raise StoreClosedError("this session ended with its call")

        def work() -> T:
            if self._conn is None:
                conn = connect(self._path, self._synchronous, self._busy_timeout)
                conn.row_factory = sqlite3.Row
                self._conn = conn
            return fn(self._conn)

        limiter = self._limiter
        if limiter is None:
            limiter = self._limiter = trio.CapacityLimiter(1)
        try:
            return await trio.to_thread.run_sync(work, limiter=limiter)
        except sqlite3.Error as exc:
            raise translate(exc) from exc

    async def execute(self, sql: str, *args: Any) -> str:
        """Run one statement; return its status (``"INSERT 0 1"``, ``"UPDATE 3"``...,
        as PostgreSQL's; a query's rows are counted, not returned: see :meth:`fetch`).

        Outside :meth:`transaction` each statement commits on its own.
        """
        values = parameters(sql, args)
        return await self._run(lambda conn: status(sql, conn.execute(sql, values)))

    async def executemany(self, sql: str, args: Sequence[Sequence[Any]]) -> None:
        """Run one statement for each parameter row, in one transaction (or in the
        session's open :meth:`transaction`)."""
        rows = [parameters(sql, (row,)) for row in args]

        def work(conn: sqlite3.Connection) -> None:
            if self._depth:
                # In the open transaction: a savepoint of its own, so that a failing
                # row takes the rows before it along (all or nothing, as outside one).
                conn.execute("SAVEPOINT futurecalls_executemany")
                try:
                    conn.executemany(sql, rows)
                except BaseException:
                    if conn.in_transaction:
                        conn.execute("ROLLBACK TO futurecalls_executemany")
                        conn.execute("RELEASE futurecalls_executemany")
                    raise
                conn.execute("RELEASE futurecalls_executemany")
                return
            with conn:
                conn.execute("BEGIN")
                conn.executemany(sql, rows)

        await self._run(work)

    async def fetch(self, sql: str, *args: Any) -> list[sqlite3.Row]:
        """Run a query; return every row."""
        values = parameters(sql, args)
        return await self._run(lambda conn: conn.execute(sql, values).fetchall())

    async def fetchrow(self, sql: str, *args: Any) -> sqlite3.Row | None:
        """Run a query; return its first row or None."""
        values = parameters(sql, args)
        row: sqlite3.Row | None = await self._run(lambda conn: conn.execute(sql, values).fetchone())
        return row

    async def fetchval(self, sql: str, *args: Any) -> Any:
        """Run a query; return the first column of its first row (None if no row)."""
        row = await self.fetchrow(sql, *args)
        return None if row is None else row[0]

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[SQLiteSession]:
        """``async with session.transaction():`` commits on success, rolls back on error.

        The outer one is ``BEGIN IMMEDIATE`` (it takes the write lock at once, so it
        cannot fail half-way for another writer); one inside it is a savepoint.
        """
        depth = self._depth
        name = f"futurecalls_session_{depth}"
        begin, commit = (
            ("BEGIN IMMEDIATE", "COMMIT")
            if depth == 0
            else (
                f"SAVEPOINT {name}",
                f"RELEASE {name}",
            )
        )

        def rollback(conn: sqlite3.Connection) -> None:
            if not conn.in_transaction:  # the BEGIN itself failed
                return
            if depth == 0:
                conn.execute("ROLLBACK")
            else:
                conn.execute(f"ROLLBACK TO {name}")
                conn.execute(f"RELEASE {name}")

        self._depth += 1
        try:
            try:
                # Inside the try: a BEGIN that went through must still be rolled back.
                await self._run(lambda conn: conn.execute(begin))
                yield self
                await self._run(lambda conn: conn.execute(commit))
            except BaseException:
                with trio.move_on_after(10, shield=True):
                    try:
                        await self._run(rollback)
                    except StoreError as exc:
                        _log.warning("rollback failed: %s", exc)
                raise
        finally:
            self._depth = depth

    async def aclose(self) -> None:
        """Close the connection, if the session opened one (the store does this when
        the call ends; shielded: a cancelled call's connection is closed too)."""
        self.closed = True
        conn, self._conn = self._conn, None
        if conn is not None:
            with trio.CancelScope(shield=True):
                # (A connection was opened by _run, which made the limiter.)
                await trio.to_thread.run_sync(conn.close, limiter=self._limiter)


@final
class SessionScope:
    """What :meth:`SQLiteStore.open_session` returns: opens the call's session on entry
    (``new(call)``) and closes it on exit. A plain class rather than
    ``@asynccontextmanager``: every call opens one, even calls that never use it."""

    __slots__ = ("_call", "_new", "_session")

    def __init__(self, new: Callable[[StoredCall], SQLiteSession], call: StoredCall) -> None:
        self._new = new
        self._call = call
        self._session: SQLiteSession | None = None

    async def __aenter__(self) -> SQLiteSession:
        self._session = self._new(self._call)
        return self._session

    async def __aexit__(self, *exc_info: object) -> None:
        if self._session is not None:
            await self._session.aclose()

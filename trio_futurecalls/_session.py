"""The session protocol: what a running call's ``session`` offers on every store.

Every store gives each running call its own session (its own database handle, valid
for the call's whole life, never shared). The SQL stores' sessions, ``SQLiteSession``
and ``PostgresSession``, have the same methods with the same meanings, so a call's code
tested on SQLite runs on PostgreSQL (SQL dialects aside; SQLite also takes
PostgreSQL's ``$1`` placeholders). :class:`MemorySession` has the methods too, but no
database: each raises :class:`NoDatabaseError`.

Type a call's ``invoke(self, session: Session, payload)`` with it to write code that
does not depend on the store.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractAsyncContextManager
from typing import Any, Protocol, runtime_checkable


@runtime_checkable
class Session(Protocol):
    """A running call's database handle, as every store's session offers it.

    * ``execute(sql, *args)``: run one statement; return its status, PostgreSQL's
      command tag (``"INSERT 0 1"``, ``"UPDATE 3"``, ``"DELETE 0"``, ``"SELECT 2"``).
    * ``executemany(sql, rows)``: one statement per row of arguments, atomically.
    * ``fetch`` (every row), ``fetchrow`` (the first, or None), ``fetchval`` (the first
      column of the first row, or None). Rows are read by index or column name
      (asyncpg's ``Record``, ``sqlite3.Row``).
    * ``transaction()``: ``async with session.transaction():`` commits when the block
      ends, rolls back when it raises; nested, a savepoint.

    Outside a transaction each statement commits on its own. Database errors are
    raised as :class:`StoreError` (:class:`StoreUnavailableError` when the database
    cannot be reached), with the driver's exception as ``__cause__``; a session used
    after its call ended raises :class:`StoreClosedError`.
    """

    #: The id of the call this session belongs to.
    call_id: int
    #: True once the call ended (the session then refuses work).
    closed: bool

    async def execute(self, sql: str, /, *args: Any) -> str: ...

    async def executemany(self, sql: str, args: Sequence[Sequence[Any]], /) -> None: ...

    async def fetch(self, sql: str, /, *args: Any) -> list[Any]: ...

    async def fetchrow(self, sql: str, /, *args: Any) -> Any: ...

    async def fetchval(self, sql: str, /, *args: Any) -> Any: ...

    def transaction(self) -> AbstractAsyncContextManager[Any]: ...

"""The memory store's sessions: a handle per running call, with a lifetime and no
database (``Store.open_session``)."""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractAsyncContextManager
from typing import TYPE_CHECKING, Any, final

import attrs

from .._errors import NoDatabaseError
from .._model import StoredCall
from .._store_args import StoreArgs

if TYPE_CHECKING:
    from .memory import MemoryStore


@final
@attrs.define(eq=False)
class MemorySession:
    """The session a call gets from :class:`MemoryStore`: a handle with a lifetime,
    and no database.

    It has the methods of every store's session (:class:`trio_futurecalls.Session`),
    so code typed against that protocol type-checks, but each raises
    :class:`NoDatabaseError` at once: the memory store keeps calls, not tables. Test a
    call that runs SQL on a SQLite store (``open_sqlite_store`` on a temporary file).
    """

    store: MemoryStore
    call_id: int
    closed: bool = False

    def _no_database(self, method: str) -> NoDatabaseError:
        return NoDatabaseError(
            f"MemorySession.{method}(): the memory store has no database to run SQL on; "
            "test calls that use SQL on a SQLite store (open_sqlite_store on a temporary "
            "file), whose session has the same methods as PostgreSQL's"
        )

    async def execute(self, sql: str, *args: Any) -> str:
        raise self._no_database("execute")

    async def executemany(self, sql: str, args: Sequence[Sequence[Any]]) -> None:
        raise self._no_database("executemany")

    async def fetch(self, sql: str, *args: Any) -> list[Any]:
        raise self._no_database("fetch")

    async def fetchrow(self, sql: str, *args: Any) -> Any:
        raise self._no_database("fetchrow")

    async def fetchval(self, sql: str, *args: Any) -> Any:
        raise self._no_database("fetchval")

    def transaction(self) -> AbstractAsyncContextManager[MemorySession]:
        raise self._no_database("transaction")


@final
class MemorySessionScope:
    """What :meth:`MemoryStore.open_session` returns: opens the call's session on entry
    and closes it on exit. A plain class rather than ``@asynccontextmanager``: every
    call opens one, even calls that never use it."""

    __slots__ = ("_call", "_session", "_store")

    def __init__(self, store: MemoryStore, call: StoredCall) -> None:
        self._store = store
        self._call = call
        self._session: MemorySession | None = None

    async def __aenter__(self) -> MemorySession:
        call = self._call
        if type(call) is not StoredCall:  # (the check, minus a call on the hot path)
            call = StoreArgs.open_session(call)
        session = self._session = MemorySession(self._store, call.id)
        self._store.open_sessions.add(session)
        return session

    async def __aexit__(self, *exc_info: object) -> None:
        session = self._session
        if session is not None:
            session.closed = True
            self._store.open_sessions.discard(session)

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
another connection committed something. The dispatcher itself never polls.
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
from collections.abc import AsyncIterator, Callable, Collection, Mapping, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any, Final, TypeVar, final

import trio

from .._errors import InvalidArgumentError, StoreClosedError, StoreError, StoreUnavailableError
from .._model import Claim, DeadLetter, Lease, NewCall, StoredCall
from .._stats import QueueLength
from .._store import Listener, PendingQuery
from .._util import raise_unwrapped
from .._validate import check_positive_seconds
from ._batch import GroupCommit
from ._claims import free_after_claim
from ._listeners import Listeners
from ._rows import call_from_row, dead_letter_from_row
from ._sql import migrations, queries

#: Seconds between the dispatcher's re-checks for changes made by other processes.
DEFAULT_RECHECK_INTERVAL: Final = 1.0

_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_MICRO: Final = timedelta(microseconds=1)
_SYNC_MODES: Final = ("OFF", "NORMAL", "FULL", "EXTRA")

_log = logging.getLogger("trio_futurecalls.store.sqlite")

T = TypeVar("T")


def to_micros(value: datetime) -> int:
    return (value - _EPOCH) // _MICRO


def from_micros(value: int) -> datetime:
    return _EPOCH + timedelta(microseconds=value)


#: Primary result codes that mean "not now": another connection holds the database or
#: a table, or the file cannot be opened (yet). Extended codes (SQLITE_BUSY_SNAPSHOT...)
#: carry the primary code in their low byte.
_UNAVAILABLE_CODES: Final = frozenset(
    {sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED, sqlite3.SQLITE_CANTOPEN}
)


def _translate(exc: sqlite3.Error) -> StoreError:
    # By result code, never by message text. Errors the sqlite3 module raises itself
    # (a closed connection, a bad parameter) have no code.
    text = str(exc)
    code = getattr(exc, "sqlite_errorcode", None)
    if isinstance(code, int) and (code & 0xFF) in _UNAVAILABLE_CODES:
        return StoreUnavailableError(f"SQLite database unavailable: {text}")
    return StoreError(f"SQLite error: {type(exc).__name__}: {text}")


def _connect(path: str, synchronous: str, busy_timeout: float) -> sqlite3.Connection:
    conn = sqlite3.connect(
        path, timeout=busy_timeout, isolation_level=None, check_same_thread=False
    )
    try:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute(f"PRAGMA synchronous={synchronous}")  # validated against _SYNC_MODES
        conn.execute("PRAGMA foreign_keys=ON")
    except BaseException:
        conn.close()
        raise
    return conn


def _migrate(conn: sqlite3.Connection) -> int:
    """Bring the schema to the newest version; harmless when run again."""
    wanted = migrations("sqlite")
    conn.execute("BEGIN IMMEDIATE")  # one migrator at a time, across processes too
    try:
        (version,) = conn.execute("PRAGMA user_version").fetchone()
        if version > len(wanted):
            raise StoreError(
                f"database schema version {version} is newer than this library knows "
                f"({len(wanted)}); upgrade trio_futurecalls"
            )
        for migration in wanted[version:]:
            for statement in _statements(migration.sql):
                conn.execute(statement)
            conn.execute(f"PRAGMA user_version={migration.version:d}")
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    return len(wanted)


def _statements(script: str) -> list[str]:
    out: list[str] = []
    current = ""
    for line in script.splitlines(keepends=True):
        current += line
        if sqlite3.complete_statement(current):
            if current.strip():
                out.append(current)
            current = ""
    if current.strip() and not all(
        part.strip().startswith("--") or not part.strip() for part in current.splitlines()
    ):
        raise StoreError(f"incomplete SQL statement in migration: {current!r}")
    return out


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
                self._conn = _connect(self._path, self._synchronous, self._busy_timeout)
            return fn(self._conn)

        try:
            return await trio.to_thread.run_sync(work, limiter=self._limiter)
        except sqlite3.Error as exc:
            raise _translate(exc) from exc

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


@final
class SQLiteStore:
    """A store in one SQLite file. Open it with :func:`open_sqlite_store`."""

    def __init__(
        self,
        path: str,
        conn: sqlite3.Connection,
        *,
        recheck_interval: float | None,
        synchronous: str,
        busy_timeout: float,
    ) -> None:
        self.path = path
        #: The dispatcher needs no fallback re-check: the watcher wakes it.
        self.recheck_interval: float | None = None
        self._conn: sqlite3.Connection | None = conn
        self._synchronous = synchronous
        self._busy_timeout = busy_timeout
        self._limiter = trio.CapacityLimiter(1)
        self._listeners = Listeners()
        self._q = queries("sqlite")
        self._completions: GroupCommit[tuple[str, int], bool] = GroupCommit(self._complete_batch)

    async def _run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        conn = self._conn
        if conn is None:
            raise StoreClosedError("the SQLite store is closed")
        try:
            # Not abandoned on cancel: a claim that committed is always handed back.
            return await trio.to_thread.run_sync(fn, conn, limiter=self._limiter)
        except sqlite3.Error as exc:
            raise _translate(exc) from exc

    async def _write(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        def work(conn: sqlite3.Connection) -> T:
            conn.execute("BEGIN IMMEDIATE")
            try:
                result = fn(conn)
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
            return result

        return await self._run(work)

    # -- scheduling -------------------------------------------------------------------

    async def schedule(self, calls: Sequence[NewCall]) -> list[int]:
        if not calls:
            return []
        sql = self._q["insert_call"]

        def work(conn: sqlite3.Connection) -> list[int]:
            return [
                conn.execute(
                    sql,
                    (
                        c.name,
                        c.payload,
                        to_micros(c.due_at),
                        c.identifier,
                        to_micros(c.scheduled_at),
                        c.attempts,
                    ),
                ).fetchone()[0]
                for c in calls
            ]

        ids = await self._write(work)
        self._listeners.notify(min(c.due_at for c in calls))
        return ids

    async def cancel(self, call_id: int) -> bool:
        sql = self._q["cancel"]
        return await self._write(lambda conn: conn.execute(sql, (call_id,)).rowcount > 0)

    async def cancel_identifier(self, identifier: str) -> int:
        sql = self._q["cancel_identifier"]
        return await self._write(lambda conn: conn.execute(sql, (identifier,)).rowcount)

    # -- inspection -------------------------------------------------------------------

    async def pending(self, query: PendingQuery) -> list[StoredCall]:
        params = {
            "name": query.name,
            "identifier": query.identifier,
            "due_after": None if query.due_after is None else to_micros(query.due_after),
            "due_before": None if query.due_before is None else to_micros(query.due_before),
            "limit": query.limit,
        }
        sql = self._q["pending"]
        rows = await self._run(lambda conn: conn.execute(sql, params).fetchall())
        return [call_from_row(row, from_micros) for row in rows]

    async def pending_counts(self, due_by: datetime) -> dict[str, QueueLength]:
        sql = self._q["pending_counts"]
        params = (to_micros(due_by),)
        rows = await self._run(lambda conn: conn.execute(sql, params).fetchall())
        return {name: QueueLength(pending=n, due=due) for name, n, due in rows}

    # -- claiming ---------------------------------------------------------------------

    async def claim(
        self, now: datetime, slots: Mapping[str, int], limit: int, lease: Lease | None = None
    ) -> Claim:
        if limit <= 0 or not slots:
            return Claim([], None)
        now_us = to_micros(now)
        pick_sql = self._q["claim_candidates"]
        delete_sql = self._q["delete_ids"]
        lease_sql = self._q["lease_ids"]
        next_sql = self._q["next_due_of_name"]
        wanted = [(name, free) for name, free in slots.items() if free > 0]

        def work(conn: sqlite3.Connection) -> tuple[list[StoredCall], int | None]:
            rows: list[Any] = []
            for name, free in wanted:
                rows.extend(conn.execute(pick_sql, (name, now_us, free)).fetchall())
            rows.sort(key=lambda row: (row[3], row[0]))
            calls = [call_from_row(row, from_micros) for row in rows[:limit]]
            leased = [c.id for c in calls if lease is not None and c.name in lease.names]
            deleted = [c.id for c in calls if lease is None or c.name not in lease.names]
            if deleted:
                conn.execute(delete_sql, (json.dumps(deleted),))
            if leased:
                assert lease is not None
                conn.execute(
                    lease_sql, (lease.owner, to_micros(lease.expires_at), json.dumps(leased))
                )
            # In the same transaction: one indexed seek per name that still has room.
            taken = json.dumps([c.id for c in calls])
            found = [
                conn.execute(next_sql, (name, taken)).fetchone()
                for name in free_after_claim(slots, limit, (c.name for c in calls))
            ]
            return calls, min((row[0] for row in found if row is not None), default=None)

        calls, next_us = await self._write(work)
        return Claim(calls, None if next_us is None else from_micros(next_us))

    async def renew(self, owner: str, call_ids: Collection[int], expires_at: datetime) -> set[int]:
        if not call_ids:
            return set()
        sql = self._q["renew"]
        params = (to_micros(expires_at), owner, json.dumps(sorted(call_ids)))
        rows = await self._write(lambda conn: conn.execute(sql, params).fetchall())
        return {row[0] for row in rows}

    async def complete(self, owner: str, call_id: int) -> bool:
        # Calls finishing together share one transaction (and one fsync).
        return await self._completions.submit((owner, call_id))

    async def _complete_batch(self, items: Sequence[tuple[str, int]]) -> list[bool]:
        sql = self._q["complete"]
        return await self._write(
            lambda conn: [
                conn.execute(sql, (call_id, owner)).rowcount > 0 for owner, call_id in items
            ]
        )

    async def release(
        self, owner: str, call_id: int, due_at: datetime, *, refund_attempt: bool = False
    ) -> bool:
        sql = self._q["release"]
        params = (to_micros(due_at), int(refund_attempt), call_id, owner)
        released = await self._write(lambda conn: conn.execute(sql, params).rowcount > 0)
        if released:
            self._listeners.notify(due_at)
        return released

    # -- dead letters -----------------------------------------------------------------

    async def dead_letter(
        self, call: StoredCall, error: str, failed_at: datetime, owner: str | None = None
    ) -> int | None:
        sql = self._q["insert_dead_letter"]
        delete_sql = self._q["delete_leased"]
        params = (
            call.id,
            call.name,
            call.payload,
            to_micros(call.due_at),
            call.identifier,
            to_micros(call.scheduled_at),
            to_micros(failed_at),
            error,
            call.attempts,
        )

        def work(conn: sqlite3.Connection) -> int | None:
            if owner is not None and conn.execute(delete_sql, (call.id, owner)).rowcount == 0:
                return None  # the lease was lost: another worker has the call now
            dead_id: int = conn.execute(sql, params).fetchone()[0]
            return dead_id

        return await self._write(work)

    async def dead_letter_due(
        self, name: str, due_by: datetime, error: str, failed_at: datetime
    ) -> int:
        params = {
            "name": name,
            "due_by": to_micros(due_by),
            "error": error,
            "failed_at": to_micros(failed_at),
        }
        move_sql = self._q["dead_letter_due_rows"]
        delete_sql = self._q["delete_due_rows"]

        def work(conn: sqlite3.Connection) -> int:
            # One transaction (it holds the write lock): the same rows move and go.
            moved: int = conn.execute(move_sql, params).rowcount
            conn.execute(delete_sql, params)
            return moved

        return await self._write(work)

    async def dead_letters(
        self, *, name: str | None = None, limit: int | None = None
    ) -> list[DeadLetter]:
        sql = self._q["dead_letters"]
        rows = await self._run(
            lambda conn: conn.execute(sql, {"name": name, "limit": limit}).fetchall()
        )
        return [dead_letter_from_row(r, from_micros) for r in rows]

    async def requeue_dead_letter(self, dead_letter_id: int, due_at: datetime) -> int | None:
        take_sql = self._q["take_dead_letter"]
        insert_sql = self._q["insert_call"]

        def work(conn: sqlite3.Connection) -> int | None:
            row = conn.execute(take_sql, (dead_letter_id,)).fetchone()
            if row is None:
                return None
            name, payload, identifier, scheduled_at = row
            params = (name, payload, to_micros(due_at), identifier, scheduled_at, 0)
            new_id: int = conn.execute(insert_sql, params).fetchone()[0]
            return new_id

        new_id = await self._write(work)
        if new_id is not None:
            self._listeners.notify(due_at)
        return new_id

    async def purge_dead_letters(self, ids: Collection[int] | None = None) -> int:
        if ids is None:
            sql = self._q["purge_all_dead_letters"]
            return await self._write(lambda conn: conn.execute(sql).rowcount)
        one_sql = self._q["purge_dead_letter"]
        wanted = sorted(set(ids))
        return await self._write(
            lambda conn: sum(conn.execute(one_sql, (i,)).rowcount for i in wanted)
        )

    # -- wake-ups and sessions --------------------------------------------------------

    def add_listener(self, listener: Listener) -> Callable[[], None]:
        return self._listeners.add(listener)

    @asynccontextmanager
    async def open_session(self, call: StoredCall) -> AsyncIterator[SQLiteSession]:
        if self._conn is None:
            raise StoreClosedError("the SQLite store is closed")
        session = SQLiteSession(self.path, self._synchronous, self._busy_timeout)
        try:
            yield session
        finally:
            with trio.CancelScope(shield=True):
                await session.aclose()

    async def _watch_other_connections(self, interval: float) -> None:
        """Wake listeners when another connection (process) changed the database."""

        def version(conn: sqlite3.Connection) -> int:
            value: int = conn.execute("PRAGMA data_version").fetchone()[0]
            return value

        last: int | None = None
        while True:
            try:
                current = await self._run(version)
            except StoreClosedError:
                return
            except StoreError as exc:
                _log.warning("could not check %s for changes: %s", self.path, exc)
            else:
                # data_version moves only for commits by *other* connections.
                if last is not None and current != last:
                    self._listeners.notify(_EPOCH)
                last = current
            await trio.sleep(interval)

    async def aclose(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            await trio.to_thread.run_sync(conn.close, limiter=self._limiter)


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
    if text_path == ":memory:":
        raise InvalidArgumentError(
            "':memory:' would give every session its own empty database; use MemoryStore"
        )
    mode = synchronous.upper() if isinstance(synchronous, str) else synchronous
    if mode not in _SYNC_MODES:
        raise InvalidArgumentError(f"synchronous must be one of {_SYNC_MODES}, got {synchronous!r}")
    recheck = check_positive_seconds(recheck_interval, "recheck_interval", allow_none=True)
    if recheck == 0:
        raise InvalidArgumentError("recheck_interval must be > 0 or None")
    timeout = check_positive_seconds(busy_timeout, "busy_timeout")
    assert timeout is not None

    def open_and_migrate() -> sqlite3.Connection:
        conn = _connect(text_path, mode, timeout)
        try:
            _migrate(conn)
        except BaseException:
            conn.close()
            raise
        return conn

    try:
        conn = await trio.to_thread.run_sync(open_and_migrate)
    except sqlite3.Error as exc:
        raise _translate(exc) from exc
    store = SQLiteStore(
        text_path, conn, recheck_interval=recheck, synchronous=mode, busy_timeout=timeout
    )
    body_exc: BaseException | None = None
    try:
        async with trio.open_nursery() as nursery:
            if recheck is not None:
                nursery.start_soon(store._watch_other_connections, recheck)
            try:
                yield store
            except BaseException as exc:
                body_exc = exc
                raise
            finally:
                nursery.cancel_scope.cancel()
                with trio.CancelScope(shield=True):
                    await store.aclose()
    except BaseExceptionGroup as group:
        raise_unwrapped(group, body_exc, lambda e: StoreError(f"SQLite store: {e!r}"))

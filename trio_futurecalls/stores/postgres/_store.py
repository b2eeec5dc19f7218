"""The PostgreSQL store: everything, for now (being split into one idea per module)."""

from __future__ import annotations

import hashlib
import inspect
import logging
import math
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Mapping, Sequence
from contextlib import asynccontextmanager, suppress
from datetime import UTC, datetime, timedelta
from typing import Any, Final, Literal, TypeVar, cast, final

import asyncpg
import asyncpg.exceptions
import trio
import trio_asyncio
from asyncpg.pool import PoolConnectionProxy
from trio_asyncio import aio_as_trio

from ..._errors import (
    FutureCallsError,
    InvalidArgumentError,
    InvalidPayloadError,
    StoreClosedError,
    StoreError,
    StoreUnavailableError,
)
from ..._model import DeadLetter, Lease, NewCall, StoredCall
from ..._payload import MAX_PAYLOAD_BYTES
from ..._store import Listener, PendingQuery
from ..._util import raise_unwrapped
from ..._validate import MAX_IDENTIFIER_LENGTH, MAX_NAME_LENGTH, check_positive_seconds
from .._batch import GroupCommit
from .._listeners import Listeners
from .._rows import call_from_row, dead_letter_from_row
from .._sql import migrations, queries

__all__ = [
    "DEFAULT_RECHECK_INTERVAL",
    "DEFAULT_SCHEMA",
    "PostgresSession",
    "PostgresStore",
    "open_postgres_store",
    "recommended_pool_size",
]

#: Seconds between the dispatcher's fallback re-checks (for lost notifications).
DEFAULT_RECHECK_INTERVAL: Final = 5.0
#: The schema used when none is given.
DEFAULT_SCHEMA: Final = "futurecalls"
#: Prefix of the NOTIFY channel; the schema name follows it.
CHANNEL_PREFIX: Final = "futurecalls:"
#: Longest accepted schema name (the channel name must fit PostgreSQL's 63 bytes).
MAX_SCHEMA_LENGTH: Final = 63 - len(CHANNEL_PREFIX)

_log = logging.getLogger("trio_futurecalls.store.postgres")

_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_MICRO: Final = timedelta(microseconds=1)
# Lower case only: PostgreSQL folds unquoted names to lower case, so "Futurecalls" and
# "futurecalls" would be the same schema in hand-written SQL but not in ours.
_SCHEMA_RE: Final = re.compile(r"^[a-z_][a-z0-9_]*$")
_MAX_LISTEN_BACKOFF: Final = 5.0

T = TypeVar("T")

#: Transaction isolation levels accepted by :meth:`PostgresSession.transaction`.
IsolationLevel = Literal["read_committed", "read_uncommitted", "serializable", "repeatable_read"]

#: Errors that mean "the database cannot be reached right now".
_UNAVAILABLE: Final = (
    OSError,  # includes ConnectionError, socket.gaierror
    TimeoutError,  # asyncio.TimeoutError: connect, acquire or command timeout
    asyncpg.exceptions.PostgresConnectionError,  # class 08, ConnectionDoesNotExistError
    asyncpg.exceptions.OperatorInterventionError,  # 57: admin shutdown, cannot connect now
    asyncpg.exceptions.InsufficientResourcesError,  # 53: too many connections, disk full
)


def recommended_pool_size(max_concurrent: int | None) -> int:
    """Pool size for a scheduler running at most ``max_concurrent`` calls at once.

    ``max_concurrent + 2``: one connection per running call (for its session), one for
    the dispatcher, one spare for application code that schedules or cancels. The
    ``LISTEN`` connection is separate from the pool. ``None`` (unlimited) has no safe
    size; the minimum (3) is returned and :meth:`PostgresStore.check_pool_size` warns.
    """
    if max_concurrent is None:
        return 3
    if isinstance(max_concurrent, bool) or not isinstance(max_concurrent, int):
        raise InvalidArgumentError(f"max_concurrent must be an int or None, got {max_concurrent!r}")
    return max(max_concurrent, 1) + 2


def check_schema_name(schema: object) -> str:
    """Validate a schema name; it is interpolated into SQL only after this check."""
    if not isinstance(schema, str):
        raise InvalidArgumentError(f"schema must be a str, got {type(schema).__name__}")
    if not schema or len(schema) > MAX_SCHEMA_LENGTH:
        raise InvalidArgumentError(
            f"schema name must be 1 to {MAX_SCHEMA_LENGTH} characters, got {schema!r}"
        )
    if not _SCHEMA_RE.match(schema):
        raise InvalidArgumentError(
            f"schema name {schema!r} must be lower case letters, digits and '_' and not "
            "start with a digit (no quotes, spaces, dots or semicolons)"
        )
    if schema.startswith("pg_"):
        raise InvalidArgumentError(f"schema names starting with 'pg_' are reserved: {schema!r}")
    return schema


def _to_micros(value: datetime) -> int:
    return (value - _EPOCH) // _MICRO


def _utc(value: datetime) -> datetime:
    # asyncpg returns timestamptz values in UTC already: skip the conversion then.
    return value if value.tzinfo is UTC else value.astimezone(UTC)


def _unavailable(exc: BaseException) -> bool:
    if isinstance(exc, _UNAVAILABLE):
        return True
    # InterfaceError is also raised for misuse (wrong argument count, concurrent use of
    # one connection); only a closed or closing connection or pool means an outage.
    text = str(exc)
    return (
        isinstance(exc, asyncpg.exceptions.InterfaceError)
        and not isinstance(exc, asyncpg.exceptions.ClientConfigurationError)
        and ("closed" in text or "closing" in text or "released back to the pool" in text)
    )


def _translate(exc: BaseException, what: str) -> StoreError:
    if _unavailable(exc):
        return StoreUnavailableError(
            f"PostgreSQL unavailable ({what}): {type(exc).__name__}: {exc}"
        )
    return StoreError(f"PostgreSQL error ({what}): {type(exc).__name__}: {exc}")


async def _bridge(
    loop: Any, what: str, fn: Callable[..., Awaitable[T]], *args: Any, **kwargs: Any
) -> T:
    """Run an asyncio coroutine function on ``loop`` (the store's); translate errors.

    The loop is explicit: trio-asyncio's *current* loop is a context variable, and
    inside another store's (or the application's own) ``open_loop()`` it is not ours;
    asyncpg connections only work on the loop that created them.
    """
    try:
        return cast(T, await aio_as_trio(fn, loop=loop)(*args, **kwargs))
    except StoreError:
        raise
    except (
        asyncpg.exceptions.PostgresError,
        asyncpg.exceptions.InterfaceError,
        asyncpg.exceptions.InternalClientError,
        *_UNAVAILABLE,
    ) as exc:
        raise _translate(exc, what) from exc


def _check_new_call(call: NewCall) -> None:
    # The engine validated these already; checked again so that a NewCall built by
    # hand gets the same clear error as through the engine (the table's CHECKs are the
    # last line).
    if not isinstance(call.name, str) or not 1 <= len(call.name) <= MAX_NAME_LENGTH:
        raise InvalidArgumentError(f"call name must be 1 to {MAX_NAME_LENGTH} characters")
    if call.identifier is not None and not 1 <= len(call.identifier) <= MAX_IDENTIFIER_LENGTH:
        raise InvalidArgumentError(f"identifier must be 1 to {MAX_IDENTIFIER_LENGTH} characters")
    payload = call.payload
    size = len(payload) if payload.isascii() else len(payload.encode())
    if size > MAX_PAYLOAD_BYTES:
        raise InvalidPayloadError(
            f"payload is {size} bytes as JSON; the limit is {MAX_PAYLOAD_BYTES}"
        )
    for text in (call.name, call.payload, call.identifier or ""):
        if "\x00" in text:
            raise InvalidArgumentError("PostgreSQL text cannot hold NUL characters")
    for value in (call.due_at, call.scheduled_at):
        if value.tzinfo is None:
            raise InvalidArgumentError("due_at and scheduled_at must be timezone-aware")


# -- asyncio side (runs on the store's asyncio loop, called through aio_as_trio) ------


class _StoreConnection(asyncpg.Connection):
    """A pool connection that remembers whether a session has used it.

    The store's own statements (claim, schedule, complete...) are single statements in
    their own implicit transaction: they leave no session state behind. A running
    call's session may leave anything (settings, advisory locks, LISTEN, cursors), so
    a connection a session used gets asyncpg's full reset before the pool hands it
    out again, and the others skip that round trip (see :func:`_aio_reset`).
    """

    __slots__ = ("_futurecalls_session_used",)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._futurecalls_session_used = False

    def _futurecalls_mark_session_use(self) -> None:
        self._futurecalls_session_used = True


def _mark_session_use(conn: PoolConnectionProxy) -> None:
    # The pool proxy forwards unknown attributes to its connection. Without our class
    # (asyncpg < 0.30) there is nothing to mark: every connection is reset anyway.
    mark: Callable[[], None] | None = getattr(conn, "_futurecalls_mark_session_use", None)
    if mark is not None:
        mark()


_SESSION_RESET: Final = "RESET ROLE; SET SESSION AUTHORIZATION DEFAULT; DISCARD TEMP"


async def _aio_reset(conn: asyncpg.Connection) -> None:
    """The pool's reset hook: runs on release, after asyncpg rolled back any open
    transaction and dropped the connection's listeners.

    The full reset (``pg_advisory_unlock_all(); CLOSE ALL; UNLISTEN *; RESET ALL``)
    only for connections a session used (or that are not ours); the flag is cleared
    only once the reset succeeded (if it fails, the pool terminates the connection).
    """
    if isinstance(conn, _StoreConnection) and not conn._futurecalls_session_used:
        return
    # RESET ALL leaves the role and session authorization alone and drops no temporary
    # tables: a call's session must not hand those to the next call (or to the store's
    # own statements). Prepared statements are left to asyncpg's statement cache.
    await conn.execute(_SESSION_RESET)
    query = conn.get_reset_query()
    if query:
        await conn.execute(query)
    if isinstance(conn, _StoreConnection):
        conn._futurecalls_session_used = False


def _log_loop_exception(loop: Any, context: dict[str, Any]) -> None:
    _log.warning("asyncio: %s", context.get("message", "error"), exc_info=context.get("exception"))


def _lost(conn: PoolConnectionProxy) -> bool:
    """Whether a pool connection we hold died (asyncpg detaches a dead one at once)."""
    try:
        return bool(conn.is_closed())
    except asyncpg.exceptions.InterfaceError:  # "released back to the pool"
        return True


def _pool_options() -> dict[str, Any]:
    """``create_pool`` options for the selective reset (asyncpg >= 0.30 has the hook;
    older versions keep the default: every released connection is reset)."""
    if "reset" not in inspect.signature(asyncpg.create_pool).parameters:
        return {}  # pragma: no cover - asyncpg < 0.30
    return {"connection_class": _StoreConnection, "reset": _aio_reset}


class _Connections:
    """The store's pool, plus one pool connection the store keeps for its own statements.

    Runs on the store's asyncio loop only (no locking needed: every method checks and
    updates its state before its first ``await``). Each store method is one call of
    :meth:`run`, i.e. one bridge crossing that takes a connection, runs the statement
    and gives the connection back.

    The kept connection spares each statement the pool's acquire and release (a few
    asyncio tasks and timers each, which trio-asyncio makes expensive). The store's
    statements are single statements in implicit transactions, so it carries no state
    between them. Statements that find it busy take a pool connection as before. It
    goes back to the pool whenever anything goes wrong with it (errors, cancellation:
    the pool then waits out a cancelled query, rolls back or reconnects), when the
    pool runs short (after a statement, or when a session needs a connection: sessions
    never wait for the store's idle connection) and when the store closes.

    Every acquire and release after migrations goes through here, so :attr:`out`
    counts the connections checked out or being acquired (waiters included): the pool
    is short when that reaches its size.
    """

    def __init__(self, pool: asyncpg.Pool, acquire_timeout: float) -> None:
        self.pool = pool
        self.max_size = pool.get_max_size()
        self.acquire_timeout = acquire_timeout
        self.kept: PoolConnectionProxy | None = None
        self.busy = False
        self.closing = False
        self.out = 0

    @property
    def kept_idle(self) -> bool:
        return self.kept is not None and not self.busy

    @property
    def short(self) -> bool:
        """Whether an acquire now could wait (every connection is out or promised)."""
        return self.out >= self.max_size

    async def _acquire(self) -> PoolConnectionProxy:
        self.out += 1
        try:
            conn: PoolConnectionProxy = await self.pool.acquire(timeout=self.acquire_timeout)
        except BaseException:
            self.out -= 1
            raise
        return conn

    async def release(self, conn: PoolConnectionProxy, seconds: float | None = None) -> None:
        """Give a connection back to the pool (which resets it if a session used it)."""
        try:
            await self.pool.release(conn, timeout=seconds)
        finally:
            self.out -= 1

    async def run(self, method: str, sql: str, args: Sequence[Any]) -> Any:
        if self.busy or self.closing:
            conn = await self._acquire()
            try:
                return await getattr(conn, method)(sql, *args)
            finally:
                await self.release(conn)
        self.busy = True
        try:
            kept = self.kept
            if kept is not None and _lost(kept):
                # Lost while idle (server restart, network): the pool would have
                # replaced it on acquire, so do the same.
                self.kept = None
                await self.release(kept)
                kept = None
            if kept is None:
                kept = self.kept = await self._acquire()
            result = await getattr(kept, method)(sql, *args)
        except BaseException:
            self.busy = False
            await self.give_back()
            raise
        self.busy = False
        if self.closing or self.short:
            await self.give_back()
        return result

    async def give_back(self) -> None:
        """Return the kept connection (if idle) to the pool."""
        if self.busy:
            return  # the statement using it gives it back when it ends, if it must
        conn, self.kept = self.kept, None
        if conn is not None:
            await self.release(conn)

    async def acquire_session(self) -> PoolConnectionProxy:
        """A connection for a running call's session: fully reset when released."""
        if self.short and self.kept_idle:
            await self.give_back()  # sessions never wait for the store's idle connection
        conn = await self._acquire()
        _mark_session_use(conn)
        return conn

    async def close(self) -> None:
        self.closing = True
        await self.give_back()
        await self.pool.close()


async def _aio_migrate(
    pool: asyncpg.Pool,
    q: Mapping[str, str],
    sql_of: Callable[[str], str],
    lock_key: int,
    acquire_timeout: float,
) -> int:
    wanted = migrations("postgres")
    async with pool.acquire(timeout=acquire_timeout) as conn, conn.transaction():
        await conn.execute(q["migration_lock"], lock_key)
        await conn.execute(q["create_schema"])
        await conn.execute(q["create_version_table"])
        version: int = await conn.fetchval(q["schema_version"])
        if version > len(wanted):
            raise StoreError(
                f"database schema version {version} is newer than this library knows "
                f"({len(wanted)}); upgrade trio_futurecalls"
            )
        for migration in wanted[version:]:
            # No arguments: the simple query protocol runs a multi-statement script.
            await conn.execute(sql_of(migration.sql))
            await conn.execute(q["record_version"], migration.version, migration.name)
            _log.info("applied migration %s", migration.name)
    return len(wanted)


# -- sessions ---------------------------------------------------------------------------


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

    def __init__(self, loop: Any, connections: _Connections, call_id: int) -> None:
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
                    self._conn = await _bridge(
                        self._loop, "acquire", self._connections.acquire_session
                    )
        return self._conn

    async def execute(self, sql: str, *args: Any) -> str:
        """Run a statement; return its status (e.g. ``"INSERT 0 1"``)."""
        conn = await self.connection()
        result: str = await _bridge(self._loop, "session execute", conn.execute, sql, *args)
        return result

    async def executemany(self, sql: str, args: Sequence[Sequence[Any]]) -> None:
        """Run a statement once per argument tuple (in one implicit transaction)."""
        conn = await self.connection()
        await _bridge(self._loop, "session executemany", conn.executemany, sql, args)

    async def fetch(self, sql: str, *args: Any) -> list[asyncpg.Record]:
        """Run a query; return every row (asyncpg ``Record``: by index or by name)."""
        conn = await self.connection()
        rows: list[asyncpg.Record] = await _bridge(
            self._loop, "session fetch", conn.fetch, sql, *args
        )
        return rows

    async def fetchrow(self, sql: str, *args: Any) -> asyncpg.Record | None:
        """Run a query; return its first row or None."""
        conn = await self.connection()
        row: asyncpg.Record | None = await _bridge(
            self._loop, "session fetchrow", conn.fetchrow, sql, *args
        )
        return row

    async def fetchval(self, sql: str, *args: Any) -> Any:
        """Run a query; return the first column of its first row (None if no row)."""
        conn = await self.connection()
        return await _bridge(self._loop, "session fetchval", conn.fetchval, sql, *args)

    @asynccontextmanager
    async def transaction(
        self, *, isolation: IsolationLevel | None = None, readonly: bool = False
    ) -> AsyncIterator[PostgresSession]:
        """``async with session.transaction():`` commits on success, rolls back on error."""
        conn = await self.connection()
        tx = conn.transaction(isolation=isolation, readonly=readonly)
        try:
            # Inside the try: a BEGIN cancelled half-way must still be rolled back.
            await _bridge(self._loop, "begin", tx.start)
            yield self
        except BaseException:
            with trio.move_on_after(10, shield=True):
                try:
                    await _bridge(self._loop, "rollback", tx.rollback)
                except StoreError as exc:
                    _log.warning("rollback failed: %s", exc)
            raise
        await _bridge(self._loop, "commit", tx.commit)

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
                await _bridge(self._loop, "release", self._connections.release, conn, 5)
            except StoreError as exc:
                _log.warning("could not release a session's connection cleanly: %s", exc)
        if scope.cancelled_caught:
            with suppress(asyncpg.exceptions.InterfaceError):  # already detached
                conn.terminate()


@final
class _SessionScope:
    """What :meth:`PostgresStore.open_session` returns: opens the session on entry and
    closes it (releasing its connection, if it took one) on exit. A plain class rather
    than ``@asynccontextmanager``: every call opens one, even calls that never use it.
    """

    __slots__ = ("_call_id", "_session", "_store")

    def __init__(self, store: PostgresStore, call_id: int) -> None:
        self._store = store
        self._call_id = call_id
        self._session: PostgresSession | None = None

    async def __aenter__(self) -> PostgresSession:
        store = self._store
        store._live_pool()
        session = self._session = PostgresSession(store._loop, store._connections, self._call_id)
        store._sessions.add(session)
        return session

    async def __aexit__(self, *exc_info: object) -> None:
        session = self._session
        if session is not None:
            self._store._sessions.discard(session)
            await session.aclose()  # shielded inside


# -- the store --------------------------------------------------------------------------


@final
class PostgresStore:
    """A store in one PostgreSQL schema. Open it with :func:`open_postgres_store`."""

    def __init__(
        self,
        *,
        loop: Any,
        dsn: str,
        schema: str,
        pool: asyncpg.Pool,
        max_pool_size: int,
        recheck_interval: float | None,
        acquire_timeout: float,
        connect_timeout: float,
        application_name: str,
    ) -> None:
        self._loop = loop
        self.schema = schema
        #: The NOTIFY channel of this schema.
        self.channel = CHANNEL_PREFIX + schema
        self.recheck_interval = recheck_interval
        self.max_pool_size = max_pool_size
        #: ``application_name`` of the LISTEN connection (visible in pg_stat_activity).
        self.listener_application_name = f"{application_name}:listen"[:63]
        self._dsn = dsn
        self._pool: asyncpg.Pool | None = pool
        self._connections = _Connections(pool, acquire_timeout)
        self._completions: GroupCommit[tuple[str, int], bool] = GroupCommit(self._complete_batch)
        self._connect_timeout = connect_timeout
        self._listeners = Listeners()
        self._listen_conn: asyncpg.Connection | None = None
        self._sessions: set[PostgresSession] = set()
        quoted = '"' + schema + '"'  # safe: validated by check_schema_name
        self._sql_of: Callable[[str], str] = lambda sql: sql.replace("{schema}", quoted)
        self._q = {name: self._sql_of(sql) for name, sql in queries("postgres").items()}
        #: How many times the listener (re)connected; 1 after a clean start.
        self.listener_connects = 0

    # -- plumbing -----------------------------------------------------------------------

    def _live_pool(self) -> asyncpg.Pool:
        if self._pool is None:
            raise StoreClosedError("the PostgreSQL store is closed")
        return self._pool

    async def _call(self, method: str, query: str, *args: Any) -> Any:
        self._live_pool()
        return await _bridge(self._loop, query, self._connections.run, method, self._q[query], args)

    def connections_in_use(self) -> int:
        """Pool connections checked out right now (by sessions or store operations).

        The connection the store keeps for its own next statement does not count
        while it is idle: it goes back to the pool as soon as the pool runs short.
        """
        pool = self._pool
        if pool is None:
            return 0
        return pool.get_size() - pool.get_idle_size() - int(self._connections.kept_idle)

    def check_pool_size(self, max_concurrent: int | None) -> bool:
        """True if the pool suits ``max_concurrent`` running calls; else log a warning.

        See :func:`recommended_pool_size`. ``None`` (unlimited) always warns.
        """
        wanted = recommended_pool_size(max_concurrent)
        if max_concurrent is None:
            _log.warning(
                "unlimited global concurrency with a pool of %d connections: calls that use "
                "their session may wait for a connection; set max_concurrent and "
                "max_pool_size >= max_concurrent + 2",
                self.max_pool_size,
            )
            return False
        if self.max_pool_size < wanted:
            _log.warning(
                "max_pool_size=%d is too small for max_concurrent=%d: running calls may "
                "wait for a database connection; use max_pool_size >= %d (max_concurrent + 2)",
                self.max_pool_size,
                max_concurrent,
                wanted,
            )
            return False
        return True

    # -- scheduling -------------------------------------------------------------------

    async def schedule(self, calls: Sequence[NewCall]) -> list[int]:
        if not calls:
            return []
        for call in calls:
            _check_new_call(call)
        earliest = _utc(min(c.due_at for c in calls))  # aware datetimes compare across zones
        rows = await self._call(
            "fetch",
            "insert_calls",
            [c.name for c in calls],
            [c.payload for c in calls],
            [c.due_at for c in calls],
            [c.identifier for c in calls],
            [c.scheduled_at for c in calls],
            self.channel,
            str(_to_micros(earliest)),
            [c.attempts for c in calls],
        )
        # Wake this process's listeners at once too; the NOTIFY reaches other
        # processes (and this one again: listeners tolerate duplicates).
        self._listeners.notify(earliest)
        return [row[0] for row in rows]

    async def cancel(self, call_id: int) -> bool:
        count: int = await self._call("fetchval", "cancel", call_id)
        return count > 0

    async def cancel_identifier(self, identifier: str) -> int:
        count: int = await self._call("fetchval", "cancel_identifier", identifier)
        return count

    # -- inspection -------------------------------------------------------------------

    async def pending(self, query: PendingQuery) -> list[StoredCall]:
        rows = await self._call(
            "fetch",
            "pending",
            query.name,
            query.identifier,
            query.due_after,
            query.due_before,
            query.limit,
        )
        return [call_from_row(row, _utc) for row in rows]

    async def pending_names(self, due_by: datetime | None = None) -> dict[str, int]:
        rows = await self._call("fetch", "pending_names", due_by)
        return {row[0]: row[1] for row in rows}

    async def next_due(self, names: Collection[str]) -> datetime | None:
        wanted = list(names)
        if not wanted:
            return None
        value: datetime | None = await self._call("fetchval", "next_due", wanted)
        return None if value is None else _utc(value)

    # -- claiming ---------------------------------------------------------------------

    async def claim(
        self, now: datetime, slots: Mapping[str, int], limit: int, lease: Lease | None = None
    ) -> list[StoredCall]:
        wanted = [(name, min(free, limit)) for name, free in slots.items() if free > 0]
        if limit <= 0 or not wanted:
            return []
        names = [name for name, _ in wanted]
        quotas = [free for _, free in wanted]
        leased = [] if lease is None else [name for name in names if name in lease.names]
        # Shielded: once the DELETE committed, its rows must reach the dispatcher even if
        # the caller is being cancelled. Bounded by the acquire and command timeouts.
        with trio.CancelScope(shield=True):
            if not leased:
                rows = await self._call("fetch", "claim_delete", names, quotas, now, limit)
            elif len(leased) == len(names):
                assert lease is not None
                rows = await self._call(
                    "fetch",
                    "claim_lease",
                    names,
                    quotas,
                    now,
                    limit,
                    lease.owner,
                    lease.expires_at,
                )
            else:
                assert lease is not None
                rows = await self._call(
                    "fetch",
                    "claim",
                    names,
                    quotas,
                    now,
                    limit,
                    sorted(leased),
                    lease.owner,
                    lease.expires_at,
                )
        calls = [call_from_row(row, _utc) for row in rows]
        calls.sort(key=lambda c: (c.due_at, c.id))
        return calls

    # -- dead letters -----------------------------------------------------------------

    async def renew(self, owner: str, call_ids: Collection[int], expires_at: datetime) -> set[int]:
        if not call_ids:
            return set()
        rows = await self._call("fetch", "renew", expires_at, owner, sorted(call_ids))
        return {row[0] for row in rows}

    async def complete(self, owner: str, call_id: int) -> bool:
        # Calls finishing together share one DELETE (see _complete_batch).
        with trio.CancelScope(shield=True):  # bounded by the store's timeouts
            done = await self._completions.submit((owner, call_id))
        return done

    async def _complete_batch(self, items: Sequence[tuple[str, int]]) -> list[bool]:
        by_owner: dict[str, list[int]] = {}
        for owner, call_id in items:
            by_owner.setdefault(owner, []).append(call_id)
        deleted: set[tuple[str, int]] = set()
        for owner, ids in by_owner.items():  # in practice one owner: the scheduler's
            rows = await self._call("fetch", "complete", owner, sorted(set(ids)))
            deleted.update((owner, row[0]) for row in rows)
        results = []
        for item in items:
            # A call completed twice in one batch: the first one deleted the row.
            results.append(item in deleted)
            deleted.discard(item)
        return results

    async def release(
        self, owner: str, call_id: int, due_at: datetime, *, refund_attempt: bool = False
    ) -> bool:
        with trio.CancelScope(shield=True):  # bounded by the store's timeouts
            count: int = await self._call(
                "fetchval",
                "release",
                due_at,
                int(refund_attempt),
                call_id,
                owner,
                self.channel,
                str(_to_micros(_utc(due_at))),
            )
        if count:
            self._listeners.notify(_utc(due_at))
        return count > 0

    async def dead_letter(
        self, call: StoredCall, error: str, failed_at: datetime, owner: str | None = None
    ) -> int | None:
        with trio.CancelScope(shield=True):  # the call is already claimed: keep it
            new_id: int | None = await self._call(
                "fetchval",
                "insert_dead_letter",
                call.id,
                call.name,
                call.payload,
                call.due_at,
                call.identifier,
                call.scheduled_at,
                failed_at,
                error.replace("\x00", "\\x00"),
                call.attempts,
                owner,
            )
        return new_id

    async def dead_letters(
        self, *, name: str | None = None, limit: int | None = None
    ) -> list[DeadLetter]:
        rows = await self._call("fetch", "dead_letters", name, limit)
        return [dead_letter_from_row(r, _utc) for r in rows]

    async def requeue_dead_letter(self, dead_letter_id: int, due_at: datetime) -> int | None:
        new_id: int | None = await self._call(
            "fetchval",
            "requeue_dead_letter",
            dead_letter_id,
            due_at,
            self.channel,
            str(_to_micros(_utc(due_at))),
        )
        if new_id is not None:
            self._listeners.notify(_utc(due_at))
        return new_id

    async def purge_dead_letters(self, ids: Collection[int] | None = None) -> int:
        if ids is None:
            count: int = await self._call("fetchval", "purge_all_dead_letters")
        else:
            count = await self._call("fetchval", "purge_dead_letters", sorted(set(ids)))
        return count

    # -- wake-ups ---------------------------------------------------------------------

    def add_listener(self, listener: Listener) -> Callable[[], None]:
        return self._listeners.add(listener)

    def _on_notify(self, conn: object, pid: int, channel: str, payload: object) -> None:
        # asyncpg calls this from the asyncio loop, which trio-asyncio runs in the Trio
        # thread: calling the listeners synchronously here is safe.
        try:
            due_at = _EPOCH + timedelta(microseconds=int(str(payload)))
        except (ValueError, OverflowError):
            _log.warning("ignoring malformed notification on %s: %r", channel, payload)
            due_at = _EPOCH
        self._listeners.notify(due_at)

    async def _listen_once(self, lost: trio.Event) -> asyncpg.Connection:
        conn: asyncpg.Connection = await _bridge(
            self._loop,
            "listen connect",
            asyncpg.connect,
            self._dsn,
            timeout=self._connect_timeout,
            command_timeout=self._connect_timeout,
            server_settings={"application_name": self.listener_application_name},
        )
        conn.add_termination_listener(lambda _conn: lost.set())
        try:
            await _bridge(self._loop, "listen", conn.add_listener, self.channel, self._on_notify)
        except BaseException:
            conn.terminate()
            raise
        return conn

    async def _listen_loop(
        self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Keep a LISTEN connection open; reconnect with backoff when it drops."""
        backoff = 0.0
        started = False
        while True:
            lost = trio.Event()
            try:
                conn = await self._listen_once(lost)
            except StoreError as exc:
                if not started:
                    raise
                backoff = min(max(backoff * 2, 0.1), _MAX_LISTEN_BACKOFF)
                _log.warning("LISTEN reconnect failed (retrying in %.2f s): %s", backoff, exc)
                await trio.sleep(backoff)
                continue
            self._listen_conn = conn
            self.listener_connects += 1
            if started:
                _log.info("LISTEN connection re-established on %s", self.channel)
                # Anything scheduled while we were deaf was not announced: wake everyone.
                self._listeners.notify(_EPOCH)
            else:
                started = True
                task_status.started()
            connected_at = trio.current_time()
            try:
                await self._watch(conn, lost)
            finally:
                self._listen_conn = None
                with trio.move_on_after(2, shield=True) as scope:
                    with suppress(StoreError):
                        await _bridge(self._loop, "listen close", conn.close, timeout=1)
                if scope.cancelled_caught or not conn.is_closed():
                    conn.terminate()
            # A connection that dies right after connecting must not make us spin.
            if trio.current_time() - connected_at < 5.0:
                backoff = min(max(backoff * 2, 0.1), _MAX_LISTEN_BACKOFF)
            else:
                backoff = 0.0
            _log.warning(
                "LISTEN connection on %s lost; reconnecting in %.2f s", self.channel, backoff
            )
            await trio.sleep(backoff)

    async def _watch(self, conn: asyncpg.Connection, lost: trio.Event) -> None:
        """Return when the LISTEN connection is gone (closed, or fails a ping)."""
        interval = max(1.0, min(self.recheck_interval or 10.0, 10.0))
        while not conn.is_closed():
            with trio.move_on_after(interval):
                await lost.wait()
            if lost.is_set() or conn.is_closed():
                return
            # A silent network failure shows up only when we talk: ping.
            try:
                with trio.fail_after(self._connect_timeout):
                    await _bridge(self._loop, "listen ping", conn.fetchval, "SELECT 1")
            except (StoreError, trio.TooSlowError) as exc:
                _log.warning("LISTEN connection failed a ping: %s", exc)
                return

    # -- sessions and lifetime --------------------------------------------------------

    def open_session(self, call: StoredCall) -> _SessionScope:
        """``async with store.open_session(call) as session``: closed on exit."""
        return _SessionScope(self, call.id)

    @property
    def open_sessions(self) -> int:
        """Sessions currently open (tests check none is left)."""
        return len(self._sessions)

    async def _aclose(self) -> None:
        pool, self._pool = self._pool, None
        if pool is None:
            return
        with trio.move_on_after(10, shield=True) as scope:
            try:
                await _bridge(self._loop, "pool close", self._connections.close)
            except StoreError as exc:
                _log.warning("closing the pool failed: %s", exc)
        if scope.cancelled_caught:
            _log.warning("closing the pool took too long; terminating its connections")
            pool.terminate()


def _lock_key(schema: str) -> int:
    digest = hashlib.blake2b(f"trio_futurecalls:migrate:{schema}".encode(), digest_size=8)
    return int.from_bytes(digest.digest(), "big", signed=True)


def _wrap_internal(exc: BaseException) -> BaseException:
    # The store's own errors are already library errors (translated at the edge).
    if isinstance(exc, FutureCallsError):
        return exc
    return StoreError(f"the PostgreSQL store failed: {exc!r}")


@asynccontextmanager
async def open_postgres_store(
    dsn: str,
    *,
    schema: str = DEFAULT_SCHEMA,
    min_pool_size: int = 1,
    max_pool_size: int = 10,
    recheck_interval: float | None = DEFAULT_RECHECK_INTERVAL,
    connect_timeout: float = 5.0,
    command_timeout: float = 30.0,
    acquire_timeout: float | None = None,
    application_name: str = "trio_futurecalls",
    migrate: bool = True,
) -> AsyncIterator[PostgresStore]:
    """Open the PostgreSQL store in ``schema`` (created and migrated if needed).

    * ``dsn``: an asyncpg/libpq connection string (``postgresql://user@host/db``).
    * ``schema``: lower-case identifier; the store's tables and channel live there.
    * ``min_pool_size``/``max_pool_size``: the asyncpg pool's bounds; see
      :func:`recommended_pool_size` (``max_concurrent + 2``).
    * ``recheck_interval``: seconds between the dispatcher's fallback re-checks in case
      a notification was lost (None: rely on NOTIFY alone).
    * ``connect_timeout``: seconds to open a connection; ``command_timeout``: seconds
      a statement may take; ``acquire_timeout``: seconds to wait for a pool connection
      (default: ``connect_timeout + command_timeout``). Together they bound how long a
      method takes to raise :class:`StoreUnavailableError` during an outage.
    * ``application_name``: shown in ``pg_stat_activity`` (the LISTEN connection adds
      ``:listen``).
    * ``migrate=False``: do not create or upgrade the schema (it must be current).

    Raises :class:`StoreUnavailableError` if the database cannot be reached at start.
    """
    if not isinstance(dsn, str) or not dsn:
        raise InvalidArgumentError("dsn must be a non-empty connection string")
    checked_schema = check_schema_name(schema)
    for value, what in ((min_pool_size, "min_pool_size"), (max_pool_size, "max_pool_size")):
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise InvalidArgumentError(f"{what} must be a non-negative int, got {value!r}")
    if max_pool_size < 1 or min_pool_size > max_pool_size:
        raise InvalidArgumentError(
            f"need 0 <= min_pool_size <= max_pool_size and max_pool_size >= 1, got "
            f"{min_pool_size} and {max_pool_size}"
        )
    recheck = check_positive_seconds(recheck_interval, "recheck_interval", allow_none=True)
    if recheck == 0:
        raise InvalidArgumentError("recheck_interval must be > 0 or None")
    timeouts: dict[str, float | None] = {}
    for seconds_arg, what in (
        (connect_timeout, "connect_timeout"),
        (command_timeout, "command_timeout"),
        (acquire_timeout, "acquire_timeout"),
    ):
        seconds = check_positive_seconds(seconds_arg, what, allow_none=what == "acquire_timeout")
        if seconds is not None and (seconds == 0 or math.isinf(seconds)):
            raise InvalidArgumentError(f"{what} must be > 0, got {seconds_arg!r}")
        timeouts[what] = seconds
    connect_s = timeouts["connect_timeout"]
    command_s = timeouts["command_timeout"]
    assert connect_s is not None
    assert command_s is not None
    acquire_s = timeouts["acquire_timeout"] or connect_s + command_s
    if not isinstance(application_name, str) or not application_name.isprintable():
        raise InvalidArgumentError("application_name must be a printable str")
    if max_pool_size < recommended_pool_size(1):
        _log.warning(
            "max_pool_size=%d is below the minimum useful size %d (dispatcher, one running "
            "call, one spare); see recommended_pool_size()",
            max_pool_size,
            recommended_pool_size(1),
        )

    body_exc: BaseException | None = None
    try:
        async with trio_asyncio.open_loop() as loop:
            # asyncpg reports some conditions (a connection released with a transaction
            # still open, say) to the loop's exception handler; trio-asyncio's default
            # handler raises them inside the loop and would take the store down. They
            # are already dealt with (asyncpg rolls back), so log them.
            loop.set_exception_handler(_log_loop_exception)
            try:
                pool: asyncpg.Pool = await _bridge(
                    loop,
                    "create pool",
                    asyncpg.create_pool,
                    dsn,
                    min_size=min_pool_size,
                    max_size=max_pool_size,
                    timeout=connect_s,
                    command_timeout=command_s,
                    server_settings={"application_name": application_name[:63]},
                    **_pool_options(),
                )
            except (ValueError, OverflowError) as exc:  # a malformed DSN
                raise InvalidArgumentError(f"bad PostgreSQL DSN: {exc}") from exc
            store = PostgresStore(
                loop=loop,
                dsn=dsn,
                schema=checked_schema,
                pool=pool,
                max_pool_size=max_pool_size,
                recheck_interval=recheck,
                acquire_timeout=acquire_s,
                connect_timeout=connect_s,
                application_name=application_name,
            )
            try:
                if migrate:
                    await _bridge(
                        loop,
                        "migrate",
                        _aio_migrate,
                        pool,
                        store._q,
                        store._sql_of,
                        _lock_key(checked_schema),
                        acquire_s,
                    )
                async with trio.open_nursery() as nursery:
                    await nursery.start(store._listen_loop)
                    try:
                        yield store
                    except BaseException as exc:
                        body_exc = exc
                        raise
                    finally:
                        nursery.cancel_scope.cancel()
            finally:
                with trio.CancelScope(shield=True):
                    await store._aclose()
    except BaseExceptionGroup as group:
        # The nursery and trio-asyncio's loop wrap what crosses them in groups; do not
        # leak those: re-raise the body's own exception, or the store's own error.
        raise_unwrapped(group, body_exc, _wrap_internal)

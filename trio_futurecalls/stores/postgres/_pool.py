"""The store's connection pool: its size (and what the server has room for), the
connection the store keeps for its own statements, and the reset a connection gets
after a running call's session used it.

Everything here but :func:`recommended_pool_size` and :func:`pool_size_advice` runs on
the store's asyncio loop, called through the bridge (:func:`._errors.bridge`).
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import logging
import math
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Final, TypeVar, cast

import asyncpg
import attrs
import trio
from asyncpg.pool import PoolConnectionProxy

from ..._errors import InvalidArgumentError
from ._errors import lost, on_connection, raise_if_gone

T = TypeVar("T")

_log = logging.getLogger("trio_futurecalls.store.postgres.pool")


@attrs.frozen
class ServerRoom:
    """How many connections the server takes, read when the store opened."""

    #: The server's ``max_connections``.
    max_connections: int
    #: Slots only superusers (and, from PostgreSQL 16, roles granted
    #: ``pg_use_reserved_connections``) may take; counted as unavailable.
    reserved: int
    #: Client connections of everyone else (other programs, other stores) then.
    others: int

    @property
    def free(self) -> int:
        """Connections this store could open: its pool and its ``LISTEN`` connection."""
        return max(self.max_connections - self.reserved - self.others, 0)

    def describe(self) -> str:
        return (
            f"the server has room for {self.free} connections of this store (max_connections="
            f"{self.max_connections}, {self.reserved} reserved, {self.others} used by "
            "other clients when the store opened)"
        )


def recommended_pool_size(max_concurrent: int | None, server_room: int | None = None) -> int:
    """Pool size for a scheduler running at most ``max_concurrent`` calls at once.

    ``max_concurrent + 2``: one connection per running call (for its session), one for
    the dispatcher's claims, one for the store's other statements and application code
    that schedules or cancels (see :class:`Connections`). The ``LISTEN`` connection is
    separate from the pool. ``None`` (unlimited) has no safe size; the minimum (3) is
    returned and :meth:`PostgresStore.check_pool_size` warns.

    ``server_room``: connections the server has room for (see
    :attr:`PostgresStore.server_room`); the size never exceeds it, less the ``LISTEN``
    connection. (Then ``max_concurrent`` is too high for the server:
    :meth:`PostgresStore.check_pool_size` says by how much.)
    """
    if max_concurrent is None:
        wanted = 3
    elif isinstance(max_concurrent, bool) or not isinstance(max_concurrent, int):
        raise InvalidArgumentError(f"max_concurrent must be an int or None, got {max_concurrent!r}")
    elif max_concurrent < 1:
        raise InvalidArgumentError(f"max_concurrent must be >= 1 (or None), got {max_concurrent}")
    else:
        wanted = max(max_concurrent, 1) + 2
    if server_room is None:
        return wanted
    if isinstance(server_room, bool) or not isinstance(server_room, int):
        raise InvalidArgumentError(f"server_room must be an int or None, got {server_room!r}")
    return max(min(wanted, server_room - 1), 1)


def pool_size_advice(
    max_pool_size: int, max_concurrent: int | None, room: ServerRoom | None
) -> str | None:
    """What is wrong with a pool of ``max_pool_size`` for ``max_concurrent`` running
    calls on a server with ``room`` (None: not known), as a warning that says what to
    use instead; None when nothing is."""
    if room is not None and room.free < recommended_pool_size(1) + 1:
        return (
            f"{room.describe()}: not enough for the store's pool and LISTEN connection; "
            "raise max_connections on the server or close other clients"
        )
    if max_concurrent is None:
        advice = (
            f"unlimited global concurrency with a pool of {max_pool_size} connections: calls "
            "that use their session may wait for a connection; set max_concurrent and "
            "max_pool_size >= max_concurrent + 2"
        )
        if room is not None:
            advice += f"; {room.describe()}: max_concurrent <= {room.free - 3}"
        return advice
    wanted = recommended_pool_size(max_concurrent)
    # The largest pool the server has room for, next to the LISTEN connection.
    fits = None if room is None else room.free - 1
    if fits is not None and wanted > fits:
        assert room is not None
        return (
            f"max_concurrent={max_concurrent} needs a pool of {wanted} connections "
            f"(max_concurrent + 2) and a LISTEN connection, but {room.describe()}: use "
            f"max_concurrent <= {fits - 2} with max_pool_size={fits}, or raise "
            "max_connections on the server"
        )
    if max_pool_size < wanted:
        return (
            f"max_pool_size={max_pool_size} is too small for max_concurrent={max_concurrent}: "
            "running calls may wait for a database connection; use max_pool_size >= "
            f"{wanted} (max_concurrent + 2)"
        )
    if fits is not None and max_pool_size > fits:
        assert room is not None
        return (
            f"max_pool_size={max_pool_size} is more than the server can give ({room.describe()}): "
            "connections past that are refused, and other clients with them; use "
            f"max_pool_size={fits} (max_concurrent={max_concurrent} needs {wanted})"
        )
    return None


class _StoreConnection(asyncpg.Connection):
    """A pool connection that remembers whether a session has used it.

    The store's own statements (claim, schedule, complete...) are single statements in
    their own implicit transaction: they leave no session state behind. A running
    call's session may leave anything (settings, advisory locks, LISTEN, cursors), so
    a connection a session used gets asyncpg's full reset before the pool hands it
    out again, and the others skip that round trip (see :func:`_aio_reset`).
    """

    __slots__ = ("_futurecalls_session_used", "_futurecalls_timed")

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._futurecalls_session_used = False
        #: The pool's configuration while the store's statements run without asyncpg's
        #: command timer (None: they run with it; see :meth:`_futurecalls_set_timed`).
        self._futurecalls_timed: Any = None

    def _futurecalls_mark_session_use(self) -> None:
        self._futurecalls_session_used = True

    def _futurecalls_set_timed(self, timed: bool) -> bool:
        """Turn asyncpg's per-statement ``command_timeout`` on or off for this
        connection; return whether it now is as asked.

        asyncpg bounds each statement with a timer of the event loop, which through
        trio-asyncio costs a pass of its loop and a heap entry kept for the whole
        timeout (about 13% of ``schedule_call``'s CPU). The store's single statements
        on the connections it holds are bounded by a Trio deadline instead (see
        :meth:`Connections.run`); claims, transactions, sessions and the pool's other
        users keep asyncpg's.
        Only the configuration's ``command_timeout`` changes, and the pool's reset
        hook (:func:`_aio_reset`) turns it back on before anyone else gets the
        connection. A configuration of another shape (another asyncpg) stays as it is.
        """
        if timed:
            if self._futurecalls_timed is not None:
                self._config, self._futurecalls_timed = self._futurecalls_timed, None
            return True
        if self._futurecalls_timed is None:
            try:
                untimed = self._config._replace(command_timeout=None)
            except (AttributeError, TypeError, ValueError):  # pragma: no cover - asyncpg
                return False
            self._futurecalls_timed, self._config = self._config, untimed
        return True


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
    Every one of ours gets asyncpg's command timeout back first (the store may have
    turned it off: :meth:`_StoreConnection._futurecalls_set_timed`).
    """
    if isinstance(conn, _StoreConnection):
        conn._futurecalls_set_timed(True)
        if not conn._futurecalls_session_used:
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


def pool_options() -> dict[str, Any]:
    """``create_pool`` options for the selective reset (asyncpg >= 0.30 has the hook;
    older versions keep the default: every released connection is reset)."""
    if "reset" not in inspect.signature(asyncpg.create_pool).parameters:
        return {}  # pragma: no cover - asyncpg < 0.30
    return {"connection_class": _StoreConnection, "reset": _aio_reset}


def _bound(
    conn: PoolConnectionProxy, method: str | Callable[..., Awaitable[Any]]
) -> Callable[..., Awaitable[Any]]:
    if isinstance(method, str):
        return cast("Callable[..., Awaitable[Any]]", getattr(conn, method))
    return functools.partial(method, conn)


#: Set on the connection the store holds for its claims (see :class:`Connections`).
#: The claim is one large statement (every claim CTE is planned, run or not): a
#: custom plan costs the server 2-4 ms to make, more than the claim takes to run, and
#: PostgreSQL keeps choosing custom plans whenever the table's statistics make the
#: generic plan look dearer (a million future rows: ``due_at <= $3`` is estimated at
#: a third of them). The generic plan reads the same few index entries either way.
GENERIC_PLANS: Final = "SET plan_cache_mode = force_generic_plan"


@attrs.define(eq=False)
class _Held:
    """A pool connection the store holds between its statements of one kind."""

    #: Run on each connection it takes, before its first statement (None: nothing).
    #: A connection set up so is marked as used by a session: when it goes back to the
    #: pool, the full reset (``RESET ALL``) takes the setting off before anyone else
    #: gets it.
    setup: str | None = None
    conn: PoolConnectionProxy | None = None
    busy: bool = False
    #: ``conn``'s :meth:`_StoreConnection._futurecalls_set_timed` (None: not ours).
    set_timed: Callable[[bool], bool] | None = None

    @property
    def idle(self) -> bool:
        return self.conn is not None and not self.busy


class Connections:
    """The store's pool, plus two pool connections the store holds for its own
    statements: one for claims (with generic plans: :data:`GENERIC_PLANS`), one for
    the rest.

    Runs on the store's asyncio loop only (no locking needed: every method checks and
    updates its state before its first ``await``). Each store method is one call of
    :meth:`run` (or :meth:`run_claim`), i.e. one bridge crossing that takes a
    connection, runs the statement and gives the connection back.

    A held connection spares each statement the pool's acquire and release (a few
    asyncio tasks and timers each, which trio-asyncio makes expensive). The store's
    statements are single statements in implicit transactions, so it carries no state
    between them. Statements that find theirs busy take a pool connection as before. It
    goes back to the pool whenever anything goes wrong with it (errors, cancellation:
    the pool then waits out a cancelled query, rolls back or reconnects), when someone
    waits for a pool connection (after a statement), when a session needs a connection
    and the pool is short (sessions never wait for the store's idle connections) and
    when the store closes.

    Every acquire and release after migrations goes through here, so :attr:`out`
    counts the connections checked out or being acquired (waiters included): the pool
    is short when that reaches its size.
    """

    def __init__(
        self,
        pool: asyncpg.Pool,
        acquire_timeout: float,
        cancel_timeout: float | None = None,
        command_timeout: float | None = None,
    ) -> None:
        self.pool = pool
        self.max_size = pool.get_max_size()
        self.acquire_timeout = acquire_timeout
        #: The pool's ``command_timeout``, which bounds the statements on the held
        #: connections by a Trio deadline instead of asyncpg's timer (see :meth:`_run`;
        #: None: they keep asyncpg's timer).
        self.command_timeout = command_timeout
        #: How long a statement that was cancelled waits for the server to acknowledge
        #: the cancellation (asyncpg sends it over a new connection) before its
        #: connection is terminated instead: the caller's deadline is not extended by
        #: more than that.
        self.cancel_timeout = acquire_timeout if cancel_timeout is None else cancel_timeout
        self._kept = _Held()
        self._claimer = _Held(GENERIC_PLANS)
        self.closing = False
        self.out = 0
        #: Connections held by running calls' sessions.
        self.sessions = 0

    @property
    def held_idle(self) -> int:
        """Connections the store holds that no statement is using right now."""
        return int(self._kept.idle) + int(self._claimer.idle)

    @property
    def short(self) -> bool:
        """Whether an acquire now could wait (every connection is out or promised)."""
        return self.out >= self.max_size

    async def _acquire(self) -> PoolConnectionProxy:
        self.out += 1
        try:
            conn: PoolConnectionProxy = await self.pool.acquire(timeout=self.acquire_timeout)
        except BaseException as exc:
            self.out -= 1
            raise_if_gone(exc, self.pool.is_closing())
            raise
        return conn

    async def _acquire_room(self) -> PoolConnectionProxy:
        """As :meth:`_acquire`; if the pool is short, the held connections that are
        idle go back first: nothing waits for a connection the store holds idle."""
        if self.short and self.held_idle:
            await self.give_back()
        return await self._acquire()

    async def release(self, conn: PoolConnectionProxy, seconds: float | None = None) -> None:
        """Give a connection back to the pool (which resets it if a session used it)."""
        try:
            await self.pool.release(conn, timeout=seconds)
        finally:
            self.out -= 1

    async def _release_after(self, conn: PoolConnectionProxy, exc: BaseException) -> None:
        """Give back a connection whose statement failed or was cancelled.

        After a cancellation (the caller's deadline), the pool waits for the server to
        acknowledge it before the connection is reused; that wait is bounded by
        :attr:`cancel_timeout`, past which the pool terminates the connection.
        """
        if not isinstance(exc, asyncio.CancelledError):
            await self.release(conn)
            return
        try:
            await self.release(conn, self.cancel_timeout)
        except Exception as error:  # the pool terminated it: nothing is left out
            _log.info("a cancelled statement's connection was terminated: %r", error)

    async def transaction(self, fn: Callable[[PoolConnectionProxy], Awaitable[T]]) -> T:
        """On the asyncio side: ``fn(conn)`` in one transaction, on a connection of its
        own (statements that need Python between them, e.g. firing recurring
        schedules; not the hot path)."""
        conn = await self._acquire_room()

        async def body() -> T:
            async with conn.transaction():
                return await fn(conn)

        try:
            result = await on_connection(conn, body)
        except BaseException as exc:
            await self._release_after(conn, exc)
            raise
        await self.release(conn)
        return result

    async def run(
        self, method: str, sql: str, args: Sequence[Any], deadline: trio.CancelScope | None = None
    ) -> Any:
        """``conn.method(sql, *args)`` on a connection (the kept one if it is free).

        ``deadline``: a cancel scope the Trio caller waits in, around its crossing of
        the bridge. A statement on a held connection then runs without asyncpg's
        command timer, and this sets the scope's deadline to ``command_timeout`` from
        the statement's start instead (the same bound, for a fraction of the cost:
        see :meth:`_StoreConnection._futurecalls_set_timed`); the caller turns the
        scope's cancellation into :class:`StoreUnavailableError`. Without it (or on a
        pool connection) asyncpg's timer bounds the statement as usual.
        """
        return await self._run(self._kept, method, sql, args, deadline)

    async def run_with(
        self, method: str | Callable[..., Awaitable[Any]], sql: str, args: Sequence[Any]
    ) -> Any:
        """As :meth:`run` without a deadline; a ``method`` that is a coroutine function
        runs as ``method(conn, sql, *args)`` (a few statements in a transaction, each
        bounded by asyncpg's timer)."""
        return await self._run(self._kept, method, sql, args, None)

    async def run_claim(self, method: str, sql: str, args: Sequence[Any]) -> Any:
        """As :meth:`run` without a deadline, for a claim: on the connection held for
        claims (generic plans) if it is free, else on a pool connection as any
        statement. asyncpg's timer bounds it: it does nothing once the rows have
        reached the client, where a cancellation would lose them."""
        return await self._run(self._claimer, method, sql, args, None)

    def _bound_by(self, held: _Held, deadline: trio.CancelScope | None) -> None:
        """Bound the statement about to run on ``held``'s connection: by ``deadline``
        if it can (see :meth:`run`), else by asyncpg's command timer."""
        set_timed = held.set_timed
        if set_timed is None or self.command_timeout is None:
            return  # not our connection class: asyncpg's timer, as the pool says
        if deadline is None:
            set_timed(True)
        elif set_timed(False):
            deadline.deadline = trio.current_time() + self.command_timeout

    async def _run(
        self,
        held: _Held,
        method: str | Callable[..., Awaitable[Any]],
        sql: str,
        args: Sequence[Any],
        deadline: trio.CancelScope | None,
    ) -> Any:
        if held.busy or self.closing:
            conn = await self._acquire_room()
            try:
                result = await on_connection(conn, _bound(conn, method), sql, *args)
            except BaseException as exc:
                await self._release_after(conn, exc)
                raise
            await self.release(conn)
            return result
        held.busy = True
        try:
            if held.conn is not None and lost(held.conn):
                # Lost while idle (server restart, network): the pool would have
                # replaced it on acquire, so do the same.
                gone, held.conn = held.conn, None
                await self.release(gone)
            if held.conn is None:
                conn = held.conn = await self._acquire_room()
                held.set_timed = getattr(conn, "_futurecalls_set_timed", None)
                if held.setup is not None:
                    _mark_session_use(conn)  # reset (RESET ALL) when released
                    await on_connection(conn, conn.execute, held.setup)
            conn = held.conn
            self._bound_by(held, deadline)
            try:
                result = await on_connection(conn, _bound(conn, method), sql, *args)
            finally:
                if deadline is not None:
                    # The statement ended (or the deadline fired): what follows (a
                    # release) has bounds of its own, and must not lose its result.
                    deadline.deadline = math.inf
        except BaseException as exc:
            held.busy = False
            failed, held.conn = held.conn, None
            if failed is not None:
                await self._release_after(failed, exc)
            raise
        held.busy = False
        if self.closing or self.out > self.max_size:
            # Closing, or someone waits for a pool connection (``out`` counts waiters).
            await self._give_back(held)
        return result

    async def give_back(self) -> None:
        """Return the held connections that are idle to the pool."""
        await self._give_back(self._kept)
        await self._give_back(self._claimer)

    async def _give_back(self, held: _Held) -> None:
        """Return ``held``'s connection to the pool, if it is idle.

        Never raises but for cancellation: releasing the claims' connection is a round
        trip (its full reset), which fails when its server is gone and the client does
        not know yet. The pool then terminates it (nothing is left out) and replaces it
        when asked; whoever gave it back (a statement that succeeded, as a claim whose
        DELETE committed; a session or statement that needs the pool's room; close)
        goes on as if it had been released.
        """
        if held.busy:
            return  # the statement using it gives it back when it ends, if it must
        conn, held.conn = held.conn, None
        if conn is None:
            return
        try:
            await self.release(conn)
        except Exception as error:  # the pool terminated it
            _log.info("a held connection failed its reset and was terminated: %r", error)

    async def acquire_session(self) -> PoolConnectionProxy:
        """A connection for a running call's session: fully reset when released."""
        conn = await self._acquire_room()
        _mark_session_use(conn)
        self.sessions += 1
        return conn

    async def release_session(self, conn: PoolConnectionProxy, seconds: float) -> None:
        """Give back a connection :meth:`acquire_session` handed out."""
        try:
            await self.release(conn, seconds)
        finally:
            self.sessions -= 1

    async def close(self) -> None:
        self.closing = True
        await self.give_back()
        await self.pool.close()

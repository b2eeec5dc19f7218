"""The store itself: :class:`PostgresStore`, the Store protocol over one PostgreSQL schema.

Each method is one statement from ``stores/sql/postgres/queries.sql`` on a pool
connection the store holds (:class:`._pool.Connections`), one bridge crossing; keyed
inserts (``_inserts.py``) and recurring schedules (``_recurring.py``) run a few
statements in one transaction. The listener task, sessions, the pool and migrations
live in modules of their own; :func:`open_postgres_store` wires them together.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Awaitable, Callable, Collection, Mapping, Sequence
from datetime import datetime
from functools import partial
from typing import Any, Final, TypeVar, final

import asyncpg
import attrs
import trio

from ..._cancel_model import CancelArgs, CancelRequest
from ..._errors import DuplicateCallError, StoreClosedError, StoreError, StoreUnavailableError
from ..._model import (
    Claim,
    DeadLetter,
    Lease,
    NewCall,
    RecurringFire,
    RecurringInfo,
    StoredCall,
)
from ..._new_call_columns import NewCallColumns
from ..._options import utc_now
from ..._stats import QueueLength
from ..._store import Listener, PendingQuery
from ..._store_args import StoreArgs
from .._claims import until_next
from .._dependencies import CANCELLED
from .._keys import merge_repeated_keys
from .._listeners import CANCEL_REQUESTED, Listeners
from .._on_demand import OnDemand
from .._rows import (
    call_from_row,
    dead_letter_from_row,
    recurring_from_row,
)
from ._cancels import aio_request_cancel
from ._coordination import PostgresCoordination
from ._dependencies import (
    aio_complete_prerequisite,
    aio_dead_letter_prerequisite,
    aio_end_abandoned,
    aio_end_dropped,
    aio_gone,
    aio_prerequisite_ended,
    aio_requeue_waiting,
    aio_schedule_waiting,
)
from ._errors import bridge
from ._grouped import GroupedWrites
from ._inserts import (
    DEADLOCK_ATTEMPTS,
    TRY_AGAIN,
    ScheduleCommit,
    aio_insert_keyed,
    insert_calls_args,
    insert_columns_args,
    insert_new_calls_args,
    is_new,
    schedule_queries,
)
from ._listener import NotifyListener, notify_payload
from ._pool import Connections, ServerRoom, pool_size_advice
from ._recurring import aio_cancel_recurring, aio_fire_recurring, aio_put_recurring
from ._schema import channel_of, schema_queries
from ._session import Sessions, SessionScope
from ._values import utc

_log = logging.getLogger("trio_futurecalls.store.postgres.store")

T = TypeVar("T")

#: Largest value of the claim's integer parameters (free slots, limit).
_MAX_INT4: Final = 2**31 - 1


@final
class PostgresStore(PostgresCoordination):
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
        command_timeout: float | None = None,
        application_name: str,
        schedule_commit: ScheduleCommit = "durable",
    ) -> None:
        self._loop = loop
        self._connect_timeout = connect_timeout
        self.schema = schema
        #: The NOTIFY channel of this schema.
        self.channel = channel_of(schema)
        self.recheck_interval = recheck_interval
        #: Every worker hears a cancel request's NOTIFY: a canceller waits up to 1 s
        #: for their acks (_cancels.py).
        self.cancel_ack_wait = 1.0
        self.max_pool_size = max_pool_size
        self._pool: asyncpg.Pool | None = pool
        self._connections = Connections(
            pool, acquire_timeout, cancel_timeout=connect_timeout, command_timeout=command_timeout
        )
        # The LISTEN connection runs only while there are listeners (_on_demand.py).
        self._listen = OnDemand(self._listen_while_wanted, "futurecalls-listen")
        self._listeners = Listeners(self._listen)
        # Writes after a call, grouped: at most one connection per kind at a time.
        self._writes = GroupedWrites(self._call, self.channel, self._listeners)
        #: How many connections the server had room for when the store opened (None:
        #: not known); :meth:`check_pool_size` keeps its advice within it.
        self.server_room: ServerRoom | None = None
        self._listener = NotifyListener(
            loop=loop,
            dsn=dsn,
            channel=self.channel,
            application_name=application_name,
            connect_timeout=connect_timeout,
            recheck_interval=recheck_interval,
            listeners=self._listeners,
        )
        self._sessions = Sessions(loop, self._connections, self._live_pool)
        self._q = schema_queries(schema)
        #: How schedules commit (see :func:`open_postgres_store`).
        self.schedule_commit: ScheduleCommit = schedule_commit
        # The query each schedule statement runs: its _async_commit variant or not.
        self._inserts = schedule_queries(schedule_commit)
        # Set once a claim found a cluster-wide limit stored for the names it asked
        # for: from then on, claims run the full statements, which take tokens.
        self._cluster_limits_seen = False

    @property
    def listener_application_name(self) -> str:
        """``application_name`` of the LISTEN connection (visible in pg_stat_activity)."""
        return self._listener.application_name

    @property
    def listener_connects(self) -> int:
        """How many times the LISTEN connection (re)connected: 0 while nothing listened.

        The store opens it when the first wake-up listener is added (a scheduler that
        runs calls adds one) and closes it when the last one is removed: a store that
        only schedules never opens it.
        """
        return self._listener.connects

    @property
    def notifications_heard(self) -> int:
        """How many notifications the LISTEN connection heard (0 without one)."""
        return self._listener.notifications

    @property
    def listening(self) -> bool:
        """Whether the LISTEN connection is up right now."""
        return self._listener.connection is not None

    async def _listen_while_wanted(self) -> None:
        await self._listener.run()

    async def wait_listening(self) -> bool:
        """Return True once the LISTEN connection is up (see :class:`ListensOnDemand`);
        False when no listener wants it, or when it is not up within twice
        ``connect_timeout`` (it keeps trying; ``recheck_interval`` covers the gap)."""
        if not self._listen.wanted:
            return False
        with trio.move_on_after(2 * self._connect_timeout):
            await self._listener.wait_connected()
            return True
        _log.warning(
            "the LISTEN connection on %s is not up yet; until it is, other processes' "
            "calls are seen every recheck_interval (%s s)",
            self.channel,
            self.recheck_interval,
        )
        return False

    # -- plumbing -----------------------------------------------------------------------

    def _live_pool(self) -> asyncpg.Pool:
        if self._pool is None:
            raise StoreClosedError("the PostgreSQL store is closed")
        return self._pool

    async def _call(self, method: str, query: str, *args: Any) -> Any:
        """One statement, ``conn.method(sql, *args)``, in one crossing of the bridge
        (on the connection the store holds if it is free).

        Bounded by a deadline on this side, which the asyncio side sets when the
        statement starts (see :meth:`Connections.run`): past it, the statement is
        cancelled on the server and this raises :class:`StoreUnavailableError`, as
        asyncpg's own command timeout would. An answer that arrives just as the
        deadline passes is lost with the cancellation, as one still in transit is
        with asyncpg's timer: the error means "maybe done", as any outage's does
        (schedules are not replayed; writes after a call are retried, and find the
        row gone). Claims keep asyncpg's timer (:meth:`_claim`).
        """
        self._live_pool()
        run = self._connections.run
        with trio.CancelScope() as deadline:
            return await bridge(self._loop, query, run, method, self._q[query], args, deadline)
        # As the bridge reports asyncpg's own timeout (whose TimeoutError it chains).
        timeout = TimeoutError(
            f"no answer within command_timeout={self._connections.command_timeout} s"
        )
        raise StoreUnavailableError(
            f"PostgreSQL unavailable ({query}): TimeoutError: {timeout}"
        ) from timeout

    async def _claim(self, query: str, *args: Any) -> Any:
        """As :meth:`_call` (``fetch``), on the connection held for claims (its plans
        are generic: see :data:`._pool.GENERIC_PLANS`), bounded by asyncpg's command
        timer: unlike a cancellation, it does nothing once the rows have reached the
        client, so a claim that committed is never reported failed for its timeout
        (at most once, its rows are already deleted)."""
        self._live_pool()
        return await bridge(
            self._loop, query, self._connections.run_claim, "fetch", self._q[query], args
        )

    async def _call_with(self, fn: Callable[..., Awaitable[Any]], query: str, *args: Any) -> Any:
        """As :meth:`_call`, with ``fn(conn, sql, *args)`` run on the connection: a few
        statements (a transaction, retried on deadlocks), each bounded by asyncpg's
        command timer."""
        self._live_pool()
        return await bridge(self._loop, query, self._connections.run_with, fn, self._q[query], args)

    def connections_in_use(self) -> int:
        """Pool connections checked out right now (by sessions or store operations).

        The connections the store holds for its own next statements do not count while
        they are idle: they go back to the pool as soon as a session needs one.
        """
        pool = self._pool
        if pool is None:
            return 0
        return pool.get_size() - pool.get_idle_size() - self._connections.held_idle

    @property
    def session_connections(self) -> int:
        """Pool connections held by running calls' sessions right now (the store's own
        statements, such as the dispatcher's claims, are not counted)."""
        return self._connections.sessions

    async def read_server_room(self) -> ServerRoom:
        """Ask the server how many connections it has room for; kept in
        :attr:`server_room` (``open_postgres_store`` does this once, at open)."""
        row = await self._call("fetchrow", "server_connections")
        pool = self._live_pool()
        # This store's own connections are not "others".
        others = row[3] - pool.get_size() - int(self._listener.connection is not None)
        self.server_room = ServerRoom(
            max_connections=row[0], reserved=row[1] + row[2], others=max(others, 0)
        )
        return self.server_room

    def check_pool_size(self, max_concurrent: int | None) -> bool:
        """True if the pool suits ``max_concurrent`` running calls; else log a warning.

        See :func:`recommended_pool_size`. ``None`` (unlimited) always warns. When
        :attr:`server_room` is known, a pool (or a limit) the server has no room for
        warns too, with numbers that fit.
        """
        advice = pool_size_advice(self.max_pool_size, max_concurrent, self.server_room)
        if advice is None:
            return True
        _log.warning("%s", advice)
        return False

    # -- scheduling -------------------------------------------------------------------

    async def schedule(self, calls: Sequence[NewCall]) -> list[int]:
        calls = StoreArgs.schedule(calls)
        if not calls:
            return []
        if type(calls) is NewCallColumns and len(calls) > 1:
            # schedule_many's common batch: its columns are the statement's arrays.
            earliest = utc(calls.earliest())
            args = insert_columns_args(calls, self.channel, earliest)
            rows = await self._call("fetch", self._inserts["insert_new_calls"], *args)
            self._listeners.notify(earliest)
            return [row[0] for row in rows]
        earliest = utc(min(c.due_at for c in calls))  # aware datetimes compare across zones
        if any(c.after or c.after_batch for c in calls):
            ids, ready = await self._dependency_transaction(
                "schedule", partial(aio_schedule_waiting, self._q, self.channel, calls)
            )
            if ready is not None:
                self._listeners.notify(utc(ready))
            return ids
        if any(c.unique_key is not None for c in calls):
            return await self._schedule_keyed(calls, earliest)
        if len(calls) == 1 and is_new(calls[0]):
            c = calls[0]
            call_id = await self._call(
                "fetchval",
                self._inserts["insert_one_call"],
                c.name,
                c.payload,
                c.due_at,
                c.identifier,
                c.scheduled_at,
                self.channel,
                notify_payload(earliest),
                c.priority,
            )
            self._listeners.notify(earliest)
            return [call_id]
        if all(is_new(c) for c in calls):
            args = insert_new_calls_args(calls, self.channel, earliest)
            rows = await self._call("fetch", self._inserts["insert_new_calls"], *args)
        else:
            args = insert_calls_args(calls, self.channel, earliest)
            rows = await self._call("fetch", self._inserts["insert_calls"], *args)
        # Wake this process's listeners at once too; the NOTIFY reaches other
        # processes (and this one again: listeners tolerate duplicates).
        self._listeners.notify(earliest)
        return [row[0] for row in rows]

    async def _schedule_keyed(self, calls: Sequence[NewCall], earliest: datetime) -> list[int]:
        """A batch with unique keys: one statement (``insert_keyed_calls``) in the common
        case. A batch of more than one row, or with "error" keys, runs in a transaction
        of its own, so that it is stored whole or not at all."""
        merged, answers = merge_repeated_keys(calls)
        strict = any(c.unique_key is not None and c.on_conflict == "error" for c in merged)
        results = await self._call_with(
            aio_insert_keyed,
            self._inserts["insert_keyed_calls"],
            merged,
            self.channel,
            notify_payload(earliest),
            strict or len(merged) > 1,
        )
        for call, (call_id, conflicted) in zip(merged, results, strict=True):
            if conflicted and call.on_conflict == "error":
                assert call.unique_key is not None
                raise DuplicateCallError(call.name, call.unique_key, call_id)
        self._listeners.notify(earliest)
        return [results[k][0] for k in answers]

    async def cancel(self, call_id: int) -> bool:
        call_id = StoreArgs.cancel(call_id)
        return await self._cancel("cancel", call_id) > 0

    async def cancel_identifier(self, identifier: str) -> int:
        identifier = StoreArgs.cancel_identifier(identifier)
        return await self._cancel("cancel_identifier", identifier)

    async def _cancel(self, query: str, arg: object) -> int:
        """Delete pending rows; the calls waiting for them become dead letters (in the
        same transaction)."""

        async def run(conn: Any) -> int:
            rows = await conn.fetch(self._q[query], arg)
            await aio_gone(self._q, rows, CANCELLED, utc_now(), conn)
            return len(rows)

        return await self._dependency_transaction(query, run)

    # -- cancelling running calls (see _cancels.py) ------------------------------------

    async def request_cancel(
        self, call_id: int | None, identifier: str | None, now: datetime, expires_at: datetime
    ) -> tuple[CancelRequest, int]:
        args = CancelArgs.request_cancel(call_id, identifier, now, expires_at)
        answer = await self._dependency_transaction(
            "request_cancel", partial(aio_request_cancel, self._q, self.channel, *args)
        )
        self._listeners.notify(CANCEL_REQUESTED)  # at once here; the NOTIFY goes on
        return answer

    # -- inspection -------------------------------------------------------------------

    async def pending(self, query: PendingQuery) -> list[StoredCall]:
        query = StoreArgs.pending(query)
        rows = await self._call(
            "fetch",
            "pending",
            query.name,
            query.identifier,
            query.due_after,
            query.due_before,
            query.limit,
            query.now,
        )
        calls = [call_from_row(row, utc, keyed=True) for row in rows]
        return [
            attrs.evolve(call, waiting_for=tuple(row[11])) if row[11] else call
            for call, row in zip(calls, rows, strict=True)
        ]

    async def pending_counts(self, due_by: datetime) -> dict[str, QueueLength]:
        due_by = StoreArgs.pending_counts(due_by)
        rows = await self._call("fetch", "pending_counts", due_by)
        return {row[0]: QueueLength(pending=row[1], due=row[2], waiting=row[3]) for row in rows}

    # -- claiming ---------------------------------------------------------------------

    async def claim(
        self, now: datetime, slots: Mapping[str, int], limit: int, lease: Lease | None = None
    ) -> Claim:
        now, slots, limit, lease = StoreArgs.claim(now, slots, limit, lease)
        # The statement's counts are integers: a larger request cannot be met anyway.
        limit = min(limit, _MAX_INT4)
        wanted = [(name, min(free, limit)) for name, free in slots.items() if free > 0]
        if limit <= 0 or not wanted:
            return Claim([], None)
        names = [name for name, _ in wanted]
        quotas = [free for _, free in wanted]
        leased = [] if lease is None else [name for name in names if name in lease.names]
        # Shielded: once the DELETE committed, its rows must reach the dispatcher even if
        # the caller is being cancelled. Bounded by the acquire and command timeouts.
        # Every value the statement returns converts to Python (the CHECKs of migration
        # 0003; see "claim" in queries.sql), so no row is deleted and then not handed
        # over.
        owner, expires = (None, None) if lease is None else (lease.owner, lease.expires_at)
        extra: tuple[Any, ...] = ()
        with trio.CancelScope(shield=True):
            if not leased:
                statement = "claim_delete"
            elif len(leased) == len(names):
                statement = "claim_lease"
            else:
                statement, extra = "claim", (sorted(leased),)
            args = (names, quotas, now, limit, owner, expires, *extra)
            if statement != "claim" and not self._cluster_limits_seen:
                # No cluster-wide limit seen yet: the plain statement, which takes
                # nothing if one is stored for these names (see _claim_plain).
                rows = await self._claim(statement + "_plain", *args)
                if any(row[0] is None and row[11] for row in rows):
                    _log.debug("cluster-wide limits are stored: claims look for them")
                    self._cluster_limits_seen = True
                    rows = await self._claim(statement, *args)
            else:
                rows = await self._claim(statement, *args)
        # Every claim statement ends with one row whose id is NULL: the next due time.
        calls = [
            attrs.evolve(call_from_row(row, utc), dependents=True)
            if row[10]
            else call_from_row(row, utc)
            for row in rows
            if row[0] is not None
        ]
        calls.sort(key=lambda c: (-c.priority, c.due_at, c.id))
        holding = frozenset(row[0] for row in rows if row[0] is not None and row[11])
        (next_due,) = [row[12] for row in rows if row[0] is None]
        next_due = None if next_due is None else utc(next_due)
        return Claim(calls, until_next(next_due, lease, (c.name for c in calls)), holding)

    async def put_back(self, calls: Sequence[StoredCall], owner: str | None) -> int:
        calls, owner = StoreArgs.put_back(calls, owner)
        if not calls:
            return 0
        # Concurrent hand-backs share one statement (see _grouped.py).
        count, dropped = await self._writes.put_back(calls, owner)
        if dropped:
            # Runs of a schedule cancelled while they ran: they will not run again.
            await self._dependency_transaction(
                "put_back", partial(aio_end_dropped, self._q, dropped, utc_now())
            )
        return count

    async def renew(self, owner: str, call_ids: Collection[int], expires_at: datetime) -> set[int]:
        owner, call_ids, expires_at = StoreArgs.renew(owner, call_ids, expires_at)
        if not call_ids:
            return set()
        rows = await self._call("fetch", "renew", expires_at, owner, sorted(call_ids))
        return {row[0] for row in rows}

    async def complete(self, owner: str, call_id: int) -> bool:
        owner, call_id = StoreArgs.complete(owner, call_id)
        # Calls finishing together share one DELETE (see _grouped.py). Not shielded:
        # the engine bounds the writes after a call (and shields them from shutdown).
        if await self._writes.complete(owner, call_id):
            return True
        # Not deleted: the lease was lost, or other calls wait for this one (its row is
        # left to a transaction that releases them too).
        done, ready = await self._dependency_transaction(
            "complete",
            partial(aio_complete_prerequisite, self._q, self.channel, owner, call_id),
        )
        if ready is not None:
            self._listeners.notify(utc(ready))
        return bool(done)

    async def release(
        self, owner: str, call_id: int, due_at: datetime, *, refund_attempt: bool = False
    ) -> bool:
        owner, call_id, due_at, refund_attempt = StoreArgs.release(
            owner, call_id, due_at, refund_attempt
        )
        return await self._writes.release(owner, call_id, due_at, refund_attempt)

    # -- dead letters -----------------------------------------------------------------

    async def dead_letter(
        self, call: StoredCall, error: str, failed_at: datetime, owner: str | None = None
    ) -> int | None:
        call, error, failed_at, owner = StoreArgs.dead_letter(call, error, failed_at, owner)
        if not call.dependents or owner is not None:
            dead_id = await self._writes.dead_letter(call, error, failed_at, owner)
            if dead_id is not None or owner is None:
                return dead_id
        # Other calls wait for it (or its lease was lost: then nothing is written).
        answer: int | None = await self._dependency_transaction(
            "dead_letter",
            partial(aio_dead_letter_prerequisite, self._q, call, error, failed_at, owner),
        )
        return answer

    async def dead_letter_due(
        self, name: str, due_by: datetime, error: str, failed_at: datetime
    ) -> int:
        name, due_by, error, failed_at = StoreArgs.dead_letter_due(name, due_by, error, failed_at)

        async def run(conn: Any) -> int:
            rows = await conn.fetch(self._q["dead_letter_due"], name, due_by, error, failed_at)
            await aio_gone(self._q, rows, error, failed_at, conn)
            return len(rows)

        return await self._dependency_transaction("dead_letter_due", run)

    async def dead_letters(
        self, *, name: str | None = None, limit: int | None = None
    ) -> list[DeadLetter]:
        name, limit = StoreArgs.dead_letters(name, limit)
        rows = await self._call("fetch", "dead_letters", name, limit)
        return [dead_letter_from_row(r, utc) for r in rows]

    async def requeue_dead_letter(
        self, dead_letter_id: int, due_at: datetime, after: Sequence[int] = ()
    ) -> int | None:
        dead_letter_id, due_at, after = StoreArgs.requeue_dead_letter(dead_letter_id, due_at, after)
        if after:
            waiting: int | None = await self._dependency_transaction(
                "requeue_dead_letter",
                partial(aio_requeue_waiting, self._q, self.channel, dead_letter_id, due_at, after),
            )
            return waiting
        new_id: int | None = await self._call(
            "fetchval",
            "requeue_dead_letter",
            dead_letter_id,
            due_at,
            self.channel,
            notify_payload(due_at),
        )
        if new_id is not None:
            self._listeners.notify(utc(due_at))
        return new_id

    async def prerequisite_ended(self, call_id: int, error: str | None, ended_at: datetime) -> int:
        call_id, error, ended_at = StoreArgs.prerequisite_ended(call_id, error, ended_at)
        count, ready = await self._dependency_transaction(
            "prerequisite_ended",
            partial(aio_prerequisite_ended, self._q, self.channel, call_id, error, ended_at),
        )
        if ready is not None:
            self._listeners.notify(utc(ready))
        return int(count)

    async def end_abandoned_prerequisites(self, now: datetime) -> int:
        now = StoreArgs.end_abandoned_prerequisites(now)
        # A read first: every scheduler looks every few seconds, and there is rarely
        # anything to end.
        if not await self._call("fetchval", "any_started_expired", now):
            return 0
        ended: int = await self._dependency_transaction(
            "end_abandoned_prerequisites", partial(aio_end_abandoned, self._q, now)
        )
        return ended

    async def purge_dead_letters(self, ids: Collection[int] | None = None) -> int:
        ids = StoreArgs.purge_dead_letters(ids)
        if ids is None:
            count: int = await self._call("fetchval", "purge_all_dead_letters")
        else:
            count = await self._call("fetchval", "purge_dead_letters", sorted(set(ids)))
        return count

    # -- recurring schedules ----------------------------------------------------------

    async def _dependency_transaction(self, what: str, fn: Callable[[Any], Awaitable[T]]) -> T:
        """As :meth:`_transaction`, run again, whole, after a short random pause, if the
        server rolled it back as a deadlock's victim or for a serialization failure
        (see ``_dependencies.py`` for why a cycle can still form)."""
        for attempt in range(1, DEADLOCK_ATTEMPTS + 1):
            try:
                return await self._transaction(what, fn)
            except StoreError as exc:
                if attempt == DEADLOCK_ATTEMPTS or not isinstance(exc.__cause__, TRY_AGAIN):
                    raise
            await trio.sleep(random.uniform(0, 0.01 * attempt))
        raise AssertionError("unreachable")

    async def _transaction(self, what: str, fn: Callable[[Any], Awaitable[T]]) -> T:
        """Run ``fn(connection)`` (asyncio side) in one transaction on a connection."""
        self._live_pool()
        return await bridge(self._loop, what, self._connections.transaction, fn)

    async def put_recurring(self, schedule: RecurringInfo, replace: bool) -> RecurringInfo:
        schedule, replace = StoreArgs.put_recurring(schedule, replace)
        stored = await self._transaction(
            "put_recurring", partial(aio_put_recurring, self._q, schedule, replace)
        )
        if stored.next_tick is not None:
            # Tickers in other processes hear of it like of a scheduled call.
            await self._call("execute", "notify", self.channel, notify_payload(stored.next_tick))
            self._listeners.notify(stored.next_tick)
        return stored

    async def cancel_recurring(self, key: str) -> bool:
        key = StoreArgs.cancel_recurring(key)
        return await self._dependency_transaction(
            "cancel_recurring", partial(aio_cancel_recurring, self._q, key, utc_now())
        )

    async def recurring_schedules(self, key: str | None = None) -> list[RecurringInfo]:
        key = StoreArgs.recurring_schedules(key)
        rows = await self._call("fetch", "recurring_list", key)
        return [recurring_from_row(row, utc) for row in rows]

    async def fire_recurring(self, now: datetime, limit: int) -> RecurringFire:
        now, limit = StoreArgs.fire_recurring(now, limit)
        fired = await self._transaction(
            "fire_recurring", partial(aio_fire_recurring, self._q, self.channel, now, limit)
        )
        if fired.stored:
            self._listeners.notify(min(c.due_at for c in fired.stored))
        runs = len(fired.stored)
        if fired.full and fired.still_due:
            return RecurringFire(runs, now)
        next_tick = None if fired.next_tick is None else utc(fired.next_tick)
        return RecurringFire(runs, next_tick, contended=fired.still_due)

    # -- wake-ups --------------------------------------------------------------------

    def add_listener(self, listener: Listener) -> Callable[[], None]:
        listener = StoreArgs.add_listener(listener)
        return self._listeners.add(listener)

    # -- sessions and lifetime --------------------------------------------------------

    def open_session(self, call: StoredCall) -> SessionScope:
        """``async with store.open_session(call) as session``: closed on exit."""
        if type(call) is not StoredCall:  # (the check, minus a call on the hot path)
            call = StoreArgs.open_session(call)
        return self._sessions.scope(call.id)

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
                await bridge(self._loop, "pool close", self._connections.close)
            except StoreError as exc:
                _log.warning("closing the pool failed: %s", exc)
        if scope.cancelled_caught:
            _log.warning("closing the pool took too long; terminating its connections")
            pool.terminate()

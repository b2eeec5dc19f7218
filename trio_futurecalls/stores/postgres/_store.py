"""The store itself: :class:`PostgresStore`, the Store protocol over one PostgreSQL schema.

Each method is one statement from ``stores/sql/postgres/queries.sql`` on the store's
kept pool connection (:class:`._pool.Connections`), one bridge crossing. The listener
task, sessions, the pool and migrations live in modules of their own;
:func:`open_postgres_store` wires them together.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, final

import asyncpg
import trio

from ..._errors import InvalidArgumentError, InvalidPayloadError, StoreClosedError, StoreError
from ..._model import Claim, DeadLetter, Lease, NewCall, StoredCall
from ..._payload import MAX_PAYLOAD_BYTES
from ..._stats import QueueLength
from ..._store import Listener, PendingQuery
from ..._validate import MAX_IDENTIFIER_LENGTH, MAX_NAME_LENGTH, StoreArgs
from .._batch import GroupCommit
from .._claims import until_next
from .._listeners import Listeners
from .._rows import call_from_row, dead_letter_from_row
from ._errors import bridge
from ._listener import NotifyListener, notify_payload
from ._pool import Connections, recommended_pool_size
from ._schema import channel_of, schema_queries
from ._session import Sessions, SessionScope

_log = logging.getLogger("trio_futurecalls.store.postgres")


def _utc(value: datetime) -> datetime:
    # asyncpg returns timestamptz values in UTC already: skip the conversion then.
    return value if value.tzinfo is UTC else value.astimezone(UTC)


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
        self.channel = channel_of(schema)
        self.recheck_interval = recheck_interval
        self.max_pool_size = max_pool_size
        self._pool: asyncpg.Pool | None = pool
        self._connections = Connections(pool, acquire_timeout)
        self._completions: GroupCommit[tuple[str, int], bool] = GroupCommit(self._complete_batch)
        self._listeners = Listeners()
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

    @property
    def listener_application_name(self) -> str:
        """``application_name`` of the LISTEN connection (visible in pg_stat_activity)."""
        return self._listener.application_name

    @property
    def listener_connects(self) -> int:
        """How many times the listener (re)connected; 1 after a clean start."""
        return self._listener.connects

    # -- plumbing -----------------------------------------------------------------------

    def _live_pool(self) -> asyncpg.Pool:
        if self._pool is None:
            raise StoreClosedError("the PostgreSQL store is closed")
        return self._pool

    async def _call(self, method: str, query: str, *args: Any) -> Any:
        self._live_pool()
        return await bridge(self._loop, query, self._connections.run, method, self._q[query], args)

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
        calls = StoreArgs.schedule(calls)
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
            notify_payload(earliest),
            [c.attempts for c in calls],
        )
        # Wake this process's listeners at once too; the NOTIFY reaches other
        # processes (and this one again: listeners tolerate duplicates).
        self._listeners.notify(earliest)
        return [row[0] for row in rows]

    async def cancel(self, call_id: int) -> bool:
        call_id = StoreArgs.cancel(call_id)
        count: int = await self._call("fetchval", "cancel", call_id)
        return count > 0

    async def cancel_identifier(self, identifier: str) -> int:
        identifier = StoreArgs.cancel_identifier(identifier)
        count: int = await self._call("fetchval", "cancel_identifier", identifier)
        return count

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
        )
        return [call_from_row(row, _utc) for row in rows]

    async def pending_counts(self, due_by: datetime) -> dict[str, QueueLength]:
        due_by = StoreArgs.pending_counts(due_by)
        rows = await self._call("fetch", "pending_counts", due_by)
        return {row[0]: QueueLength(pending=row[1], due=row[2]) for row in rows}

    # -- claiming ---------------------------------------------------------------------

    async def claim(
        self, now: datetime, slots: Mapping[str, int], limit: int, lease: Lease | None = None
    ) -> Claim:
        now, slots, limit, lease = StoreArgs.claim(now, slots, limit, lease)
        wanted = [(name, min(free, limit)) for name, free in slots.items() if free > 0]
        if limit <= 0 or not wanted:
            return Claim([], None)
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
        # Every claim statement ends with one row whose id is NULL: the next due time.
        calls = [call_from_row(row, _utc) for row in rows if row[0] is not None]
        calls.sort(key=lambda c: (c.due_at, c.id))
        (next_due,) = [row[7] for row in rows if row[0] is None]
        next_due = None if next_due is None else _utc(next_due)
        return Claim(calls, until_next(next_due, lease, (c.name for c in calls)))

    async def put_back(self, calls: Sequence[StoredCall], owner: str | None) -> int:
        calls, owner = StoreArgs.put_back(calls, owner)
        if not calls:
            return 0
        earliest = _utc(min(c.due_at for c in calls))
        handed: int = await self._call(
            "fetchval",
            "put_back",
            [c.id for c in calls],
            [c.name for c in calls],
            [c.payload for c in calls],
            [c.due_at for c in calls],
            [c.identifier for c in calls],
            [c.scheduled_at for c in calls],
            [c.attempts for c in calls],
            owner,
            self.channel,
            notify_payload(earliest),
        )
        if handed:
            self._listeners.notify(earliest)
        return handed

    async def renew(self, owner: str, call_ids: Collection[int], expires_at: datetime) -> set[int]:
        owner, call_ids, expires_at = StoreArgs.renew(owner, call_ids, expires_at)
        if not call_ids:
            return set()
        rows = await self._call("fetch", "renew", expires_at, owner, sorted(call_ids))
        return {row[0] for row in rows}

    async def complete(self, owner: str, call_id: int) -> bool:
        owner, call_id = StoreArgs.complete(owner, call_id)
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
        owner, call_id, due_at, refund_attempt = StoreArgs.release(
            owner, call_id, due_at, refund_attempt
        )
        with trio.CancelScope(shield=True):  # bounded by the store's timeouts
            count: int = await self._call(
                "fetchval",
                "release",
                due_at,
                int(refund_attempt),
                call_id,
                owner,
                self.channel,
                notify_payload(due_at),
            )
        if count:
            self._listeners.notify(_utc(due_at))
        return count > 0

    # -- dead letters -----------------------------------------------------------------

    async def dead_letter(
        self, call: StoredCall, error: str, failed_at: datetime, owner: str | None = None
    ) -> int | None:
        call, error, failed_at, owner = StoreArgs.dead_letter(call, error, failed_at, owner)
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

    async def dead_letter_due(
        self, name: str, due_by: datetime, error: str, failed_at: datetime
    ) -> int:
        name, due_by, error, failed_at = StoreArgs.dead_letter_due(name, due_by, error, failed_at)
        moved: int = await self._call(
            "fetchval", "dead_letter_due", name, due_by, error.replace("\x00", "\\x00"), failed_at
        )
        return moved

    async def dead_letters(
        self, *, name: str | None = None, limit: int | None = None
    ) -> list[DeadLetter]:
        name, limit = StoreArgs.dead_letters(name, limit)
        rows = await self._call("fetch", "dead_letters", name, limit)
        return [dead_letter_from_row(r, _utc) for r in rows]

    async def requeue_dead_letter(self, dead_letter_id: int, due_at: datetime) -> int | None:
        dead_letter_id, due_at = StoreArgs.requeue_dead_letter(dead_letter_id, due_at)
        new_id: int | None = await self._call(
            "fetchval",
            "requeue_dead_letter",
            dead_letter_id,
            due_at,
            self.channel,
            notify_payload(due_at),
        )
        if new_id is not None:
            self._listeners.notify(_utc(due_at))
        return new_id

    async def purge_dead_letters(self, ids: Collection[int] | None = None) -> int:
        ids = StoreArgs.purge_dead_letters(ids)
        if ids is None:
            count: int = await self._call("fetchval", "purge_all_dead_letters")
        else:
            count = await self._call("fetchval", "purge_dead_letters", sorted(set(ids)))
        return count

    # -- wake-ups ---------------------------------------------------------------------

    def add_listener(self, listener: Listener) -> Callable[[], None]:
        listener = StoreArgs.add_listener(listener)
        return self._listeners.add(listener)

    # -- sessions and lifetime --------------------------------------------------------

    def open_session(self, call: StoredCall) -> SessionScope:
        """``async with store.open_session(call) as session``: closed on exit."""
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

"""The store protocol: the only thing the engine knows about persistence.

The engine (scheduler, dispatcher, limits) talks to a store through this protocol and
never imports a database driver. Each store is an adapter: :class:`MemoryStore`,
``SQLiteStore`` and ``PostgresStore``. ``tests/stores/test_conformance.py`` is the suite every
store must pass.

The protocol is shaped so that a SQL store can implement each method with one
statement:

* ``claim`` is ``DELETE ... WHERE id IN (SELECT ... FOR UPDATE SKIP LOCKED) RETURNING``:
  rows are removed in the same step that hands them to the dispatcher, which starts
  them at once (at-most-once; a call that has not started is never lost). For names
  under a :class:`Lease` it is an ``UPDATE ... RETURNING`` instead: the row stays,
  owned by the worker until the lease expires (at-least-once), and ``complete``,
  ``release``, ``renew`` and ``dead_letter`` act on it only while that worker owns it.
* A leased row's ``due_at`` is its lease expiry: an expired lease is simply a due row,
  so ``claim`` needs no separate recovery step. ``pending`` and ``pending_counts``
  leave out rows whose lease holds (their calls are running), and count rows whose
  lease expired as pending again.
* ``claim`` also answers when the next call is due, so an idle dispatcher costs one
  round trip per wake-up.
* Unique keys: at most one *pending* row per ``(name, unique_key)``, enforced by the
  database (a partial unique index on ``(name, unique_key) WHERE unique_key IS NOT
  NULL``), never by a read-then-write. A claim frees the key: a deleted row takes it
  along, and a leased row's ``unique_key`` is set to NULL in the same statement, so a
  running call, a retry (``release``, ``put_back``) and a call handed back at shutdown
  are pending again *without* their key, and a new call may take it. Claims return
  calls with ``unique_key=None``; ``put_back`` never stores a key; ``pending`` shows the
  keys of pending rows.
* ``add_listener`` lets the store push wake-ups (in-process schedules, or PostgreSQL
  ``LISTEN/NOTIFY`` from other processes) so the dispatcher never polls;
  ``recheck_interval`` is the store's fallback for changes it cannot observe.

All times are aware UTC datetimes. Methods raise :class:`StoreUnavailableError` when
the database cannot be reached and :class:`StoreError` for other failures.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import attrs

from ._model import (
    Claim,
    DeadLetter,
    Lease,
    NewCall,
    RecurringFire,
    RecurringInfo,
    StoredCall,
    WorkerInfo,
)
from ._stats import QueueLength

if TYPE_CHECKING:
    from ._cancel_model import CancelRequest
    from ._cluster_limits import ClusterLimit

#: A wake-up listener: called (synchronously, in the Trio thread) with the earliest
#: due time among calls that were just scheduled.
Listener = Callable[[datetime], None]


@attrs.frozen(kw_only=True)
class PendingQuery:
    """Filters for :meth:`Store.pending`; every given filter must match."""

    name: str | None = None
    identifier: str | None = None
    due_after: datetime | None = None  # inclusive
    due_before: datetime | None = None  # exclusive
    limit: int | None = None  # at most this many rows, earliest due first
    #: With a time: rows whose lease expired by then count as pending too (their
    #: worker died or lost them; any worker may claim them). Without: only rows no
    #: worker leases.
    now: datetime | None = None


@runtime_checkable
class Store(Protocol):
    """What a store must do. Every method is safe to call from concurrent tasks."""

    #: Seconds between fallback re-checks the dispatcher should make even without a
    #: wake-up (changes this store cannot observe, e.g. another process writing to the
    #: same SQLite file, or a lost NOTIFY); None when every change is observed.
    recheck_interval: float | None

    async def schedule(self, calls: Sequence[NewCall]) -> list[int]:
        """Store ``calls`` atomically; return their ids, in order. Notify listeners.

        A call with a ``unique_key`` whose name and key a pending row holds (or an
        earlier call of the same batch) conflicts with it: ``on_conflict="ignore"``
        stores nothing and answers the holder's id; ``"replace"`` gives the holder the
        call's payload, due time and identifier and answers its id; ``"error"`` raises
        :class:`DuplicateCallError` and nothing of the batch is stored.

        Dependencies: a call with ``after`` (ids) or ``after_batch`` (positions of
        earlier calls of the batch) waits until each of those calls has succeeded: it
        is pending but not due (``claim`` does not take it, ``pending`` lists what it
        waits for in ``waiting_for``, ``pending_counts`` counts it as waiting). An id in
        ``after`` must be a call the store can see: pending, leased, or an at-most-once
        call with dependents that is running (see :meth:`prerequisite_ended`);
        otherwise :class:`PrerequisiteError` is raised and nothing is stored. A call
        with dependents is marked so (``StoredCall.dependents`` when claimed). When a
        prerequisite succeeds (``complete``, ``prerequisite_ended``) its dependents stop
        waiting for it and listeners are told of those now due; when it ends otherwise
        for good (``dead_letter``, ``dead_letter_due``, ``cancel``,
        ``cancel_identifier``, ``cancel_recurring``, ``prerequisite_ended`` with an
        error) its dependents, and theirs, become dead letters with the reason
        (``stores/_dependencies.py``), in the same transaction.
        """
        ...

    async def cancel(self, call_id: int) -> bool:
        """Delete one pending call; True if it was pending."""
        ...

    async def cancel_identifier(self, identifier: str) -> int:
        """Delete every pending call with ``identifier``; return how many."""
        ...

    async def pending(self, query: PendingQuery) -> list[StoredCall]:
        """Pending calls matching ``query``, earliest due first (ties: id). No claim."""
        ...

    async def pending_counts(self, due_by: datetime) -> dict[str, QueueLength]:
        """Per name, pending calls and how many of them are due (``due_at <= due_by``).

        ``due_by`` is also "now" for leases: a row whose lease expired by then is
        pending (and due).

        One query. Used to find unknown names and to measure queue lengths; names
        with no pending call are left out.
        """
        ...

    async def claim(
        self, now: datetime, slots: Mapping[str, int], limit: int, lease: Lease | None = None
    ) -> Claim:
        """Atomically take due calls (``due_at <= now``); say when the next one is due.

        At most ``slots[name]`` calls of each name and ``limit`` in total, the best
        first within and across names: highest ``priority``, then earliest due, then
        lowest id; returned in that order. Rows not due yet are not to be read, whatever
        their priority (a store walks each name's priorities in use, highest first).
        Names not in ``slots`` are not touched, nor are rows waiting for
        prerequisites, nor rows of paused names (:meth:`pause`; nor counted in
        ``next_due``). Each taken row's ``attempts`` goes up by one. Rows of names in
        ``lease.names`` are leased to ``lease.owner`` until ``lease.expires_at`` (their
        ``due_at`` becomes the expiry); all other taken rows are deleted. The returned
        calls carry the due time they had before the claim and the new attempt count.
        A call returned here is owned by the caller, which starts it at once (or hands
        it back with :meth:`put_back`).

        Cluster-wide limits (:meth:`set_cluster_limit`): a call of a name under limits
        is taken only with a free token of each: of its class's concurrency limit and
        of the one on all classes (a token no call holds, or whose holder's worker is
        dead; taken only by a live worker, ``lease.owner``, and held for the call until
        :meth:`free_tokens`), and of its class's rate limit (a token last used a full
        window ago; used until ``now`` + the window). Tokens are taken in the same
        transaction as the calls, and two claims never take the same token. The
        calls holding concurrency tokens are :attr:`Claim.holding`. Paused names are
        not touched. A claim must not be abandoned half-way when the
        caller is cancelled: once rows are taken, they must reach the caller (shield
        the statement, or run it in a thread that is waited for).

        In the same round trip, :attr:`Claim.next_due` is the earliest due time among
        the rows of the names that still have a free slot (``slots[name]`` minus what
        was taken, while ``limit`` is not used up), leaving out the rows this claim
        took, or the expiry of the lease this claim took if it leased any row (if
        the lease is lost, the row is due again then); None if there is none. A
        leased row counts at its lease expiry. When a cluster-wide limit held calls
        back, also the time it may free a token unannounced: the end of a rate
        window, or a holder's worker expiry (a dead worker frees its tokens then).
        """
        ...

    async def put_back(self, calls: Sequence[StoredCall], owner: str | None) -> int:
        """Make each of ``calls`` pending again exactly as given (due at its
        ``due_at``, with its ``attempts``), keeping its id.

        For claimed calls that did not start (handed back at shutdown, with the
        claim's attempt refunded) and for at-most-once retries. A row ``owner`` leases
        has its lease ended; a row that is gone (deleted by its claim) is stored again
        under its old id. A row that exists otherwise (pending already, or another
        worker's now) is left alone, so putting back twice is harmless. A call put
        back is no longer running: the store's record of a running at-most-once
        prerequisite ends (its dependents keep waiting for it). Notifies listeners.
        Returns how many were put back.
        """
        ...

    async def renew(self, owner: str, call_ids: Collection[int], expires_at: datetime) -> set[int]:
        """Extend ``owner``'s leases on ``call_ids``; return the ids still owned.

        Also extends ``owner``'s records of started at-most-once prerequisites among
        ``call_ids`` (see :meth:`end_abandoned_prerequisites`); their ids count as
        owned while the record is there.
        """
        ...

    async def complete(self, owner: str, call_id: int) -> bool:
        """Delete a leased row after its call succeeded; False if the lease was lost."""
        ...

    async def release(
        self, owner: str, call_id: int, due_at: datetime, *, refund_attempt: bool = False
    ) -> bool:
        """End ``owner``'s lease: the row is pending again, due at ``due_at``.

        ``refund_attempt`` takes back the attempt counted by the claim (the call was
        interrupted by shutdown, not failed). Notifies listeners. False if the lease
        was lost.
        """
        ...

    async def dead_letter(
        self, call: StoredCall, error: str, failed_at: datetime, owner: str | None = None
    ) -> int | None:
        """Keep ``call`` as a dead letter with ``error``; return the dead letter's id.

        With ``owner``, the leased row is deleted in the same transaction, and only if
        that owner still holds it: otherwise nothing is written and None is returned
        (another worker has the call). Without, the call was already deleted by its
        claim.
        """
        ...

    async def dead_letter_due(
        self, name: str, due_by: datetime, error: str, failed_at: datetime
    ) -> int:
        """Move every row named ``name`` that is due by ``due_by`` to dead letters.

        One statement (or one transaction). Rows leased by a live worker are due only
        after their lease expires, so they are not touched. Returns how many moved.
        """
        ...

    async def dead_letters(
        self, *, name: str | None = None, limit: int | None = None
    ) -> list[DeadLetter]:
        """Dead letters, oldest failure first."""
        ...

    async def requeue_dead_letter(
        self, dead_letter_id: int, due_at: datetime, after: Sequence[int] = ()
    ) -> int | None:
        """Move a dead letter back to pending, due at ``due_at``; new call id or None.

        With ``after``, the new call waits for those calls as with ``schedule`` (a
        :class:`PrerequisiteError` leaves the dead letter where it is).
        """
        ...

    async def end_abandoned_prerequisites(self, now: datetime) -> int:
        """End the records of started at-most-once prerequisites that expired by ``now``.

        An at-most-once claim with a :class:`Lease` (whatever its names) records a
        claimed call with dependents under the lease's owner, until its expiry; the
        owner renews it (:meth:`renew`) while the call runs. A record left to expire
        means its worker stopped (killed, or cut off from the database for longer
        than a lease): the call's end will never be told, and it is not run again, so
        the calls waiting for it become dead letters (transitively) with the reason
        :data:`~trio_futurecalls.stores._dependencies.ABANDONED`. A record a claim
        without a lease made never expires. Returns how many dead letters.
        """
        ...

    async def prerequisite_ended(self, call_id: int, error: str | None, ended_at: datetime) -> int:
        """An at-most-once call claimed with ``dependents`` ended: it succeeded
        (``error`` None) or will not run again (``error`` says why).

        Its claim deleted its row but recorded it as running, so that calls could
        still be made to wait for it; this ends that record. On success, its dependents
        stop waiting for it (listeners are told of those now due); otherwise they
        become dead letters (transitively) as with ``dead_letter``. A failure that
        ends in ``dead_letter`` or a retry stored with ``put_back`` needs no call here
        (both end the record). Only the first call for a record acts; returns how many
        dependents it made due or dead letters.
        """
        ...

    async def purge_dead_letters(self, ids: Collection[int] | None = None) -> int:
        """Delete the given dead letters (all when ``ids`` is None); return how many."""
        ...

    async def put_recurring(self, schedule: RecurringInfo, replace: bool) -> RecurringInfo:
        """Register a recurring schedule; return it as stored now.

        A schedule with the same key already stored is updated from ``schedule`` when
        ``replace`` (see :func:`~trio_futurecalls.stores._recurring.merge_registration`:
        its counters and, unless its timing changed, its next tick are kept, so that
        every worker may register the same schedules at start-up), else left alone.
        One transaction; concurrent registrations of one key store one schedule.
        """
        ...

    async def cancel_recurring(self, key: str) -> bool:
        """Delete a schedule and its runs that have not started; True if it existed."""
        ...

    async def recurring_schedules(self, key: str | None = None) -> list[RecurringInfo]:
        """The stored schedules (just ``key``'s, if given), ordered by key."""
        ...

    async def fire_recurring(self, now: datetime, limit: int) -> RecurringFire:
        """Create the runs of schedules whose next tick is due by ``now``.

        For at most ``limit`` due schedules (earliest next tick first), in one
        transaction each fire stores the runs :func:`~trio_futurecalls._recurrence.plan_fire`
        decides (ordinary calls, carrying the schedule's key and their tick) *and* the
        schedule's next tick, so that a tick is handed out exactly once however many
        workers fire at the same moment (a schedule another worker is firing is
        skipped, not waited for). Notifies listeners of the new runs. Answers the
        earliest next tick of all schedules afterwards (``now`` if more are due).
        """
        ...

    async def set_cluster_limit(self, limit: ClusterLimit) -> ClusterLimit | None:
        """Store ``limit`` (replacing the one of its kind and name); return the one it
        replaced, if any.

        A limit has ``limit.tokens`` tokens; ``claim`` takes one of each limit on a
        call (see there). Raising a limit frees tokens at once (listeners are
        notified); lowering one stops no running call: tokens beyond it are not
        handed out again once freed.
        """
        ...

    async def remove_cluster_limit(self, kind: str, name: str) -> bool:
        """Drop a limit and its tokens (notifies listeners); True if it existed."""
        ...

    async def cluster_limits(self) -> list[ClusterLimit]:
        """The stored limits, by name then kind. A row that is not a limit is left out."""
        ...

    async def free_tokens(self, owner: str, call_ids: Collection[int]) -> int:
        """The concurrency tokens worker ``owner`` holds for ``call_ids`` are free
        again (their calls ended, or never started); listeners are notified (on
        PostgreSQL: every worker), so that a call the limit held back starts at once.
        Returns how many were freed."""

    async def pause(self, name: str, now: datetime) -> bool:
        """Pause the class ``name`` in the store, from ``now``; True if it was not paused.

        From then on no ``claim`` takes a row of ``name``, nor counts one in
        ``next_due``; its rows stay pending. (A claim running at the same moment may
        still take some: see the README, "Cancel and pause".)
        """
        ...

    async def resume(self, name: str) -> bool:
        """End the pause of ``name``; True if it was paused. Notifies listeners (with
        the epoch: every dispatcher claims again at once)."""
        ...

    async def paused(self) -> dict[str, datetime]:
        """The paused names, each with the time it was paused, ordered by name."""
        ...

    async def register_worker(self, worker: WorkerInfo) -> None:
        """Insert ``worker``'s row, or replace the row with its id (see
        :class:`WorkerInfo`; ``_presence.py`` registers each scheduler that executes
        calls)."""
        ...

    async def heartbeat(
        self, worker_id: str, now: datetime, expires_at: datetime, running: int
    ) -> bool:
        """Renew ``worker_id``'s row: heartbeat at ``now``, expiring at
        ``expires_at``, with ``running`` calls.

        False when the row is gone or had expired by ``now``: it is not revived (the
        caller registers again). The same statement (or transaction) deletes every
        row that expired by ``now``.
        """
        ...

    async def deregister_worker(self, worker_id: str) -> None:
        """Delete ``worker_id``'s row and free its cluster concurrency tokens (their
        ``call_id`` and ``owner`` become NULL), in one transaction; listeners are
        notified when a token was freed (a slot may be free now)."""
        ...

    async def workers(self, now: datetime) -> list[WorkerInfo]:
        """The live workers (``expires_at > now``), by ``started_at``, then ``id``.

        A row that is not a valid worker (another program wrote it) is left out with a
        warning in the log, never an error.
        """
        ...

    async def request_cancel(
        self, call_id: int | None, identifier: str | None, now: datetime, expires_at: datetime
    ) -> tuple[CancelRequest, int]:
        """Ask every worker to stop the running call ``call_id``, or every running call
        with ``identifier`` (exactly one is given); return the stored request and how
        many leased rows it deleted.

        In one transaction: the matching leased rows (at-least-once calls running, or
        whose worker died) are deleted, so that they never run again, and the calls
        waiting for them become dead letters (reason ``CANCELLED``); and the request
        is stored until ``expires_at``, for the calls no row shows (at-most-once calls
        running: their claim deleted their row). Pending rows are not touched (that
        is :meth:`cancel`). Listeners are told with
        :data:`~trio_futurecalls.stores._listeners.CANCEL_REQUESTED` (PostgreSQL: a
        NOTIFY sent by the same statement; SQLite: other processes notice the commit).
        """
        ...

    async def cancel_requests(self, now: datetime) -> list[CancelRequest]:
        """The requests not expired by ``now``, by id. The same transaction deletes
        the expired ones and their acks. A row that is not a valid request (another
        program wrote it) is left out with a warning."""
        ...

    async def ack_cancel(self, request_id: int, worker_id: str, found: int) -> None:
        """Worker ``worker_id`` handled request ``request_id`` and stopped ``found``
        running calls for it (a second ack of the same worker replaces the first). An
        ack of a request that is gone is dropped."""
        ...

    async def cancel_acks(self, request_id: int) -> dict[str, int]:
        """The acks of ``request_id``: worker id -> running calls it found."""
        ...

    def add_listener(self, listener: Listener) -> Callable[[], None]:
        """Register a wake-up listener; return a function that removes it."""
        ...

    def open_session(self, call: StoredCall) -> AbstractAsyncContextManager[Any]:
        """A session for one running call: its own database handle, closed on exit."""
        ...


@runtime_checkable
class PoolSizeCheck(Protocol):
    """An optional capability: a store with a connection pool checks its size.

    The scheduler calls it once at start (when it executes calls) so that a pool too
    small for ``max_concurrent`` running calls, each with its own session, is reported
    before calls queue for connections.
    """

    def check_pool_size(self, max_concurrent: int | None) -> bool:
        """Log a warning and return False when the pool is too small for the limit."""
        ...


@runtime_checkable
class ListensOnDemand(Protocol):
    """An optional capability: a store that watches for other processes' changes only
    while it has wake-up listeners (PostgreSQL's LISTEN connection, SQLite's
    ``data_version`` watcher), so that a store that only schedules costs nothing.

    Its watcher starts when :meth:`Store.add_listener` adds the first listener and
    stops when the last is removed. A scheduler that runs calls waits with
    :meth:`wait_listening` once it has added its listener, so that no change made
    after it started goes unheard.
    """

    async def wait_listening(self) -> bool:
        """Return True once the watcher hears changes (at once if it does); False if
        it could not start within the store's own bound (it keeps trying, and the
        store's ``recheck_interval`` covers the gap), or if no listener wants it."""
        ...

"""The SQLite store: every protocol operation as statements in a worker thread.

``sqlite3`` blocks, so every operation runs in a worker thread
(``trio.to_thread.run_sync``) and never on the event loop. The store's own connection
is used by one thread at a time (a ``CapacityLimiter(1)``); writes run in one
``BEGIN IMMEDIATE`` transaction each, which keeps claims atomic across processes.
What the claim, inserts (with unique keys), dependencies between calls and recurring
schedules run on the connection is in ``_claim.py``, ``_inserts.py``,
``_dependencies.py`` and ``_recurring.py``.

Rows are read defensively (``_rows.py``): the file is shared with other programs, and a
row that does not decode is a :class:`StoreError` when listed, and a dead letter (with
the reason, in the same transaction) when a claim meets it, never a crash or a lost
call.
"""

from __future__ import annotations

import json
import logging
import sqlite3
from collections.abc import Callable, Collection, Mapping, Sequence
from datetime import UTC, datetime
from functools import partial
from typing import Any, TypeVar, final

import attrs
import trio

from ..._cancel_model import CancelArgs, CancelRequest
from ..._errors import StoreClosedError, StoreError
from ..._model import (
    Claim,
    DeadLetter,
    Lease,
    NewCall,
    RecurringFire,
    RecurringInfo,
    StoredCall,
)
from ..._stats import QueueLength
from ..._store import Listener, PendingQuery
from ..._store_args import StoreArgs
from .._batch import Failed, GroupCommit
from .._claims import until_next
from .._dependencies import CANCELLED
from .._listeners import CANCEL_REQUESTED, WAKE_NOW, Listeners
from .._on_demand import OnDemand
from .._sql import queries
from . import _cancels as cancels
from . import _dependencies as dependencies
from . import _recurring as recurring
from ._claim import claim
from ._connection import OWN_ERRORS, to_micros, translate
from ._coordination import SQLiteCoordination
from ._inserts import insert_calls
from ._rows import dead_letter, pending_call, read_text, show
from ._rows import recurring as recurring_row
from ._session import SessionScope, SQLiteSession
from ._watcher import DataVersionWatcher

_log = logging.getLogger("trio_futurecalls.store.sqlite")

T = TypeVar("T")
#: One grouped write: runs on the connection inside a transaction, returns its answer.
_Op = Callable[[sqlite3.Connection], object]


def _each(conn: sqlite3.Connection, ops: Sequence[_Op]) -> list[object]:
    """Run ``ops`` in the current transaction; one that fails on its own fails alone.

    All at once first; only if one of them fails are they run again, each under its
    own savepoint, so that the others still commit and the failure goes to its caller
    alone (as :class:`Failed`).
    """
    conn.execute("SAVEPOINT futurecalls_batch")
    try:
        results = [op(conn) for op in ops]
    except OWN_ERRORS:
        conn.execute("ROLLBACK TO futurecalls_batch")
        results = []
        for op in ops:
            conn.execute("SAVEPOINT futurecalls_op")
            try:
                results.append(op(conn))
            except OWN_ERRORS as exc:
                conn.execute("ROLLBACK TO futurecalls_op")
                results.append(Failed(_own_error(exc)))
            conn.execute("RELEASE futurecalls_op")
    conn.execute("RELEASE futurecalls_batch")
    return results


def _own_error(exc: Exception) -> StoreError:
    if isinstance(exc, sqlite3.Error):
        return translate(exc)
    return StoreError(f"SQLite error: {type(exc).__name__}: {exc}")


@final
class SQLiteStore(SQLiteCoordination):
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
        #: Cancel requests of other processes arrive as data_version wake-ups (within
        #: ``recheck_interval``): cancel watchers read the requests at every wake-up,
        #: and a canceller waits up to three intervals for their acks (_cancels.py).
        self.cancel_requests_on_any_wake = True
        self.cancel_ack_wait = 3 * recheck_interval if recheck_interval else 1.0
        self._conn: sqlite3.Connection | None = conn
        # Text that is not UTF-8 (another program wrote it) reaches the row checks
        # instead of failing the whole query.
        conn.text_factory = read_text
        self._synchronous = synchronous
        self._busy_timeout = busy_timeout
        self._limiter = trio.CapacityLimiter(1)
        # Other processes' changes are watched only while someone listens (a store
        # that only schedules reads no data_version): see _on_demand.py.
        self._watch: OnDemand | None = None
        self._watcher: DataVersionWatcher | None = None
        if recheck_interval is not None:
            self._watcher = DataVersionWatcher(path, self._run, self._wake_now, recheck_interval)
            self._watch = OnDemand(self._watcher.run, "futurecalls-watch")
        self._listeners = Listeners(self._watch)
        self._q = queries("sqlite")
        # The writes after calls (complete, release, put_back, dead_letter) go through
        # one group: those submitted while a transaction runs share the next one.
        self._after_calls: GroupCommit[_Op, object] = GroupCommit(self._write_batch)

    async def _run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        conn = self._conn
        if conn is None:
            raise StoreClosedError("the SQLite store is closed")
        left = trio.current_effective_deadline() - trio.current_time()
        if left < self._busy_timeout:
            # The caller's deadline comes before SQLite would give up waiting for
            # another process's lock: wait only until then (the thread cannot be
            # abandoned, so this is what keeps a bounded write, e.g. the engine's
            # CLEANUP_TIMEOUT, bounded).
            fn = _waiting_at_most(fn, max(left, 0.0), self._busy_timeout)
        try:
            # Not abandoned on cancel: a claim that committed is always handed back.
            return await trio.to_thread.run_sync(fn, conn, limiter=self._limiter)
        except sqlite3.Error as exc:
            raise translate(exc) from exc

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

    async def _read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``fn``'s queries in one read transaction: they see one snapshot."""

        def work(conn: sqlite3.Connection) -> T:
            conn.execute("BEGIN")
            try:
                return fn(conn)
            finally:
                conn.execute("COMMIT")  # (it wrote nothing)

        return await self._run(work)

    async def _grouped(self, op: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``op`` in a write transaction it may share with the ops other tasks
        submit meanwhile: calls that end together (500 at once at shutdown) cost a few
        transactions, each with its fsync, instead of one each."""
        result = await self._after_calls.submit(op)
        return result  # type: ignore[return-value]

    async def _write_batch(self, ops: Sequence[_Op]) -> list[object]:
        return await self._write(lambda conn: _each(conn, ops))

    # -- scheduling -------------------------------------------------------------------

    async def schedule(self, calls: Sequence[NewCall]) -> list[int]:
        calls = StoreArgs.schedule(calls)
        if not calls:
            return []
        if not any(c.after or c.after_batch for c in calls):
            ids = await self._write(partial(insert_calls, self._q, calls))
            self._listeners.notify(min(c.due_at for c in calls))
            return ids
        ids, due = await self._write(partial(dependencies.insert_waiting_calls, self._q, calls))
        if due is not None:  # (calls that wait are due only once they wait no more)
            self._listeners.notify(due)
        return ids

    async def cancel(self, call_id: int) -> bool:
        call_id = StoreArgs.cancel(call_id)
        return await self._write(partial(self._cancel, "cancel", call_id)) > 0

    async def cancel_identifier(self, identifier: str) -> int:
        identifier = StoreArgs.cancel_identifier(identifier)
        return await self._write(partial(self._cancel, "cancel_identifier", identifier))

    def _cancel(self, query: str, param: object, conn: sqlite3.Connection) -> int:
        """Delete the rows ``query`` returns (id, waiting, dependents); the calls that
        waited for them become dead letters. Returns how many rows it deleted."""
        rows = conn.execute(self._q[query], (param,)).fetchall()
        now_us = to_micros(datetime.now(UTC))
        dependencies.removed(self._q, rows, CANCELLED, now_us, conn)
        return len(rows)

    # -- cancelling running calls (see _cancels.py) ------------------------------------

    async def request_cancel(
        self, call_id: int | None, identifier: str | None, now: datetime, expires_at: datetime
    ) -> tuple[CancelRequest, int]:
        args = CancelArgs.request_cancel(call_id, identifier, now, expires_at)
        answer = await self._write(partial(cancels.request, self._q, *args))
        self._listeners.notify(CANCEL_REQUESTED)  # other processes: data_version
        return answer

    # -- inspection -------------------------------------------------------------------

    async def pending(self, query: PendingQuery) -> list[StoredCall]:
        query = StoreArgs.pending(query)
        params = {
            "name": query.name,
            "identifier": query.identifier,
            "due_after": None if query.due_after is None else to_micros(query.due_after),
            "due_before": None if query.due_before is None else to_micros(query.due_before),
            "limit": query.limit,
            "now": None if query.now is None else to_micros(query.now),
        }
        sql = self._q["pending"]

        def read(conn: sqlite3.Connection) -> tuple[list[Any], dict[int, tuple[int, ...]]]:
            rows = conn.execute(sql, params).fetchall()
            waiting = [row[0] for row in rows if row[-1] != 0]
            return rows, dependencies.waiting_for(self._q, waiting, conn) if waiting else {}

        rows, waiting_for = await self._read(read)
        calls = [pending_call(row[:-1]) for row in rows]
        return [
            attrs.evolve(c, waiting_for=waiting_for[c.id]) if c.id in waiting_for else c
            for c in calls
        ]

    async def pending_counts(self, due_by: datetime) -> dict[str, QueueLength]:
        due_by = StoreArgs.pending_counts(due_by)
        sql = self._q["pending_counts"]
        params = (to_micros(due_by),)
        rows = await self._run(lambda conn: conn.execute(sql, params).fetchall())
        for name, *_ in rows:
            if type(name) is not str:
                raise StoreError(
                    f"SQLite store: pending calls have a name that is not text ({show(name)}); "
                    "they were written by another program"
                )
        return {
            name: QueueLength(pending=n, due=due, waiting=waiting) for name, n, due, waiting in rows
        }

    # -- claiming ---------------------------------------------------------------------

    async def claim(
        self, now: datetime, slots: Mapping[str, int], limit: int, lease: Lease | None = None
    ) -> Claim:
        now, slots, limit, lease = StoreArgs.claim(now, slots, limit, lease)
        if limit <= 0 or not slots:
            return Claim([], None)
        taken = await self._write(partial(claim, self._q, to_micros(now), slots, limit, lease))
        for bad in taken.unreadable:
            _log.error(
                "%s: row %s moved to dead letters: %s",
                self.path,
                bad.id,
                "; ".join(bad.problems),
            )
        calls = taken.calls
        return Claim(
            calls, until_next(taken.next_due, lease, (c.name for c in calls)), taken.holding
        )

    async def put_back(self, calls: Sequence[StoredCall], owner: str | None) -> int:
        calls, owner = StoreArgs.put_back(calls, owner)
        if not calls:
            return 0
        leased_sql = self._q["put_back_leased"]
        deleted_sql = self._q["put_back_deleted"]
        ended_sql = self._q["end_started"]
        dropped_sql = self._q["run_dropped"]
        now_us = to_micros(datetime.now(UTC))

        def work(conn: sqlite3.Connection) -> int:
            handed = 0
            for c in calls:
                due = to_micros(c.due_at)
                if owner is not None and (
                    conn.execute(leased_sql, (due, c.attempts, c.id, owner)).rowcount
                ):
                    handed += 1
                    continue
                params = (
                    c.id,
                    c.name,
                    c.payload,
                    due,
                    c.identifier,
                    to_micros(c.scheduled_at),
                    c.attempts,
                    c.recurring_key,
                    None if c.tick_at is None else to_micros(c.tick_at),
                    c.priority,
                )
                if conn.execute(deleted_sql, params).rowcount:
                    handed += 1
                    if c.dependents:  # pending again: no longer running
                        conn.execute(ended_sql, (c.id,))
                elif c.dependents and c.recurring_key is not None:
                    # A run whose schedule was cancelled while it ran is dropped: it
                    # will not run again, so the calls waiting for it end.
                    dropped = (c.id, c.recurring_key)
                    if conn.execute(dropped_sql, dropped).fetchone() is not None:
                        dependencies.prerequisite_ended(self._q, c.id, CANCELLED, now_us, conn)
            return handed

        handed = await self._grouped(work)
        if handed:
            self._listeners.notify(min(c.due_at for c in calls))
        return handed

    async def renew(self, owner: str, call_ids: Collection[int], expires_at: datetime) -> set[int]:
        owner, call_ids, expires_at = StoreArgs.renew(owner, call_ids, expires_at)
        if not call_ids:
            return set()
        sql, started_sql = self._q["renew"], self._q["renew_started"]
        params = (to_micros(expires_at), owner, json.dumps(sorted(call_ids)))

        def work(conn: sqlite3.Connection) -> list[Any]:
            return [*conn.execute(sql, params), *conn.execute(started_sql, params)]

        rows = await self._write(work)
        return {row[0] for row in rows}

    async def complete(self, owner: str, call_id: int) -> bool:
        owner, call_id = StoreArgs.complete(owner, call_id)
        sql = self._q["complete"]

        def work(conn: sqlite3.Connection) -> tuple[bool, datetime | None]:
            row = conn.execute(sql, (call_id, owner)).fetchone()
            if row is None:
                return False, None
            if row[0] == 0:
                return True, None
            return True, dependencies.succeeded(self._q, call_id, conn)[1]

        completed, due = await self._grouped(work)
        if due is not None:
            self._listeners.notify(due)
        return completed

    async def release(
        self, owner: str, call_id: int, due_at: datetime, *, refund_attempt: bool = False
    ) -> bool:
        owner, call_id, due_at, refund_attempt = StoreArgs.release(
            owner, call_id, due_at, refund_attempt
        )
        sql = self._q["release"]
        params = (to_micros(due_at), int(refund_attempt), call_id, owner)
        released = await self._grouped(lambda conn: conn.execute(sql, params).rowcount > 0)
        if released:
            self._listeners.notify(due_at)
        return released

    # -- dead letters -----------------------------------------------------------------

    async def dead_letter(
        self, call: StoredCall, error: str, failed_at: datetime, owner: str | None = None
    ) -> int | None:
        call, error, failed_at, owner = StoreArgs.dead_letter(call, error, failed_at, owner)
        sql = self._q["insert_dead_letter"]
        delete_sql = self._q["delete_leased"]
        failed_us = to_micros(failed_at)
        params = (
            call.id,
            call.name,
            call.payload,
            to_micros(call.due_at),
            call.identifier,
            to_micros(call.scheduled_at),
            failed_us,
            error,
            call.attempts,
        )

        def work(conn: sqlite3.Connection) -> int | None:
            if owner is None:
                dependents = call.dependents  # (its claim saw them, and recorded it)
            else:
                row = conn.execute(delete_sql, (call.id, owner)).fetchone()
                if row is None:
                    return None  # the lease was lost: another worker has the call now
                dependents = row[0] != 0
            dead_id: int = conn.execute(sql, params).fetchone()[0]
            if dependents:
                roots = {call.id: error}
                dependencies.end_dependents(self._q, roots, (), failed_us, conn)
            return dead_id

        return await self._grouped(work)

    async def dead_letter_due(
        self, name: str, due_by: datetime, error: str, failed_at: datetime
    ) -> int:
        name, due_by, error, failed_at = StoreArgs.dead_letter_due(name, due_by, error, failed_at)
        failed_us = to_micros(failed_at)
        params = {"name": name, "due_by": to_micros(due_by), "error": error, "failed_at": failed_us}
        move_sql = self._q["dead_letter_due_rows"]
        delete_sql = self._q["delete_due_rows"]

        def work(conn: sqlite3.Connection) -> int:
            # One transaction (it holds the write lock): the same rows move and go.
            moved: int = conn.execute(move_sql, params).rowcount
            rows = conn.execute(delete_sql, params).fetchall()
            dependencies.removed(self._q, rows, error, failed_us, conn)
            return moved

        return await self._write(work)

    async def dead_letters(
        self, *, name: str | None = None, limit: int | None = None
    ) -> list[DeadLetter]:
        name, limit = StoreArgs.dead_letters(name, limit)
        sql = self._q["dead_letters"]
        rows = await self._run(
            lambda conn: conn.execute(sql, {"name": name, "limit": limit}).fetchall()
        )
        return [dead_letter(r) for r in rows]

    async def requeue_dead_letter(
        self, dead_letter_id: int, due_at: datetime, after: Sequence[int] = ()
    ) -> int | None:
        dead_letter_id, due_at, after = StoreArgs.requeue_dead_letter(dead_letter_id, due_at, after)
        take_sql = self._q["take_dead_letter"]
        insert_sql = self._q["insert_waiting_call"]
        edges_sql = self._q["insert_edges"]

        def work(conn: sqlite3.Connection) -> int | None:
            row = conn.execute(take_sql, (dead_letter_id,)).fetchone()
            if row is None:
                return None
            # (A refused prerequisite raises: the transaction, and the take, roll back.)
            dependencies.check_prerequisites(self._q, after, conn)
            name, payload, identifier, scheduled_at = row
            # (Requeued at priority 0: a dead letter does not keep its priority.)
            params = (name, payload, to_micros(due_at), identifier, scheduled_at, 0, None, None, 0)
            new_id: int = conn.execute(insert_sql, (*params, len(after), 0)).fetchone()[0]
            if after:
                conn.execute(edges_sql, (new_id, json.dumps(after)))
            return new_id

        new_id = await self._write(work)
        if new_id is not None and not after:
            self._listeners.notify(due_at)
        return new_id

    async def prerequisite_ended(self, call_id: int, error: str | None, ended_at: datetime) -> int:
        call_id, error, ended_at = StoreArgs.prerequisite_ended(call_id, error, ended_at)
        ended_us = to_micros(ended_at)
        work = partial(dependencies.prerequisite_ended, self._q, call_id, error, ended_us)
        count, due = await self._grouped(work)
        if due is not None:
            self._listeners.notify(due)
        return count

    async def end_abandoned_prerequisites(self, now: datetime) -> int:
        now = StoreArgs.end_abandoned_prerequisites(now)
        now_us = to_micros(now)
        # A read first: every scheduler looks every few seconds, there is rarely
        # anything to end, and a write would take the file's write lock each time.
        sql = self._q["any_started_expired"]
        if not await self._read(lambda conn: conn.execute(sql, (now_us,)).fetchone()):
            return 0
        return await self._write(partial(dependencies.end_abandoned, self._q, now_us))

    async def purge_dead_letters(self, ids: Collection[int] | None = None) -> int:
        ids = StoreArgs.purge_dead_letters(ids)
        if ids is None:
            sql = self._q["purge_all_dead_letters"]
            return await self._write(lambda conn: conn.execute(sql).rowcount)
        one_sql = self._q["purge_dead_letter"]
        wanted = sorted(set(ids))
        return await self._write(
            lambda conn: sum(conn.execute(one_sql, (i,)).rowcount for i in wanted)
        )

    # -- recurring schedules ----------------------------------------------------------

    async def put_recurring(self, schedule: RecurringInfo, replace: bool) -> RecurringInfo:
        schedule, replace = StoreArgs.put_recurring(schedule, replace)
        stored = await self._write(partial(recurring.put, self._q, schedule, replace))
        if stored.next_tick is not None:
            # Wakes the tickers here; other processes see the commit (watcher).
            self._listeners.notify(stored.next_tick)
        return stored

    async def cancel_recurring(self, key: str) -> bool:
        key = StoreArgs.cancel_recurring(key)
        return await self._write(partial(recurring.cancel, self._q, key))

    async def recurring_schedules(self, key: str | None = None) -> list[RecurringInfo]:
        key = StoreArgs.recurring_schedules(key)
        sql = self._q["recurring_list"]
        rows = await self._run(lambda conn: conn.execute(sql, {"key": key}).fetchall())
        return [recurring_row(row) for row in rows]

    async def fire_recurring(self, now: datetime, limit: int) -> RecurringFire:
        now, limit = StoreArgs.fire_recurring(now, limit)
        # A read first: most fires find nothing due, and a read neither waits for
        # another process's write lock nor costs a commit.
        due, next_tick = await self._run(partial(recurring.look, self._q, now))
        if not due:
            return RecurringFire(0, next_tick)
        stored, next_tick = await self._write(
            partial(recurring.fire, self._q, self.path, now, limit)
        )
        if stored:
            self._listeners.notify(min(c.due_at for c in stored))
        return RecurringFire(len(stored), next_tick)

    # -- wake-ups --------------------------------------------------------------------

    def add_listener(self, listener: Listener) -> Callable[[], None]:
        listener = StoreArgs.add_listener(listener)
        return self._listeners.add(listener)

    def open_session(self, call: StoredCall) -> SessionScope:
        return SessionScope(self._new_session, call)

    def _new_session(self, call: StoredCall) -> SQLiteSession:
        if type(call) is not StoredCall:  # (the check, minus a call on the hot path)
            call = StoreArgs.open_session(call)
        if self._conn is None:
            raise StoreClosedError("the SQLite store is closed")
        return SQLiteSession(self.path, self._synchronous, self._busy_timeout, call.id)

    def _wake_now(self) -> None:
        """Another connection committed: the listeners look again now."""
        self._listeners.notify(WAKE_NOW)

    async def wait_listening(self) -> bool:
        """Return True once the watcher has read its first ``data_version`` (changes
        from then on wake the listeners); False without a watcher (no listener, or
        ``recheck_interval=None``) or if that read does not succeed within
        ``busy_timeout`` (it goes on trying)."""
        if self._watch is None or self._watcher is None or not self._watch.wanted:
            return False
        with trio.move_on_after(self._busy_timeout):
            await self._watcher.watching.wait()
            return True
        return False

    async def aclose(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            await trio.to_thread.run_sync(conn.close, limiter=self._limiter)


def _waiting_at_most(
    fn: Callable[[sqlite3.Connection], T], seconds: float, usual: float
) -> Callable[[sqlite3.Connection], T]:
    """``fn`` run with SQLite's lock wait (busy timeout) cut to ``seconds``."""

    def work(conn: sqlite3.Connection) -> T:
        conn.execute(f"PRAGMA busy_timeout = {int(seconds * 1000):d}")
        try:
            return fn(conn)
        finally:
            conn.execute(f"PRAGMA busy_timeout = {int(usual * 1000):d}")

    return work

"""A volatile in-process store, for tests and embedding."""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Callable, Collection, Mapping, Sequence
from datetime import UTC, datetime

import attrs

from .._cancel_model import CancelArgs, CancelRequest
from .._errors import DuplicateCallError, PrerequisiteError
from .._model import (
    Claim,
    DeadLetter,
    Lease,
    NewCall,
    RecurringFire,
    RecurringInfo,
    StoredCall,
)
from .._stats import QueueLength
from .._store import Listener, PendingQuery
from .._store_args import StoreArgs
from ._claims import free_after_claim, until_next
from ._dependencies import ABANDONED, CANCELLED
from ._listeners import CANCEL_REQUESTED, Listeners
from ._memory_cancels import MemoryCancels
from ._memory_cluster import MemoryCluster
from ._memory_coordination import MemoryCoordination
from ._memory_dependencies import MemoryDependencies
from ._memory_session import MemorySession as MemorySession
from ._memory_session import MemorySessionScope
from ._memory_workers import MemoryWorkers
from ._paused import MemoryPaused, without_paused
from ._recurring import after_fire, merge_registration, plan_runs


class MemoryStore(MemoryCoordination):
    """Keeps calls in memory; they are lost with the process.

    Not ``@final``: tests subclass it to inject faults or count round trips.

    Claims are atomic (no ``await`` inside), so several schedulers in one process can
    share a store. Heaps per name and priority, keyed by due time, make ``claim`` cost
    O(names * priorities in use + claimed * log n) whatever the number of pending
    calls (a high-priority call due later never hides a lower one due now: each
    priority's heap is looked at on its own).
    """

    recheck_interval: float | None = None

    def __init__(self) -> None:
        self._calls: dict[int, StoredCall] = {}
        self._owners: dict[int, str] = {}  # leased rows: id -> lease owner
        #: name -> priority -> heap of (due_at, id); a priority's heap goes once empty.
        self._heaps: dict[str, dict[int, list[tuple[datetime, int]]]] = {}
        #: Pending calls holding a unique key: (name, key) -> id.
        self._keys: dict[tuple[str, str], int] = {}
        self._ids = itertools.count(1)
        self._dead: dict[int, DeadLetter] = {}
        self._dead_ids = itertools.count(1)
        self._listeners = Listeners()
        self._recurring: dict[str, RecurringInfo] = {}
        #: Calls waiting for others; a waiting call is in _calls but on no heap.
        self._deps = MemoryDependencies()
        #: Cluster-wide limits: every scheduler on this store obeys them.
        self._cluster = MemoryCluster(self._worker_expiry)  # (needs self._workers)
        self._paused = MemoryPaused()
        #: Registered workers (a concurrency token's holder is alive while its row is).
        self._workers = MemoryWorkers()
        self._cancels = MemoryCancels()
        #: Sessions ever opened and still open (tests check these).
        self.open_sessions: set[MemorySession] = set()

    # -- scheduling -------------------------------------------------------------------

    async def schedule(self, calls: Sequence[NewCall]) -> list[int]:
        calls = StoreArgs.schedule(calls)
        return self._schedule_now(calls)

    def _schedule_now(self, calls: Sequence[NewCall]) -> list[int]:
        if any(new.unique_key is not None for new in calls):
            return self._schedule_keyed(calls)
        if any(new.after or new.after_batch for new in calls):
            return self._schedule_dependent(calls)
        ids = []
        for new in calls:
            call_id = next(self._ids)
            self._put(_stored(new, call_id))
            ids.append(call_id)
        if calls:
            self._listeners.notify(min(c.due_at for c in calls))
        return ids

    def _schedule_keyed(self, calls: Sequence[NewCall]) -> list[int]:
        # All or nothing: an "error" conflict with a pending call is found before
        # anything changes (conflicts inside the batch were refused by StoreArgs).
        for new in calls:
            if new.unique_key is not None and new.on_conflict == "error":
                held = self._keys.get((new.name, new.unique_key))
                if held is not None:
                    raise DuplicateCallError(new.name, new.unique_key, held)
        ids = []
        for new in calls:
            key = None if new.unique_key is None else (new.name, new.unique_key)
            held = None if key is None else self._keys.get(key)
            if held is not None:
                if new.on_conflict == "replace":
                    old = self._calls[held]
                    self._put(
                        attrs.evolve(
                            old,
                            payload=new.payload,
                            due_at=new.due_at,
                            identifier=new.identifier,
                            priority=new.priority,
                        )
                    )
                ids.append(held)
                continue
            call_id = next(self._ids)
            self._put(_stored(new, call_id))
            if key is not None:
                self._keys[key] = call_id
            ids.append(call_id)
        self._listeners.notify(min(c.due_at for c in calls))
        return ids

    def _schedule_dependent(self, calls: Sequence[NewCall]) -> list[int]:
        # All or nothing: every prerequisite is looked up before anything changes.
        for new in calls:
            for prerequisite in new.after:
                if prerequisite not in self._calls and prerequisite not in self._deps.started:
                    failed = any(d.call_id == prerequisite for d in self._dead.values())
                    raise PrerequisiteError(prerequisite, failed)
        ids: list[int] = []
        for new in calls:
            call_id = next(self._ids)
            ids.append(call_id)
            self._deps.add(call_id, [*new.after, *(ids[p] for p in new.after_batch)])
            self._put(_stored(new, call_id))
        ready = [self._calls[i] for i in ids if i not in self._deps.waiting]
        if ready:
            self._listeners.notify(min(c.due_at for c in ready))
        return ids

    def _free_key(self, call: StoredCall) -> None:
        if call.unique_key is not None:
            self._keys.pop((call.name, call.unique_key), None)

    def _put(self, call: StoredCall) -> None:
        # Heap entries are checked lazily: one is live while its row exists with that
        # same due time and priority (a lease, release or replace pushes a new entry).
        self._calls[call.id] = call
        if self._deps.waiting and call.id in self._deps.waiting:
            return  # not claimable before its prerequisites succeeded
        by_priority = self._heaps.get(call.name)
        if by_priority is None:
            by_priority = self._heaps[call.name] = {}
        heap = by_priority.get(call.priority)
        if heap is None:
            by_priority[call.priority] = [(call.due_at, call.id)]
        else:
            heapq.heappush(heap, (call.due_at, call.id))

    def _live(self, entry: tuple[datetime, int], priority: int) -> bool:
        call = self._calls.get(entry[1])
        return call is not None and call.due_at == entry[0] and call.priority == priority

    async def cancel(self, call_id: int) -> bool:
        call_id = StoreArgs.cancel(call_id)
        if call_id in self._owners:
            return False  # running under a lease, not pending
        call = self._calls.pop(call_id, None)
        if call is None:
            return False
        self._free_key(call)
        self._gone({call_id: CANCELLED}, None)  # (dated now, as cancel_identifier)
        return True

    async def cancel_identifier(self, identifier: str) -> int:
        identifier = StoreArgs.cancel_identifier(identifier)
        doomed = [
            c.id
            for c in self._calls.values()
            if c.identifier == identifier and c.id not in self._owners
        ]
        for call_id in doomed:
            self._free_key(self._calls.pop(call_id))
        self._gone(dict.fromkeys(doomed, CANCELLED), None)
        return len(doomed)

    # -- cancelling running calls (see _memory_cancels.py) -----------------------------

    async def request_cancel(
        self, call_id: int | None, identifier: str | None, now: datetime, expires_at: datetime
    ) -> tuple[CancelRequest, int]:
        call_id, identifier, now, expires_at = CancelArgs.request_cancel(
            call_id, identifier, now, expires_at
        )
        leased = [
            i
            for i in self._owners
            if (i == call_id if identifier is None else self._identifier_of(i) == identifier)
        ]
        for i in leased:
            del self._owners[i]
            call = self._calls.pop(i, None)
            if call is not None:
                self._free_key(call)
        self._gone(dict.fromkeys(leased, CANCELLED), now)
        request = self._cancels.add(call_id, identifier, now, expires_at)
        self._listeners.notify(CANCEL_REQUESTED)
        return request, len(leased)

    def _identifier_of(self, call_id: int) -> str | None:
        call = self._calls.get(call_id)
        return None if call is None else call.identifier

    # -- dependencies -----------------------------------------------------------------

    async def prerequisite_ended(self, call_id: int, error: str | None, ended_at: datetime) -> int:
        call_id, error, ended_at = StoreArgs.prerequisite_ended(call_id, error, ended_at)
        if not self._deps.end_started(call_id):
            return 0  # told already, or not a prerequisite that started at-most-once
        if error is None:
            return self._succeeded(call_id)
        return self._gone({call_id: error}, ended_at)

    async def end_abandoned_prerequisites(self, now: datetime) -> int:
        now = StoreArgs.end_abandoned_prerequisites(now)
        expired = self._deps.expire_started(now)
        return self._gone(dict.fromkeys(expired, ABANDONED), now) if expired else 0

    def _succeeded(self, call_id: int) -> int:
        ready = [self._calls[i] for i in self._deps.succeeded(call_id) if i in self._calls]
        for call in ready:
            self._put(call)
        if ready:
            self._listeners.notify(min(c.due_at for c in ready))
        return len(ready)

    def _gone(self, roots: dict[int, str], failed_at: datetime | None) -> int:
        """The ``roots`` (id -> why) ended without success: their dependents, and
        theirs, become dead letters with the reason. Returns how many."""
        reasons = self._deps.end(roots)
        when = failed_at or datetime.now(UTC)
        for dependent, reason in reasons.items():
            call = self._calls.pop(dependent, None)
            if call is not None:
                self._owners.pop(dependent, None)
                self._free_key(call)
                self._keep_dead(call, reason, when)
        return len(reasons)

    # -- inspection -------------------------------------------------------------------

    async def pending(self, query: PendingQuery) -> list[StoredCall]:
        query = StoreArgs.pending(query)
        found = [
            c
            for c in self._calls.values()
            if (c.id not in self._owners or (query.now is not None and c.due_at <= query.now))
            and (query.name is None or c.name == query.name)
            and (query.identifier is None or c.identifier == query.identifier)
            and (query.due_after is None or c.due_at >= query.due_after)
            and (query.due_before is None or c.due_at < query.due_before)
        ]
        found.sort(key=lambda c: (c.due_at, c.id))
        found = found if query.limit is None else found[: query.limit]
        waiting = self._deps.waiting
        return [
            attrs.evolve(c, waiting_for=tuple(sorted(waiting[c.id]))) if c.id in waiting else c
            for c in found
        ]

    async def pending_counts(self, due_by: datetime) -> dict[str, QueueLength]:
        due_by = StoreArgs.pending_counts(due_by)
        pending: dict[str, int] = {}
        due: dict[str, int] = {}
        held: dict[str, int] = {}
        waiting = self._deps.waiting
        for c in self._calls.values():
            if c.id not in self._owners or c.due_at <= due_by:  # no lease, or expired
                pending[c.name] = pending.get(c.name, 0) + 1
                if c.id in waiting:
                    held[c.name] = held.get(c.name, 0) + 1
                elif c.due_at <= due_by:
                    due[c.name] = due.get(c.name, 0) + 1
        return {
            name: QueueLength(pending=n, due=due.get(name, 0), waiting=held.get(name, 0))
            for name, n in pending.items()
        }

    def _top(self, heap: list[tuple[datetime, int]], priority: int) -> tuple[datetime, int] | None:
        while heap:
            if self._live(heap[0], priority):
                return heap[0]
            heapq.heappop(heap)
        return None

    def _next_due(self, names: Collection[str]) -> datetime | None:
        best: datetime | None = None
        for name in names:
            by_priority = self._heaps.get(name)
            if not by_priority:
                continue
            for priority, heap in list(by_priority.items()):
                top = self._top(heap, priority)
                if top is None:
                    del by_priority[priority]
                elif best is None or top[0] < best:
                    best = top[0]
        return best

    # -- claiming ---------------------------------------------------------------------

    async def claim(
        self, now: datetime, slots: Mapping[str, int], limit: int, lease: Lease | None = None
    ) -> Claim:
        now, slots, limit, lease = StoreArgs.claim(now, slots, limit, lease)
        return self._claim_now(now, slots, limit, lease)

    def _claim_now(
        self, now: datetime, slots: Mapping[str, int], limit: int, lease: Lease | None
    ) -> Claim:
        if limit <= 0:
            return Claim([], None)
        slots = without_paused(slots, self._paused.names)  # (not taken, not in next_due)
        cluster = self._cluster
        plan = None
        if cluster:  # cut to the free tokens of cluster-wide limits
            plan = cluster.fit(slots, limit, now, None if lease is None else lease.owner)
            slots, limit = plan.slots, plan.limit
        # Per name, the best due rows up to its slots (highest priority first, then
        # earliest due, then lowest id); then the best overall.
        candidates: list[tuple[int, datetime, int, str]] = []
        for name, free in slots.items():
            by_priority = self._heaps.get(name)
            if not by_priority or free <= 0:
                continue
            taken: set[int] = set()
            # Usually one priority per name: no sort to pay for then.
            order = sorted(by_priority, reverse=True) if len(by_priority) > 1 else list(by_priority)
            for priority in order:
                heap = by_priority[priority]
                while heap and len(taken) < free and heap[0][0] <= now:
                    entry = heapq.heappop(heap)
                    if self._live(entry, priority) and entry[1] not in taken:
                        taken.add(entry[1])
                        candidates.append((-priority, entry[0], entry[1], name))
                if not heap:
                    del by_priority[priority]  # (pushed again if one goes back below)
                if len(taken) >= free:
                    break
        candidates.sort()
        for negative, due, call_id, name in candidates[limit:]:
            heapq.heappush(self._heaps[name].setdefault(-negative, []), (due, call_id))
        del candidates[limit:]
        # The taken rows are off their heaps now (leased ones go back below, due at
        # their expiry, which until_next counts): what is left is what comes next.
        names = [c[3] for c in candidates]
        next_due = until_next(self._next_due(free_after_claim(slots, limit, names)), lease, names)
        held: frozenset[int] = frozenset()
        if plan is not None:
            owner = None if lease is None else lease.owner
            held = cluster.take(plan, ((c[2], c[3]) for c in candidates), now, owner)
            if plan.wake is not None and (next_due is None or plan.wake < next_due):
                next_due = plan.wake
        claimed = []
        leased = lease.names if lease is not None else frozenset()
        calls = self._calls
        for _, _, call_id, name in candidates:
            call = calls.pop(call_id)
            if call.unique_key is not None:  # a claim frees the key
                self._keys.pop((name, call.unique_key), None)
            # StoredCall is frozen; rebuilding it directly is several times cheaper
            # than attrs.evolve on this hot path.
            claimed_call = StoredCall(
                id=call_id,
                name=name,
                payload=call.payload,
                due_at=call.due_at,
                identifier=call.identifier,
                scheduled_at=call.scheduled_at,
                attempts=call.attempts + 1,
                recurring_key=call.recurring_key,
                tick_at=call.tick_at,
                priority=call.priority,
                dependents=call_id in self._deps.dependents,
            )
            if name in leased:
                assert lease is not None
                self._owners[call_id] = lease.owner
                self._put(attrs.evolve(claimed_call, due_at=lease.expires_at))
            else:
                self._owners.pop(call_id, None)
                if claimed_call.dependents:  # its row goes: remember it runs
                    if lease is None:
                        self._deps.record_started(call_id, None, None)
                    else:
                        self._deps.record_started(call_id, lease.owner, lease.expires_at)
            claimed.append(claimed_call)
        return Claim(claimed, next_due, held)

    async def put_back(self, calls: Sequence[StoredCall], owner: str | None) -> int:
        calls, owner = StoreArgs.put_back(calls, owner)
        handed = 0
        for call in calls:
            if call.unique_key is not None or call.waiting_for:
                call = attrs.evolve(call, unique_key=None, waiting_for=())  # claimed: none
            if call.id not in self._calls:
                if call.recurring_key is not None and call.recurring_key not in self._recurring:
                    # A run of a schedule cancelled meanwhile: gone with it, and so are
                    # the calls waiting for it (as for its runs that had not started).
                    if self._deps.end_started(call.id):
                        self._gone({call.id: CANCELLED}, None)
                    continue
                self._deps.end_started(call.id)  # pending again, not running
                self._put(call)  # deleted by its claim (at-most-once)
            elif owner is not None and self._owners.get(call.id) == owner:
                del self._owners[call.id]
                self._put(call)
            else:
                continue  # pending already, or another worker's now
            handed += 1
        if handed:
            self._listeners.notify(min(c.due_at for c in calls))
        return handed

    async def renew(self, owner: str, call_ids: Collection[int], expires_at: datetime) -> set[int]:
        owner, call_ids, expires_at = StoreArgs.renew(owner, call_ids, expires_at)
        kept = set()
        for call_id in call_ids:
            if self._owners.get(call_id) == owner:
                self._put(attrs.evolve(self._calls[call_id], due_at=expires_at))
                kept.add(call_id)
            elif self._deps.renew_started(call_id, owner, expires_at):
                kept.add(call_id)
        return kept

    async def complete(self, owner: str, call_id: int) -> bool:
        owner, call_id = StoreArgs.complete(owner, call_id)
        if self._owners.get(call_id) != owner:
            return False
        del self._owners[call_id]
        del self._calls[call_id]
        if call_id in self._deps.dependents:
            self._succeeded(call_id)
        return True

    async def release(
        self, owner: str, call_id: int, due_at: datetime, *, refund_attempt: bool = False
    ) -> bool:
        owner, call_id, due_at, refund_attempt = StoreArgs.release(
            owner, call_id, due_at, refund_attempt
        )
        if self._owners.get(call_id) != owner:
            return False
        del self._owners[call_id]
        call = self._calls[call_id]
        attempts = call.attempts - 1 if refund_attempt and call.attempts > 0 else call.attempts
        self._put(attrs.evolve(call, due_at=due_at, attempts=attempts))
        self._listeners.notify(due_at)
        return True

    # -- dead letters -----------------------------------------------------------------

    async def dead_letter(
        self, call: StoredCall, error: str, failed_at: datetime, owner: str | None = None
    ) -> int | None:
        call, error, failed_at, owner = StoreArgs.dead_letter(call, error, failed_at, owner)
        if owner is not None:
            if self._owners.get(call.id) != owner:
                return None  # the lease was lost: another worker has the call now
            del self._owners[call.id]
            del self._calls[call.id]
        dead_id = self._keep_dead(call, error, failed_at)
        self._gone({call.id: error}, failed_at)
        return dead_id

    def _keep_dead(self, call: StoredCall, error: str, failed_at: datetime) -> int:
        dead_id = next(self._dead_ids)
        self._dead[dead_id] = DeadLetter(
            id=dead_id,
            call_id=call.id,
            name=call.name,
            payload=call.payload,
            due_at=call.due_at,
            identifier=call.identifier,
            scheduled_at=call.scheduled_at,
            failed_at=failed_at,
            error=error,
            attempts=call.attempts,
        )
        return dead_id

    async def dead_letter_due(
        self, name: str, due_by: datetime, error: str, failed_at: datetime
    ) -> int:
        name, due_by, error, failed_at = StoreArgs.dead_letter_due(name, due_by, error, failed_at)
        doomed = [c for c in self._calls.values() if c.name == name and c.due_at <= due_by]
        for call in doomed:
            # A leased row due by now has an expired lease: it is anyone's to take.
            self._owners.pop(call.id, None)
            del self._calls[call.id]
            self._free_key(call)
            self._keep_dead(call, error, failed_at)
        self._gone({call.id: error for call in doomed}, failed_at)
        return len(doomed)

    async def dead_letters(
        self, *, name: str | None = None, limit: int | None = None
    ) -> list[DeadLetter]:
        name, limit = StoreArgs.dead_letters(name, limit)
        found = [d for d in self._dead.values() if name is None or d.name == name]
        found.sort(key=lambda d: (d.failed_at, d.id))
        return found if limit is None else found[:limit]

    async def requeue_dead_letter(
        self, dead_letter_id: int, due_at: datetime, after: Sequence[int] = ()
    ) -> int | None:
        dead_letter_id, due_at, after = StoreArgs.requeue_dead_letter(dead_letter_id, due_at, after)
        dead = self._dead.get(dead_letter_id)
        if dead is None:
            return None
        new = NewCall(
            name=dead.name,
            payload=dead.payload,
            due_at=due_at,
            identifier=dead.identifier,
            scheduled_at=dead.scheduled_at,
            after=after,
        )
        call_id = self._schedule_now([new])[0]  # (raises before the pop if after is bad)
        del self._dead[dead_letter_id]
        return call_id

    async def purge_dead_letters(self, ids: Collection[int] | None = None) -> int:
        ids = StoreArgs.purge_dead_letters(ids)
        if ids is None:
            count = len(self._dead)
            self._dead.clear()
            return count
        return sum(self._dead.pop(i, None) is not None for i in set(ids))

    # -- recurring schedules ----------------------------------------------------------

    async def put_recurring(self, schedule: RecurringInfo, replace: bool) -> RecurringInfo:
        schedule, replace = StoreArgs.put_recurring(schedule, replace)
        key = schedule.key
        merged = merge_registration(self._recurring.get(key), schedule, replace)
        if merged is not None:
            self._recurring[key] = merged
            if merged.next_tick is not None:
                self._listeners.notify(merged.next_tick)  # wakes the tickers
        return self._recurring[key]

    async def cancel_recurring(self, key: str) -> bool:
        key = StoreArgs.cancel_recurring(key)
        if self._recurring.pop(key, None) is None:
            return False
        doomed = [
            c.id
            for c in self._calls.values()
            if c.recurring_key == key and c.id not in self._owners
        ]
        for call_id in doomed:
            del self._calls[call_id]
        self._gone(dict.fromkeys(doomed, CANCELLED), None)
        return True

    async def recurring_schedules(self, key: str | None = None) -> list[RecurringInfo]:
        key = StoreArgs.recurring_schedules(key)
        found = [s for k, s in self._recurring.items() if key is None or k == key]
        return sorted(found, key=lambda s: s.key)

    async def fire_recurring(self, now: datetime, limit: int) -> RecurringFire:
        now, limit = StoreArgs.fire_recurring(now, limit)
        due = sorted(
            (s for s in self._recurring.values() if s.next_tick is not None and s.next_tick <= now),
            key=lambda s: (s.next_tick, s.key),
        )
        # Only overlap="skip" asks whether a run is in the store: look at the calls
        # only then (a fire with nothing due, or none skipping, touches no call).
        skipping = {s.key for s in due[:limit] if s.overlap == "skip"}
        active = (
            {c.recurring_key for c in self._calls.values() if c.recurring_key in skipping}
            if skipping
            else set()
        )
        runs = 0
        for info in due[:limit]:
            plan, calls = plan_runs(info, now, info.key in active)
            ids = self._schedule_now(calls)
            self._recurring[info.key] = after_fire(info, plan, ids)
            runs += len(ids)
        if len(due) > limit:
            return RecurringFire(runs, now)
        ticks = [s.next_tick for s in self._recurring.values() if s.next_tick is not None]
        return RecurringFire(runs, min(ticks, default=None))

    # -- wake-ups and sessions --------------------------------------------------------

    def add_listener(self, listener: Listener) -> Callable[[], None]:
        listener = StoreArgs.add_listener(listener)
        return self._listeners.add(listener)

    def open_session(self, call: StoredCall) -> MemorySessionScope:
        return MemorySessionScope(self, call)


def _stored(new: NewCall, call_id: int) -> StoredCall:
    """``new`` as stored under ``call_id``."""
    return StoredCall(
        id=call_id,
        name=new.name,
        payload=new.payload,
        due_at=new.due_at,
        identifier=new.identifier,
        scheduled_at=new.scheduled_at,
        attempts=new.attempts,
        recurring_key=new.recurring_key,
        tick_at=new.tick_at,
        unique_key=new.unique_key,
        priority=new.priority,
    )


# Public here (trio_futurecalls.MemorySession, next to the store it belongs to): its
# home in reprs and tracebacks, and where its annotations (MemoryStore) resolve.
MemorySession.__module__ = __name__

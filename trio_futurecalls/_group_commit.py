"""Group commit: concurrent one-call schedules share one store round trip and one commit.

Many tasks of one process calling ``schedule`` at once (a web app's request handlers)
would each pay a round trip and a commit. Here the first of them (the *leader*) waits
one checkpoint, so that the others woken in the same batch of the Trio run loop can
queue their calls behind it, then hands every queued call to ``Store.schedule`` in one
list: one multi-row insert, one transaction, one commit (and, on PostgreSQL, one
NOTIFY). Each caller gets its own id only once that commit is done, so an answer still
means "the row is durable". While a batch is being written the next one gathers; its
first caller leads it once the current one ends, so at most one batch per store is in
flight from this process and the batches grow with the load (classic group commit).
A caller alone (the last batch held one call: one call at a time) writes at once,
without the checkpoint; the first caller of a burst after a quiet spell so writes alone,
and the rest of the burst forms the next batch.

Where it lives: in the engine, over the store protocol's batch ``schedule``, not in
each adapter. Every store already stores a list of calls atomically in one
transaction (memory, SQLite, PostgreSQL), so one implementation serves all three,
the hostile cases (conflicts, cancellation, outages) are tested once, and an adapter
stays "one method, one statement". ``group_for(store)`` gives every producer of a
process the same batcher for a store: :meth:`Scheduler.schedule` and
:func:`schedule_call` share it.

A batch that fails must not fail innocent callers. ``Store.schedule`` stores all of a
batch or nothing, so when it raises anything but an outage, nothing was stored and the
leader runs the batch's calls again one by one: each caller gets its own id or its own
error (a :class:`DuplicateCallError` for an ``on_conflict="error"`` key another call
holds, a :class:`PrerequisiteError`, an invalid call). Since that replay runs in a
serial order, the answers are those of *some* serial order of the callers (two calls
with one key and "ignore": the second gets the first's id, as if scheduled after it).
An outage (:class:`StoreUnavailableError`) is not replayed: the commit may have
happened without its answer reaching us, and replaying could store calls twice; every
caller of the batch gets the error, as a lone caller would.

Cancellation follows Trio's rule that a ``Cancelled`` operation did not happen:

* a caller cancelled while its call waits in the queue leaves the queue: nothing of it
  is stored, it sees ``Cancelled``;
* once its call is in a batch being written, the caller waits (shielded) for the
  batch's outcome and returns its id or error as usual; the cancellation reaches it at
  its next checkpoint. So a call is never stored without its caller being told its id,
  and never stored twice.

The write itself runs shielded in the leader's task: a leader cancelled mid-write
finishes the write for the others first (the store's own timeouts bound it). No task
outlives its caller, so shutting a scheduler down with batches in flight needs nothing
special: each batch ends with ids, or with the store's error if it was closed.
"""

from __future__ import annotations

import copy
import weakref
from collections.abc import Sequence
from typing import Final

import attrs
import outcome
import trio

from ._errors import StoreError, StoreUnavailableError
from ._model import NewCall
from ._store import Store


@attrs.define(eq=False)
class _Waiter:
    """One caller's call, and what became of it."""

    call: NewCall
    wake: trio.Event = attrs.field(factory=trio.Event)
    #: Set once the call is taken into a batch being written.
    taken: bool = False
    #: Set when this caller is asked to lead the next batch.
    lead: bool = False
    result: outcome.Outcome[int] | None = None


@attrs.define(eq=False)
class GroupCommit:
    """The batcher of one store (see the module's comment)."""

    store: Store
    _queue: list[_Waiter] = attrs.field(factory=list, init=False)
    #: Whether some caller leads (is about to write, or writes) a batch.
    _leading: bool = attrs.field(default=False, init=False)
    #: Calls in the last batch written. After a batch of one (a lone caller, one call
    #: at a time) the next lone caller writes at once, without the checkpoint: nobody
    #: was there to join last time. Starts above one, so a burst's first caller waits.
    _last_size: int = attrs.field(default=2, init=False)
    #: Batches written, and calls in them (statistics for tests and benchmarks).
    batches: int = attrs.field(default=0, init=False)
    calls: int = attrs.field(default=0, init=False)

    async def schedule(self, call: NewCall) -> int:
        """Store ``call`` in the next batch; return its id once the batch is committed."""
        if not self._leading and self._last_size == 1:
            return await self._alone(call)
        waiter = _Waiter(call)
        self._queue.append(waiter)
        if self._leading:
            try:
                await waiter.wake.wait()
            except BaseException as exc:
                self._abandon(waiter)
                if not waiter.taken or not isinstance(exc, trio.Cancelled):
                    raise
                # In a batch being written: its answer is the call's fate.
                with trio.CancelScope(shield=True):
                    await waiter.wake.wait()
        else:
            self._leading = True
            waiter.lead = True
        if waiter.result is None:
            await self._lead(waiter)
        assert waiter.result is not None
        return waiter.result.unwrap()

    def _abandon(self, waiter: _Waiter) -> None:
        """A cancelled caller whose call is not taken leaves; leadership passes on."""
        if waiter.taken:
            return
        self._queue.remove(waiter)
        if waiter.lead:
            self._hand_over()

    def _hand_over(self) -> None:
        if self._queue:
            successor = self._queue[0]
            successor.lead = True
            successor.wake.set()
        else:
            self._leading = False

    async def _lead(self, waiter: _Waiter) -> None:
        try:
            # One checkpoint: the callers woken in this batch of the run loop join.
            await trio.lowlevel.checkpoint()
        except BaseException:  # Cancelled (or KeyboardInterrupt): hand the batch over
            self._abandon(waiter)
            raise
        batch, self._queue = self._queue, []
        for member in batch:
            member.taken = True
        try:
            with trio.CancelScope(shield=True):
                await self._write(batch)
        finally:
            for member in batch:
                if member.result is None:  # only if _write itself was interrupted
                    member.result = outcome.Error(
                        StoreError("the write of a group commit was interrupted")
                    )
                member.wake.set()
            self._hand_over()

    async def _alone(self, call: NewCall) -> int:
        """The lone caller's path: no waiter, no checkpoint to wait for others (callers
        arriving meanwhile queue for the next batch, as during any write)."""
        await trio.lowlevel.checkpoint_if_cancelled()
        self._leading = True
        self.batches += 1
        self.calls += 1
        try:
            with trio.CancelScope(shield=True):
                (call_id,) = await self.store.schedule([call])
        finally:
            self._hand_over()
        return call_id

    async def _write(self, batch: Sequence[_Waiter]) -> None:
        self.batches += 1
        self.calls += len(batch)
        self._last_size = len(batch)
        try:
            ids = await self.store.schedule([member.call for member in batch])
        except StoreUnavailableError as exc:
            # Maybe committed, maybe not: never replayed (see the module's comment).
            for member in batch:
                member.result = outcome.Error(_own_copy(exc))
            return
        except Exception as exc:
            if len(batch) == 1:
                batch[0].result = outcome.Error(exc)
                return
            # Nothing of the batch is stored: each call on its own.
            for member in batch:
                member.result = await outcome.acapture(self._one, member.call)
            return
        for member, call_id in zip(batch, ids, strict=True):
            member.result = outcome.Value(call_id)

    async def _one(self, call: NewCall) -> int:
        (call_id,) = await self.store.schedule([call])
        return call_id


def _own_copy(exc: StoreUnavailableError) -> StoreUnavailableError:
    """Each caller raises an exception of its own (a traceback grows as it is raised)."""
    mine = copy.copy(exc)
    mine.__cause__ = exc.__cause__
    return mine


_GROUPS: Final[weakref.WeakKeyDictionary[Store, GroupCommit]] = weakref.WeakKeyDictionary()


def group_for(store: Store) -> GroupCommit | None:
    """The process's batcher for ``store`` (None if the store cannot be a weak
    dictionary key: then each call goes to the store on its own)."""
    try:
        group = _GROUPS.get(store)
        if group is None:
            group = _GROUPS[store] = GroupCommit(store)
    except TypeError:
        return None
    return group


async def schedule_one(store: Store, call: NewCall) -> int:
    """Store one call, in a group commit with the process's concurrent callers."""
    group = group_for(store)
    if group is None:
        (call_id,) = await store.schedule([call])
        return call_id
    return await group.schedule(call)

"""Cancel calls that are running, on any worker: the request and the watcher.

:func:`cancel_call` and :func:`cancel_identifier_calls` are what
``Scheduler.cancel`` / ``cancel_identifier`` (and the CLI) do: delete the pending
rows (``Store.cancel``) and, for a call that may be running, store a request
(``Store.request_cancel``, which also deletes leased rows at once), then wait a
bounded time for the live workers' acks.

:class:`CancelWatcher` runs in every scheduler that executes calls: woken by the
store (``CANCEL_REQUESTED``: at once in this process; PostgreSQL's NOTIFY) or every
``recheck_interval`` (SQLite: other processes' requests), it reads the requests it
has not handled, cancels its matching running calls through their cancel scopes
(``RunningCall.cancel_by_request``; their outcome is CANCELLED: no retry, no
hand-back) and acks each request with how many at-most-once runs it stopped. A call
id it was asked to stop that starts here later (its claim raced the request) is
stopped before ``invoke`` and acked again.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Final

import trio

from ._cancel_model import CancelOutcome, CancelRequest
from ._errors import FutureCallsError
from ._model import StoredCall
from ._options import Clock
from ._running import RunningCall, RunningCalls
from ._store import Store
from .stores._listeners import CANCEL_REQUESTED, WAKE_NOW

_log = logging.getLogger("trio_futurecalls.cancels")

#: How long a request is kept: every live worker reads it well within this (SQLite
#: every ``recheck_interval``, PostgreSQL at its NOTIFY or every ``recheck_interval``),
#: and a claim racing the request starts its call within it.
REQUEST_LIFETIME: Final = timedelta(seconds=60)
#: Longest the canceller waits for acks on a store that pushes wake-ups to every
#: process (PostgreSQL) or has a single process (memory).
PUSHED_ACK_WAIT: Final = 1.0
#: Pause between two looks at the acks, on such a store.
PUSHED_ACK_POLL: Final = 0.02


def ack_wait(store: Store) -> tuple[float, float]:
    """(longest wait, pause between looks) for the acks of a request on ``store``.

    A store says how long with an attribute ``cancel_ack_wait`` (PostgreSQL: 1 s,
    since every worker hears the NOTIFY; SQLite: three ``recheck_interval``, since
    other processes notice a request within one). Otherwise: the store's
    ``recheck_interval`` three times, or with none (memory store: one process)
    :data:`PUSHED_ACK_WAIT`.
    """
    pushed = getattr(store, "cancel_ack_wait", None)
    if isinstance(pushed, int | float) and pushed > 0:
        return float(pushed), max(PUSHED_ACK_POLL, pushed / 30)
    recheck = store.recheck_interval
    if recheck is None:
        return PUSHED_ACK_WAIT, PUSHED_ACK_POLL
    return 3 * recheck, recheck / 10


async def cancel_call(store: Store, call_id: int, clock: Clock) -> CancelOutcome:
    """Cancel call ``call_id`` wherever it is (see ``Scheduler.cancel``)."""
    if await store.cancel(call_id):
        return CancelOutcome.PENDING
    request, leased = await store.request_cancel(call_id, None, clock(), clock() + REQUEST_LIFETIME)
    # A leased row (deleted now) is running, or was: wait for the workers all the
    # same, so that when this returns its run was stopped (or the wait ran out).
    found = await _acks(store, request, clock, any_found=not leased)
    if found or leased:
        return CancelOutcome.RUNNING
    # Put back meanwhile (a run that ended stored its retry, or a claim handed it
    # back at shutdown) before a worker could see the request: pending again.
    if await store.cancel(call_id):
        return CancelOutcome.PENDING
    return CancelOutcome.NOT_FOUND


async def cancel_identifier_calls(store: Store, identifier: str, clock: Clock) -> int:
    """Cancel every call with ``identifier`` (see ``Scheduler.cancel_identifier``)."""
    pending = await store.cancel_identifier(identifier)
    request, leased = await store.request_cancel(
        None, identifier, clock(), clock() + REQUEST_LIFETIME
    )
    return pending + leased + await _acks(store, request, clock, any_found=False)


async def _acks(store: Store, request: CancelRequest, clock: Clock, *, any_found: bool) -> int:
    """How many at-most-once runs the workers stopped for ``request``: once every live
    worker acked (or, with ``any_found``, one found it), or when the wait ran out."""
    wait, pause = ack_wait(store)
    deadline = trio.current_time() + wait
    while True:
        acks = await store.cancel_acks(request.id)
        found = sum(acks.values())
        if found and any_found:
            return found
        live = {w.id for w in await store.workers(clock())}
        if live <= acks.keys() or trio.current_time() >= deadline:
            if not live <= acks.keys():
                _log.info(
                    "cancel request %d: %d live worker(s) did not answer within %.3g s",
                    request.id,
                    len(live - acks.keys()),
                    wait,
                )
            return found
        await trio.sleep(pause)


class CancelWatcher:
    """Stops this scheduler's runs that cancel requests name (see the module doc)."""

    def __init__(self, store: Store, owner: str, running: RunningCalls, clock: Clock) -> None:
        self._store = store
        self._owner = owner
        self._running = running
        self._clock = clock
        self._wake = trio.Event()
        self._any_wake = getattr(store, "cancel_requests_on_any_wake", False) is True
        #: Requests handled (acked), by id; forgotten once the store drops them.
        self._handled: dict[int, CancelRequest] = {}
        #: Acks to send again (request id -> found), for calls stopped as they started.
        self._late: dict[int, int] = {}

    def on_wake(self, due_at: datetime) -> None:
        """A store listener: a request was stored (here, or announced by NOTIFY); on
        a store that says so (SQLite), any "look now" wake-up, since other processes'
        commits arrive only as those (at most one per ``recheck_interval``)."""
        if due_at == CANCEL_REQUESTED or (self._any_wake and due_at == WAKE_NOW):
            self._wake.set()

    def started(self, run: RunningCall) -> None:
        """A run begins here: stop it if a request this worker handled names its call
        (its claim raced the request), and ack that request again."""
        for request in self._handled.values():
            if request.call_id == run.info.id and request.expires_at > self._clock():
                run.cancel_by_request()
                if not run.leased:
                    self._late[request.id] = self._late.get(request.id, 0) + 1
                    self._wake.set()
                return

    def names(self, call: StoredCall, leased: bool) -> bool:
        """Whether a request this worker handled names ``call``, claimed but never
        started (handed back at shutdown): then it is not handed back (it would run
        again), and an at-most-once call counts as found in a late ack."""
        for request in self._handled.values():
            if request.call_id == call.id and request.expires_at > self._clock():
                if not leased:
                    self._late[request.id] = self._late.get(request.id, 0) + 1
                    self._wake.set()
                return True
        return False

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        remove: Callable[[], None] = self._store.add_listener(self.on_wake)
        interval = self._store.recheck_interval
        try:
            task_status.started()
            while True:
                with trio.move_on_after(math.inf if interval is None else interval):
                    await self._wake.wait()
                self._wake = trio.Event()
                try:
                    await self.check()
                except FutureCallsError as exc:  # the store is down: at the next look
                    _log.warning("could not read cancel requests: %s", exc)
                    if interval is None:
                        await trio.sleep(1.0)
                        self._wake.set()
        finally:
            remove()

    async def check(self) -> None:
        """Read the requests; stop the runs of those not handled yet; ack them."""
        requests = await self._store.cancel_requests(self._clock())
        live = {r.id for r in requests}
        for request_id in [i for i in self._handled if i not in live]:
            del self._handled[request_id]
        for request in requests:
            if request.id not in self._handled:
                found = self._stop(request)
                await self._store.ack_cancel(request.id, self._owner, found)
                self._handled[request.id] = request
        late, self._late = self._late, {}
        for request_id, more in late.items():
            if request_id in self._handled:
                found = more + (await self._store.cancel_acks(request_id)).get(self._owner, 0)
                await self._store.ack_cancel(request_id, self._owner, found)

    def _stop(self, request: CancelRequest) -> int:
        """Cancel the runs ``request`` names; return how many at-most-once runs (those
        no row showed: the store counted the leased ones when it deleted their rows)."""
        found = 0
        for run in list(self._running):
            if run.ended:
                continue
            info = run.info
            if (request.call_id is not None and info.id == request.call_id) or (
                request.identifier is not None and info.identifier == request.identifier
            ):
                if run.settled:
                    # Its attempt ended and its writes are under way: an at-most-once
                    # retry being stored is not stored (or goes again) for this
                    # request (``Execution._act``); a leased row went with the request.
                    if not run.leased and not run.cancel_requested:
                        run.cancel_requested = True
                        found += 1
                    continue
                _log.warning(
                    "call %s (id=%d) is cancelled on request %d",
                    info.name,
                    info.id,
                    request.id,
                )
                run.cancel_by_request()
                if not run.leased:
                    found += 1
        return found

"""The table of calls running in this scheduler right now.

The per-call task adds and removes its entry; the lease keeper reads it to renew
leases and cancels entries whose lease is lost; the facade lists it.
"""

from __future__ import annotations

from datetime import datetime

import attrs
import trio

from ._model import CallInfo


@attrs.define(eq=False)
class RunningCall:
    """One call in flight: what it is, and the cancel scope that stops it."""

    info: CallInfo
    scope: trio.CancelScope
    leased: bool
    #: Wall time our lease runs out unless renewed (leased calls only).
    lease_expires_at: datetime | None = None
    #: Set when the lease was lost: another worker may run the call now.
    lost: bool = False
    #: Set just before ``invoke`` is entered (or, for a THREAD or PROCESS class, when
    #: its thread or worker process takes its work): from then on it has started.
    invoked: bool = False
    #: Set when it left the table (its task is ending).
    ended: bool = False
    #: An at-most-once call with dependents: the store recorded it as started until
    #: ``record_expires_at``, and the lease keeper renews that record while it runs.
    record_expires_at: datetime | None = None
    #: It holds a token of a cluster-wide concurrency limit (freed when it ends).
    holds_token: bool = False
    #: Set when it was stopped because that token may be another worker's now.
    slot_lost: bool = False
    #: Set when a cancel request named it (``_cancels.py``): it ends CANCELLED.
    cancel_requested: bool = False
    #: Set once its attempt's outcome is decided: a cancel request no longer counts it.
    settled: bool = False

    #: Threads it started (``Executor.THREAD``, ``to_thread``) that have not ended:
    #: abandoned ones too, which keep the call's slots until they end.
    threads: int = 0
    _threads_ended: trio.Event | None = attrs.field(default=None, init=False)

    def thread_started(self) -> None:
        self.threads += 1

    def thread_ended(self) -> None:
        self.threads -= 1
        if not self.threads and self._threads_ended is not None:
            self._threads_ended.set()

    async def threads_ended(self) -> None:
        """Wait until every thread the call started has ended."""
        if self.threads:
            self._threads_ended = trio.Event()
            await self._threads_ended.wait()

    def lose_lease(self) -> None:
        """Stop the call: it must not run on unaware that another worker has it."""
        self.lost = True
        self.scope.cancel()

    def cancel_by_request(self) -> None:
        """Stop the call for good: someone cancelled it (it is not retried, nor
        handed back)."""
        self.cancel_requested = True
        self.scope.cancel()

    def lose_slot(self) -> None:
        """Stop the call: this worker may have been declared dead, so another worker
        may have taken its cluster-wide slot (it must not run beyond the limit)."""
        self.slot_lost = True
        self.lose_lease()


class RunningCalls(set[RunningCall]):
    """Calls in flight, one entry per start (a set of runs, by identity).

    Not keyed by call id: the same call may run twice here (a leased call whose old
    run cancellation cannot reach, e.g. blocked in a thread, is claimed again once its
    lease expired), and each run must come and go on its own. A plain set underneath:
    ``add`` and ``discard`` are on the hot path of every call; the task that removes
    a run also marks it ``ended``.
    """

    def infos(self) -> list[CallInfo]:
        return [r.info for r in self]

    def leased(self) -> list[RunningCall]:
        """Runs of leased calls whose lease was not given up (two runs of one call
        may be among them: see :class:`LeaseKeeper`, which tells them apart by their
        own lease expiry)."""
        return [r for r in self if r.leased and not r.lost]

    def lose_slots(self) -> None:
        """Stop every run holding a cluster-wide token (this worker lapsed)."""
        for run in self:
            if run.holds_token and not run.ended and not run.lost:
                run.lose_slot()

    def recorded(self) -> list[RunningCall]:
        """Runs of at-most-once calls the store recorded as started prerequisites."""
        return [r for r in self if r.record_expires_at is not None and not r.ended]

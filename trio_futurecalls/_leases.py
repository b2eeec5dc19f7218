"""The lease keeper: renews the leases of running at-least-once calls.

One loop per scheduler renews every leased call in one store round trip, at most
every ``renew_interval`` seconds and sooner when a lease would run out first. A
renewal is bounded in time so that a call whose lease cannot be renewed (lost to
another worker, or the database cut off) is cancelled *before* the lease runs out,
with a margin (:func:`lease_margin`): a call never runs on unaware that another worker
may have started it.

The same round trip renews the store's records of running at-most-once calls that
other calls wait for (a record that cannot be renewed stops nothing: the call is not
run elsewhere). After each round the keeper ends the records other workers left to
expire (``Store.end_abandoned_prerequisites``): their worker stopped, so the calls
waiting for them would otherwise wait forever.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

import trio

from ._errors import StoreError
from ._options import SchedulerOptions
from ._running import RunningCall, RunningCalls
from ._store import Store

_log = logging.getLogger("trio_futurecalls.scheduler.leases")

#: Shortest pause between two renewals.
MIN_RENEW_PAUSE = 0.01


def lease_margin(lease_duration: float) -> float:
    """How long before its lease runs out a call is stopped when renewals fail."""
    return lease_duration / 10


class LeaseKeeper:
    """Keeps ``owner``'s leases on the leased calls in ``running`` alive."""

    def __init__(
        self, store: Store, owner: str, running: RunningCalls, options: SchedulerOptions
    ) -> None:
        self._store = store
        self._owner = owner
        self._running = running
        self._clock = options.clock
        self._lease_duration = options.lease_duration
        self._interval = options.renew_interval
        self._margin = lease_margin(options.lease_duration)

    async def run(self) -> None:
        async with trio.open_nursery() as nursery:
            # A loop of its own: a slow look (it waits for locks, or the server is
            # slow) must not delay the next renewal past a lease's expiry.
            nursery.start_soon(self._end_abandoned_every_interval)
            pause = self._interval
            while True:
                await trio.sleep(pause)
                pause = await self.renew_once()

    async def _end_abandoned_every_interval(self) -> None:
        while True:
            await trio.sleep(self._interval)
            await self.end_abandoned()

    async def renew_once(self) -> float:
        """Renew every lease and record held now; stop the calls whose lease cannot
        be kept.

        Returns how long to wait before the next renewal.
        """
        sent = self._running.leased()
        recorded = self._running.recorded()
        if sent or recorded:
            await self._renew(sent, recorded)
        return self._next_pause(self._clock())

    async def end_abandoned(self) -> None:
        """End the records of started prerequisites other workers left to expire."""
        with trio.move_on_after(self._interval):
            try:
                ended = await self._store.end_abandoned_prerequisites(self._clock())
            except Exception as exc:  # looked at again next round
                _log.warning(
                    "could not look for abandoned prerequisites: %s",
                    exc,
                    exc_info=not isinstance(exc, StoreError),
                )
                return
            if ended:
                _log.error(
                    "%d call(s) moved to dead letters: an at-most-once call they waited "
                    "for was running on a worker that stopped",
                    ended,
                )

    async def _renew(self, sent: list[RunningCall], recorded: list[RunningCall]) -> None:
        now = self._clock()
        expires_at = now + timedelta(seconds=self._lease_duration)
        # Only leases still ours when the renewal leaves: a run whose own lease ran
        # out already may share its id with a newer claim of the same call.
        valid = [r for r in sent if _expiry(r) > now]
        earliest = min((_expiry(r) for r in valid), default=now)
        # The answer must come while there is still time to stop a call before its
        # lease runs out; a renewal that hangs (database cut off) counts as failed.
        # (Records alone: a renewal may take up to an interval.)
        budget = (
            max(0.0, (earliest - now).total_seconds() - self._margin) if valid else self._interval
        )
        kept: set[int] | None = None
        if valid or recorded:
            with trio.move_on_after(budget) as scope:
                try:
                    kept = await self._store.renew(
                        self._owner, {r.info.id for r in (*valid, *recorded)}, expires_at
                    )
                except Exception as exc:  # whatever the store raises, the lease is not kept
                    _log.warning(
                        "could not renew %d lease(s): %s",
                        len(valid),
                        exc,
                        exc_info=not isinstance(exc, StoreError),
                    )
            if scope.cancelled_caught:
                _log.warning("renewing %d lease(s) took over %.3g s", len(valid), budget)
        for running in recorded:
            if kept is not None and running.info.id in kept:
                running.record_expires_at = expires_at
        for running in valid:
            if kept is not None and running.info.id in kept:
                running.lease_expires_at = expires_at
            elif kept is not None and not running.ended:
                # The store says another worker has it now: stop at once.
                running.lose_lease()

    def _next_pause(self, now: datetime) -> float:
        """Stop every run whose lease runs out within the margin; return the pause
        until the next renewal (soon enough to leave a renewal time before the
        earliest lease runs out)."""
        pause = self._interval
        for running in self._running.leased():  # fresh: claimed during the renewal too
            left = (_expiry(running) - now).total_seconds() - self._margin
            if left <= 0:
                running.lose_lease()
            else:
                pause = min(pause, left / 2)
        return max(pause, MIN_RENEW_PAUSE)


def _expiry(running: RunningCall) -> datetime:
    assert running.lease_expires_at is not None  # leased runs always have one
    return running.lease_expires_at

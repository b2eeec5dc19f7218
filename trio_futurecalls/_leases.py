"""The lease keeper: renews the leases of running at-least-once calls.

One loop per scheduler renews every leased call in one store round trip, every
``renew_interval`` seconds. A renewal is bounded in time so that a call whose lease
cannot be renewed (lost to another worker, or the database cut off) is cancelled
*before* the lease runs out: a call never runs on unaware that another worker may
have started it.
"""

from __future__ import annotations

import logging
from datetime import timedelta

import trio

from ._errors import StoreError
from ._options import SchedulerOptions
from ._running import RunningCalls
from ._store import Store

_log = logging.getLogger("trio_futurecalls.scheduler.leases")


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

    async def run(self) -> None:
        while True:
            await trio.sleep(self._interval)
            await self.renew_once()

    async def renew_once(self) -> None:
        leased = self._running.leased()
        if not leased:
            return
        now = self._clock()
        expires_at = now + timedelta(seconds=self._lease_duration)
        earliest = min(r.lease_expires_at or now for r in leased.values())
        # The answer must come while there is still time to stop a call before its
        # lease runs out; a renewal that hangs (database cut off) counts as failed.
        budget = max(0.0, (earliest - now).total_seconds() - self._interval / 2)
        kept: set[int] | None = None
        with trio.move_on_after(budget) as scope:
            try:
                kept = await self._store.renew(self._owner, leased.keys(), expires_at)
            except StoreError as exc:
                _log.warning("could not renew %d lease(s): %s", len(leased), exc)
        if scope.cancelled_caught:
            _log.warning("renewing %d lease(s) took over %.3g s", len(leased), budget)
        now = self._clock()
        for call_id, running in leased.items():
            if kept is not None and call_id in kept:
                running.lease_expires_at = expires_at
                continue
            assert running.lease_expires_at is not None
            too_late = now + timedelta(seconds=self._interval) >= running.lease_expires_at
            if (kept is not None or too_late) and not running.ended:
                # Lost (another worker may have it) or about to expire unrenewed:
                # stop rather than run on unaware.
                running.lose_lease()

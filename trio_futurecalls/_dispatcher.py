"""The dispatcher: claims due calls that have free slots, starts them, sleeps until next.

One task per scheduler. Each round it counts free slots, claims at most that many
due calls per class (highest priority, then earliest due first) and starts each in
its own task, in that order; when nothing more can start, it sleeps until the next
due time it knows, or until the doorbell rings (a call was scheduled, a slot freed).
It never polls; the store's ``recheck_interval`` is the only fallback. In run-once
mode it starts only calls due by a fixed time and sets :attr:`Dispatcher.drained`
when none is left.
"""

from __future__ import annotations

import logging
import math
from collections import Counter
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from operator import attrgetter
from typing import Final

import trio

from ._errors import StoreError
from ._execution import Execution
from ._model import Lease, StoredCall
from ._options import SchedulerOptions
from ._presence import Presence
from ._slots import Slots
from ._store import Store

#: Shortest sleep of the dispatcher when a due call could not be claimed.
MIN_RECHECK: Final = 0.01
#: Longest pause after store errors (the pause doubles from 50 ms up to this).
MAX_BACKOFF: Final = 30.0

_log = logging.getLogger("trio_futurecalls.scheduler.dispatcher")


_ID: Final = attrgetter("id")
_NAME: Final = attrgetter("name")


def fit_to_slots(
    calls: Sequence[StoredCall], slots: Mapping[str, int], limit: int
) -> tuple[list[StoredCall], list[StoredCall], list[StoredCall]]:
    """Split a claim's calls into those that fit the free slots it was made for
    (``slots`` per name, ``limit`` in all), those beyond them, and repeats of an id
    already in the claim (the first copy starts; a repeat must not start it twice)."""
    if len(calls) <= limit and len(set(map(_ID, calls))) == len(calls):
        counts = Counter(map(_NAME, calls))
        if all(n <= slots.get(name, 0) for name, n in counts.items()):
            return list(calls), [], []  # the usual answer, checked in C-speed passes
    fitting: list[StoredCall] = []
    extra: list[StoredCall] = []
    repeats: list[StoredCall] = []
    taken: dict[str, int] = {}
    seen: set[int] = set()
    for call in calls:
        if call.id in seen:
            repeats.append(call)
            continue
        seen.add(call.id)
        used = taken.get(call.name, 0)
        if len(fitting) < limit and used < slots.get(call.name, 0):
            taken[call.name] = used + 1
            fitting.append(call)
        else:
            extra.append(call)
    return fitting, extra, repeats


class Dispatcher:
    """Feeds due calls to :class:`Execution` as slots allow."""

    def __init__(
        self,
        *,
        store: Store,
        slots: Slots,
        execution: Execution,
        options: SchedulerOptions,
        owner: str,
        run_until: datetime | None = None,
    ) -> None:
        self._store = store
        self._slots = slots
        self._execution = execution
        self._clock = options.clock
        self._lease_duration = options.lease_duration
        self._grace = options.grace_period
        self._owner = owner
        self._run_until = run_until
        #: Set in run-once mode when nothing due by ``run_until`` is left to start.
        self.drained = trio.Event()
        #: This worker's presence (set by the scheduler): calls claimed with a
        #: cluster-wide token start only if the worker did not lapse meanwhile.
        self.presence: Presence | None = None

    def _lease(self, wall: datetime) -> Lease:
        """The lease of the next claim: rows of at-least-once classes are leased; and
        at-most-once calls with dependents are recorded as started under it (even
        with no leased class), so that the lease keeper can keep those records alive
        while they run."""
        return Lease(
            owner=self._owner,
            expires_at=wall + timedelta(seconds=self._lease_duration),
            names=self._execution.leased_names,
        )

    async def run(self, calls: trio.Nursery) -> None:
        """Dispatch until cancelled (or drained, in run-once mode); calls run in ``calls``."""
        backoff = 0.0
        recheck = self._store.recheck_interval
        until = self._run_until
        doorbell = self._slots.doorbell
        lingering_until: float | None = None
        while True:
            doorbell.arm()
            try:
                limit, slots = self._slots.free()
                # Nothing running: every class has room, so a claim looks at all.
                idle = not self._slots.busy
                if until is not None:
                    # Run-once: calls that only wait for their abandoned threads hold
                    # the end back for the grace period at most (as a shutdown would
                    # wait for them); then it is as if idle, and calls of their classes
                    # that could not start stay stored.
                    if not idle and self._slots.held == self._execution.lingering:
                        if lingering_until is None:
                            lingering_until = trio.current_time() + self._grace
                        idle = trio.current_time() >= lingering_until
                    else:
                        lingering_until = None
                next_due: datetime | None = None
                if not slots:
                    if until is not None and idle:
                        self.drained.set()  # run-once with no class to run
                        return
                elif self._execution.writing > limit:
                    # More slots are about to be freed (calls writing their outcome:
                    # at-least-once completions, mostly) than are free now: claim once
                    # they are, for all of them in one statement, rather than for the
                    # few free now and again for the rest. Split claims stay split:
                    # each part's calls end and write apart, in batches of their own.
                    # The wait is bounded by those writes' (CLEANUP_TIMEOUT); an idle
                    # scheduler has no writes and claims at once.
                    doorbell.on_every_release = True
                    await doorbell.sleep(math.inf, None)
                    continue
                else:
                    wall = self._clock()
                    now = wall if until is None else min(wall, until)
                    presence = self.presence
                    if presence is not None and not presence.live:
                        # Lapsed, registering again: a claim now could take tokens
                        # under a row about to expire; claim once it is confirmed.
                        await presence.wait_live()
                        continue
                    lease = self._lease(wall)
                    lapses = 0 if presence is None else presence.lapses
                    claim = await self._store.claim(now, slots, limit, lease)
                    fitting, extra, repeats = fit_to_slots(claim.calls, slots, limit)
                    holding = claim.holding
                    if holding and presence is not None and not presence.holds_since(lapses):
                        # This worker lapsed (or is registering again): the row its
                        # tokens were taken under may expire before it is renewed, and
                        # another worker take them. These calls do not start.
                        lapsed = [c for c in fitting if c.id in holding]
                        if lapsed:
                            _log.warning(
                                "%d call(s) claimed with cluster-wide slots while this "
                                "worker may be declared dead go back to the store",
                                len(lapsed),
                            )
                            fitting = [c for c in fitting if c.id not in holding]
                            await self._execution.hand_back(lapsed, holding)
                    if repeats:
                        _log.error(
                            "the store handed over call id(s) %s twice in one claim; "
                            "each starts once",
                            sorted({c.id for c in repeats}),
                        )
                    if extra:
                        # More than was asked for (a store bug; or a class this
                        # scheduler does not run): they cannot start without breaking
                        # a limit, so they go back.
                        _log.error(
                            "the store handed over %d call(s) beyond the free slots it "
                            "was asked to fill (%s); they go back to the store",
                            len(extra),
                            ", ".join(sorted({c.name for c in extra})),
                        )
                        await self._execution.hand_back(extra, claim.holding)
                    if self._execution.closing:
                        # Shutdown began while the claim was in flight: these calls
                        # will not start, so they go back to the store.
                        await self._execution.hand_back(fitting, claim.holding)
                        return
                    expiry = lease.expires_at
                    for call in fitting:
                        self._execution.start(calls, call, expiry, call.id in holding, wall)
                    next_due = claim.next_due
                    backoff = 0.0
                    if fitting and (
                        len(fitting) >= limit or (next_due is not None and next_due <= now)
                    ):
                        # The batch was full (more may be due), or more is due for
                        # classes that still have room: claim again before sleeping.
                        await trio.lowlevel.checkpoint()
                        continue
                    if until is not None:
                        # Run-once mode: done when nothing ran while this claim looked
                        # at every class and found nothing due by `until`; otherwise
                        # wait for calls to end (each end rings), not for later calls,
                        # or look again shortly for a due row another worker holds.
                        if idle and not fitting and (next_due is None or next_due > until):
                            self.drained.set()
                            return
                        if next_due is not None and next_due > until:
                            next_due = None
            except StoreError as exc:
                backoff = min(max(backoff * 2, 0.05), MAX_BACKOFF)
                _log.warning("store error while dispatching (retrying in %.2f s): %s", backoff, exc)
                await trio.sleep(backoff)
                continue
            deadline = math.inf
            if next_due is not None:
                delta = (next_due - self._clock()).total_seconds()
                if delta <= 0:
                    # Due but not claimed: another worker holds it locked mid-claim (or
                    # it was scheduled a moment ago, and a wake-up is already set). A
                    # short floor keeps this from spinning on the store.
                    delta = MIN_RECHECK
                deadline = trio.current_time() + delta
            if recheck is not None:
                deadline = min(deadline, trio.current_time() + recheck)
            if lingering_until is not None:
                deadline = min(deadline, lingering_until)
            await doorbell.sleep(deadline, next_due)
            if self._execution.writing:
                # Woken by the first of several calls whose writes one batch answered
                # (they all run in the next scheduling round, in random order): let
                # the others give back their slots too before counting them, so one
                # claim fills them all. (Calls that end otherwise, sleeps that ran
                # out, have all run before the round the doorbell wakes us in.)
                await trio.lowlevel.checkpoint()

"""Recurring schedules: registering them, and the ticker that fires them.

A schedule lives in the store (``Store.put_recurring``); each tick becomes an
ordinary call of its class, created by ``Store.fire_recurring`` in the same
transaction that stores the schedule's next tick, so a tick is handed out once
however many workers fire it, with no leader. Every scheduler that executes calls
runs one :class:`RecurringTicker`: it fires what is due, then sleeps until the
earliest next tick, a local registration, or a fallback re-check (for schedules
registered by another process).
"""

from __future__ import annotations

import logging
from collections.abc import Collection
from datetime import datetime, timedelta
from typing import Final

import attrs
import trio

from ._call import FutureCall, check_call_class
from ._errors import InvalidArgumentError, StoreError
from ._model import RecurringInfo
from ._options import Clock, utc_now
from ._payload import encode_payload
from ._recurrence import first_anchor, ticks
from ._store import Store
from ._validate import (
    check_aware,
    check_bool,
    check_identifier,
    check_name,
    check_recurring_key,
    check_time,
)
from ._validate_recurring import (
    MISFIRE_MODES,
    OVERLAP_MODES,
    check_choice,
    check_cron,
    check_every,
    check_timezone,
)

_log = logging.getLogger("trio_futurecalls.scheduler.recurring")

#: Schedules one fire looks at; more due ones are fired by the next round at once.
FIRE_BATCH: Final = 100
#: Longest sleep of a ticker: a schedule registered by another process (the CLI, a
#: producer) is fired by running workers at most this late.
RECHECK: Final = 5.0
#: Sleep when a due schedule was being fired by another worker (in case it dies).
CONTENDED_RECHECK: Final = 0.5
#: Shortest sleep when the store reports a tick due but fired none.
MIN_RECHECK: Final = 0.01
#: Most fire rounds in run-once mode (each fires up to FIRE_BATCH schedules).
MAX_RUN_ONCE_ROUNDS: Final = 10_000
#: Shortest time between two fires woken by store notifications (every call
#: scheduled anywhere notifies; a schedule registered elsewhere does too).
NOTIFIED_GAP: Final = 0.5
#: Seconds between checks for overlap="skip" schedules of at-most-once classes.
OVERLAP_CHECK_INTERVAL: Final = 600.0
#: Longest pause after store errors.
MAX_BACKOFF: Final = 30.0


def build_schedule(
    call_class: type[FutureCall] | str,
    payload: object,
    *,
    key: object,
    cron: object,
    every: object,
    timezone: object,
    start: object,
    end: object,
    misfire: object,
    overlap: object,
    identifier: object,
    now: datetime,
) -> RecurringInfo:
    """Check the arguments of ``schedule_recurring`` and build the schedule to store."""
    if isinstance(call_class, str):
        name = check_name(call_class)
        encoded = encode_payload(None, payload)
    else:
        cls = check_call_class(call_class)
        name, encoded = cls.name, encode_payload(cls.payload_type, payload)
    if (cron is None) == (every is None):
        given = "both" if cron is not None else "neither"
        raise InvalidArgumentError(f"give exactly one of cron= and every= (got {given})")
    start_at = None if start is None else check_time(start, "start")
    end_at = None if end is None else check_time(end, "end")
    if start_at is not None and end_at is not None and end_at < start_at:
        raise InvalidArgumentError(f"end ({end_at}) is before start ({start_at})")
    seconds = None if every is None else check_every(every)
    info = RecurringInfo(
        key=check_recurring_key(key),
        name=name,
        payload=encoded,
        identifier=check_identifier(identifier),
        cron=None if cron is None else check_cron(cron),
        every=seconds,
        timezone=check_timezone(timezone),
        start=start_at,
        end=end_at,
        misfire=check_choice(misfire, MISFIRE_MODES, "misfire"),
        overlap=check_choice(overlap, OVERLAP_MODES, "overlap"),
        anchor=first_anchor(seconds, start_at, now),
        next_tick=None,
        created_at=now,
        updated_at=now,
    )
    return attrs.evolve(info, next_tick=next(ticks(info, now, inclusive=True), None))


async def schedule_recurring(
    store: Store,
    call_class: type[FutureCall] | str,
    payload: object = None,
    *,
    key: str,
    cron: str | None = None,
    every: timedelta | float | None = None,
    timezone: str = "UTC",
    start: datetime | None = None,
    end: datetime | None = None,
    misfire: str = "once",
    overlap: str = "allow",
    replace: bool = True,
    identifier: str | None = None,
    clock: Clock = utc_now,
) -> RecurringInfo:
    """Register a recurring schedule through a store alone (see
    :meth:`Scheduler.schedule_recurring`); ``call_class`` may be a class name, whose
    payload is then any JSON value. Returns the schedule as stored."""
    now = check_aware(clock(), "clock()")
    info = build_schedule(
        call_class,
        payload,
        key=key,
        cron=cron,
        every=every,
        timezone=timezone,
        start=start,
        end=end,
        misfire=misfire,
        overlap=overlap,
        identifier=identifier,
        now=now,
    )
    return await store.put_recurring(info, check_bool(replace, "replace"))


async def cancel_recurring(store: Store, key: str) -> bool:
    """Delete a schedule and its runs that have not started; True if it existed."""
    return await store.cancel_recurring(check_recurring_key(key))


async def list_recurring(store: Store, key: str | None = None) -> list[RecurringInfo]:
    """The schedules in ``store`` (or just ``key``'s), ordered by key."""
    return await store.recurring_schedules(None if key is None else check_recurring_key(key))


class RecurringTicker:
    """Fires the store's due schedules, for one scheduler.

    It sleeps until the earliest next tick, and wakes sooner when a schedule is
    registered through this scheduler (:meth:`poke`: at once) or when the store
    reports a change (a schedule registered by another process notifies like a
    scheduled call does: then at most every ``NOTIFIED_GAP``, since every call
    scheduled anywhere notifies too), and at least every ``RECHECK``.
    """

    def __init__(
        self, store: Store, clock: Clock, at_most_once: Collection[str] = frozenset()
    ) -> None:
        self._store = store
        self._clock = clock
        self._wake = trio.Event()
        self._poked = False
        #: Names of the classes this scheduler runs at most once (see check_overlap).
        self._at_most_once = frozenset(at_most_once)
        self._warned: set[str] = set()

    def poke(self) -> None:
        """A schedule changed here: fire (or re-plan the sleep) at once."""
        self._poked = True
        self._wake.set()

    def on_notified(self, due: datetime) -> None:
        """A store listener: something changed (maybe a schedule, elsewhere)."""
        self._wake.set()

    async def fire_once(self, now: datetime) -> None:
        """Run-once mode: create the runs due by ``now``, all of them."""
        # Each round moves the schedules it fired past ``now``, whether they created
        # runs or not (misfire, overlap); the bound is a safety net.
        for _ in range(MAX_RUN_ONCE_ROUNDS):
            try:
                fire = await self._store.fire_recurring(now, FIRE_BATCH)
            except Exception as exc:  # run-once goes on with the calls that are due
                _log.warning(
                    "could not fire recurring schedules: %s",
                    exc,
                    exc_info=not isinstance(exc, StoreError),
                )
                return
            if fire.next_tick is None or fire.next_tick > now or fire.contended:
                return

    async def check_overlap(self) -> None:
        """Report schedules with ``overlap="skip"`` whose class runs at most once here.

        ``Scheduler.schedule_recurring`` refuses them, but a producer or the CLI
        cannot know a class's delivery: such a schedule's running runs are not seen
        (their rows are deleted as they start), so its runs may overlap. Logged once
        per key, as an error that says what to change.
        """
        if not self._at_most_once:
            return
        try:
            schedules = await self._store.recurring_schedules()
        except StoreError as exc:
            _log.warning("could not read recurring schedules: %s", exc)
            return
        for info in schedules:
            if (
                info.overlap == "skip"
                and info.name in self._at_most_once
                and info.key not in self._warned
            ):
                self._warned.add(info.key)
                _log.error(
                    "recurring schedule %r has overlap='skip', but %r runs at most once "
                    "here: a running run's row is deleted as it starts, so its runs may "
                    "overlap; make the class at-least-once (delivery = "
                    "Delivery.AT_LEAST_ONCE)",
                    info.key,
                    info.name,
                )

    async def run(self) -> None:
        remove_listener = self._store.add_listener(self.on_notified)
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._check_overlap_now_and_then)
                await self._loop()
        finally:
            remove_listener()

    async def _check_overlap_now_and_then(self) -> None:
        while True:
            await self.check_overlap()
            await trio.sleep(OVERLAP_CHECK_INTERVAL)

    async def _loop(self) -> None:
        backoff = 0.0
        recheck = self._store.recheck_interval
        longest = RECHECK if recheck is None else min(RECHECK, recheck)
        while True:
            self._wake = trio.Event()
            self._poked = False
            try:
                fire = await self._store.fire_recurring(self._clock(), FIRE_BATCH)
            except Exception as exc:
                # Whatever a store raises (a row it cannot write, a driver error), the
                # ticker lives on and tries again; other schedules are not held up
                # for long (stores stop a schedule they cannot write).
                backoff = min(max(backoff * 2, 0.05), MAX_BACKOFF)
                _log.warning(
                    "could not fire recurring schedules (retrying in %.2f s): %s",
                    backoff,
                    exc,
                    exc_info=not isinstance(exc, StoreError),
                )
                await trio.sleep(backoff)
                continue
            backoff = 0.0
            fired_at = trio.current_time()
            pause = CONTENDED_RECHECK if fire.contended else longest
            if fire.next_tick is not None:
                delta = (fire.next_tick - self._clock()).total_seconds()
                if delta <= 0:
                    # More is due (a batch was full): fire again; or a tick is due that
                    # could not be fired: look again shortly, without spinning.
                    delta = 0.0 if fire.runs else MIN_RECHECK
                pause = min(pause, delta)
            if pause <= 0:
                await trio.lowlevel.checkpoint()
                continue
            await self._sleep(fired_at + pause, fired_at)

    async def _sleep(self, deadline: float, fired_at: float) -> None:
        """Until ``deadline``, a poke, or (no sooner than ``NOTIFIED_GAP`` after the
        last fire) a store notification."""
        while True:
            with trio.move_on_at(deadline):
                await self._wake.wait()
            if self._poked or trio.current_time() >= deadline:
                return
            # Notified: fire soon, but not more often than every NOTIFIED_GAP.
            deadline = min(deadline, fired_at + NOTIFIED_GAP)
            if trio.current_time() >= deadline:
                return
            self._wake = trio.Event()

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
import math
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
    MISFIRE_MODES,
    OVERLAP_MODES,
    check_aware,
    check_bool,
    check_choice,
    check_cron,
    check_every,
    check_identifier,
    check_name,
    check_recurring_key,
    check_time,
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
    """Fires the store's due schedules, for one scheduler."""

    def __init__(self, store: Store, clock: Clock) -> None:
        self._store = store
        self._clock = clock
        self._wake = trio.Event()

    def poke(self) -> None:
        """A schedule changed here: fire (or re-plan the sleep) at once."""
        self._wake.set()

    async def fire_once(self, now: datetime) -> None:
        """Run-once mode: create the runs due by ``now``, all of them."""
        while True:
            try:
                fire = await self._store.fire_recurring(now, FIRE_BATCH)
            except StoreError as exc:
                _log.warning("could not fire recurring schedules: %s", exc)
                return
            if fire.next_tick is None or fire.next_tick > now or not fire.runs:
                return

    async def run(self) -> None:
        backoff = 0.0
        recheck = self._store.recheck_interval
        longest = RECHECK if recheck is None else min(RECHECK, recheck)
        while True:
            self._wake = trio.Event()
            try:
                fire = await self._store.fire_recurring(self._clock(), FIRE_BATCH)
            except StoreError as exc:
                backoff = min(max(backoff * 2, 0.05), MAX_BACKOFF)
                _log.warning(
                    "could not fire recurring schedules (retrying in %.2f s): %s", backoff, exc
                )
                await trio.sleep(backoff)
                continue
            backoff = 0.0
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
            with trio.move_on_after(pause if math.isfinite(pause) else RECHECK):
                await self._wake.wait()

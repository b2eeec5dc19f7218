"""When a recurring schedule ticks, and what a fire does with the ticks that are due.

Pure functions of a :class:`RecurringInfo` and a time: no store, no Trio. Every store
calls :func:`plan_fire` inside the transaction that creates a schedule's runs and
stores its next tick, so the arithmetic exists once and each tick is handed out once.

Cron expressions are parsed and evaluated by ``cronsim`` (five fields, or six with
seconds first), in the schedule's IANA time zone, so a cron schedule follows local
wall time; at DST changes it behaves like Debian's cron, as cronsim does: a time that
does not exist (spring forward) runs at the first minute after the gap, and a time
that happens twice (fall back) runs once, at its first occurrence, while expressions
with a wildcard or step in the hour field (``*/30 * * * *``) tick in both hours.
``every`` schedules tick at ``anchor + k * every`` in absolute time (UTC).
"""

from __future__ import annotations

import collections
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Final

import attrs
from cronsim import CronSim, CronSimError

from ._model import RecurringInfo
from ._validate import LATEST_TIME
from ._validate_recurring import zone_of

#: With ``misfire="skip"``, a tick fired at most this late still runs; a later one
#: counts as missed (its worker was down or far behind) and is skipped.
MISFIRE_GRACE: Final = timedelta(seconds=1)
#: With ``misfire="all"``, at most this many runs per catch-up: the latest missed
#: ticks run, older ones are counted as skipped.
MAX_CATCH_UP: Final = 100
#: Missed ticks of a cron schedule are counted one by one up to this many per fire;
#: beyond, the fire jumps to the first tick after now (the skipped count then says
#: "at least").
MAX_TICK_SCAN: Final = 1_000

_MICROSECOND: Final = timedelta(microseconds=1)


def first_anchor(every: float | None, start: datetime | None, now: datetime) -> datetime:
    """Where an ``every`` schedule's ticks are counted from: ``start``, or one
    interval after ``now`` (its registration). Cron schedules keep ``start`` or now."""
    if start is not None:
        return start
    if every is None:
        return now
    return now + timedelta(seconds=every)


def ticks(info: RecurringInfo, after: datetime, *, inclusive: bool) -> Iterator[datetime]:
    """The schedule's ticks from ``after`` on (``inclusive``: ``after`` itself too),
    within ``start`` and ``end``, in UTC, earliest first; finite only with an end."""
    begin = after
    if info.start is not None and info.start > begin:
        begin, inclusive = info.start, True
    if info.every is not None:
        found: Iterator[datetime] = _every_ticks(info, begin, inclusive)
    else:
        assert info.cron is not None
        found = _cron_ticks(info.cron, info.timezone, begin, inclusive)
    for tick in found:
        if (info.end is not None and tick > info.end) or tick > LATEST_TIME:
            return
        yield tick


def _every_ticks(info: RecurringInfo, begin: datetime, inclusive: bool) -> Iterator[datetime]:
    assert info.every is not None
    step = max(1, round(info.every * 1_000_000))
    anchor = info.anchor
    offset = (begin - anchor) // _MICROSECOND
    if offset < 0:
        k = 0
    else:
        k, rest = divmod(offset, step)
        if rest or not inclusive:
            k += 1
    while True:
        try:
            yield anchor + timedelta(microseconds=k * step)
        except OverflowError:
            return
        k += 1


def _cron_ticks(cron: str, timezone: str, begin: datetime, inclusive: bool) -> Iterator[datetime]:
    zone = zone_of(timezone)
    # cronsim yields times strictly after the one it is given, at whole seconds.
    start = begin - _MICROSECOND if inclusive else begin
    # Outside the try: an expression cronsim refuses (a row another tool wrote) is
    # an error for the caller to report, not a schedule that silently has no ticks.
    found = CronSim(cron, start.astimezone(zone))
    try:
        for local in found:
            yield local.astimezone(UTC)
    except (OverflowError, CronSimError):
        return  # past year 9999 (or no time ever matches): no further tick


@attrs.frozen
class Plan:
    """What one fire of one schedule does."""

    #: Ticks to run now, one call each, earliest first.
    runs: list[datetime]
    #: The schedule's next tick after this fire (None: finished, past its end).
    next_tick: datetime | None
    skipped_misfire: int = 0
    skipped_overlap: int = 0


def plan_fire(info: RecurringInfo, now: datetime, previous_active: bool) -> Plan:
    """The runs of ``info`` due by ``now`` (its ``next_tick`` is), per its policies.

    ``previous_active``: a run of this schedule is still in the store (pending,
    waiting for a retry, or running under a lease); with ``overlap="skip"`` no new
    run is created then.
    """
    if info.next_tick is None or info.next_tick > now:
        return Plan([], info.next_tick)
    want = MAX_CATCH_UP if info.misfire == "all" else 1
    count, due = _due_ticks(info, info.next_tick, now, want)
    next_tick = next(ticks(info, now, inclusive=False), None)
    if not due:  # the stored next tick lies past the schedule's end now
        return Plan([], next_tick)
    runs: list[datetime]
    if info.misfire == "all":
        runs = due
    elif info.misfire == "skip":
        runs = [due[-1]] if now - due[-1] <= MISFIRE_GRACE else []
    else:  # "once": one run, for the latest tick, stands for all that were missed
        runs = [due[-1]]
    skipped_misfire = count - len(runs)
    skipped_overlap = 0
    if info.overlap == "skip":
        if previous_active:
            skipped_overlap, runs = len(runs), []
        elif len(runs) > 1:  # runs of one catch-up would overlap each other
            skipped_overlap, runs = len(runs) - 1, runs[-1:]
    return Plan(runs, next_tick, skipped_misfire, skipped_overlap)


def _due_ticks(
    info: RecurringInfo, first: datetime, now: datetime, want: int
) -> tuple[int, list[datetime]]:
    """How many ticks lie from ``first`` (a tick) to ``now``, and the latest ``want``
    of them, earliest first.

    Exact for ``every`` (arithmetic, however long the downtime). A cron schedule's
    ticks are walked forward, at most ``MAX_TICK_SCAN`` of them; past that, the
    latest ones are found by walking back from ``now`` (cronsim's reverse mode), and
    the count says "at least" (the ticks between the two walks are not counted).
    """
    if info.every is not None:
        return _every_due(info, first, now, want)
    walked: collections.deque[datetime] = collections.deque(maxlen=want)
    count = 0
    for tick in ticks(info, first, inclusive=True):
        if tick > now:
            return count, list(walked)
        walked.append(tick)
        count += 1
        if count >= MAX_TICK_SCAN:
            break
    else:
        return count, list(walked)  # the schedule's end came first
    assert info.cron is not None
    bound = now if info.end is None else min(now, info.end)
    latest: list[datetime] = []
    for tick in _cron_ticks_back(info.cron, info.timezone, bound):
        if tick <= walked[-1] or len(latest) >= want:
            break
        latest.append(tick)
    latest.reverse()
    return count + len(latest), [*walked, *latest][-want:]


def _cron_ticks_back(cron: str, timezone: str, until: datetime) -> Iterator[datetime]:
    """A cron expression's times at or before ``until``, latest first, in UTC."""
    zone = zone_of(timezone)
    # In reverse, cronsim yields times before the one given, or at it when that has
    # a fraction of a second: one microsecond later covers ``until`` itself.
    try:
        for local in CronSim(cron, (until + _MICROSECOND).astimezone(zone), reverse=True):
            yield local.astimezone(UTC)
    except (OverflowError, CronSimError):
        return  # before year 1: no earlier tick


def _every_due(
    info: RecurringInfo, first: datetime, now: datetime, want: int
) -> tuple[int, list[datetime]]:
    assert info.every is not None
    step = max(1, round(info.every * 1_000_000))
    bound = now if info.end is None else min(now, info.end)
    if bound < first:
        return 0, []
    k_first = -(-((first - info.anchor) // _MICROSECOND) // step)  # ceiling
    k_last = ((bound - info.anchor) // _MICROSECOND) // step
    if k_last < k_first:
        return 0, []
    ks = range(max(k_first, k_last - want + 1), k_last + 1)
    return k_last - k_first + 1, [info.anchor + timedelta(microseconds=k * step) for k in ks]

"""The pure arithmetic of recurring schedules: ticks, DST, misfire and overlap plans."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from itertools import islice
from typing import Any
from zoneinfo import ZoneInfo

import attrs
import pytest

from trio_futurecalls import InvalidArgumentError, RecurringInfo
from trio_futurecalls._recurrence import (
    MAX_CATCH_UP,
    MAX_TICK_SCAN,
    MISFIRE_GRACE,
    plan_fire,
    ticks,
)
from trio_futurecalls._recurring import build_schedule
from trio_futurecalls.stores._recurring import merge_registration

T0 = datetime(2030, 1, 1, tzinfo=UTC)
BERLIN = ZoneInfo("Europe/Berlin")


def schedule(now: datetime = T0, **kwargs: Any) -> RecurringInfo:
    defaults: dict[str, Any] = {
        "key": "k",
        "cron": None,
        "every": None,
        "timezone": "UTC",
        "start": None,
        "end": None,
        "misfire": "once",
        "overlap": "allow",
        "identifier": None,
    }
    defaults.update(kwargs)
    return build_schedule("job", {"x": 1}, now=now, **defaults)


def first(info: RecurringInfo, n: int) -> list[datetime]:
    assert info.next_tick is not None
    return list(islice(ticks(info, info.next_tick, inclusive=True), n))


def test_every_without_start_ticks_one_interval_after_registration() -> None:
    info = schedule(every=timedelta(minutes=5))
    assert info.anchor == T0 + timedelta(minutes=5)
    assert first(info, 3) == [T0 + timedelta(minutes=m) for m in (5, 10, 15)]
    assert info.expression == "every 300 s"


def test_every_with_start_in_the_past_keeps_its_phase() -> None:
    start = T0 - timedelta(seconds=25)
    info = schedule(every=10, start=start)
    # Ticks fall on start + k*10 s; the first one at or after registration is T0+5.
    assert info.next_tick == T0 + timedelta(seconds=5)


def test_every_with_start_and_end_stops_at_the_end() -> None:
    info = schedule(every=60, start=T0 + timedelta(hours=1), end=T0 + timedelta(hours=1, minutes=3))
    assert info.next_tick == T0 + timedelta(hours=1)
    assert list(ticks(info, info.next_tick, inclusive=True)) == [
        T0 + timedelta(hours=1, minutes=m) for m in range(4)
    ]


def test_a_schedule_registered_after_its_end_is_finished() -> None:
    info = schedule(every=60, start=T0 - timedelta(hours=2), end=T0 - timedelta(hours=1))
    assert info.next_tick is None


def test_cron_follows_local_wall_time_across_dst_in_berlin() -> None:
    now = datetime(2030, 3, 29, 12, tzinfo=UTC)
    info = schedule(now, cron="30 2 * * *", timezone="Europe/Berlin")
    local = [t.astimezone(BERLIN) for t in first(info, 3)]
    # 2030-03-31 02:30 does not exist in Berlin (02:00 -> 03:00): it runs at 03:00.
    assert [(t.day, t.hour, t.minute) for t in local] == [(30, 2, 30), (31, 3, 0), (1, 2, 30)]
    assert [t.utcoffset() for t in local] == [timedelta(hours=h) for h in (1, 2, 2)]
    fall = schedule(
        datetime(2030, 10, 26, 12, tzinfo=UTC), cron="30 2 * * *", timezone="Europe/Berlin"
    )
    # 2030-10-27 02:30 happens twice: a fixed time runs once, at the first (UTC+2).
    got = first(fall, 2)
    assert got == [
        datetime(2030, 10, 27, 0, 30, tzinfo=UTC),
        datetime(2030, 10, 28, 1, 30, tzinfo=UTC),
    ]


def test_cron_with_a_wildcard_hour_ticks_in_both_repeated_hours() -> None:
    info = schedule(
        datetime(2030, 10, 26, 23, 50, tzinfo=UTC), cron="*/30 * * * *", timezone="Europe/Berlin"
    )
    got = first(info, 4)
    # 00:00 and 00:30 UTC are 02:00/02:30 CEST, 01:00 and 01:30 UTC the same in CET.
    assert got == [datetime(2030, 10, 27, 0, m, tzinfo=UTC) for m in (0, 30)] + [
        datetime(2030, 10, 27, 1, m, tzinfo=UTC) for m in (0, 30)
    ]


def test_six_field_cron_has_seconds_first() -> None:
    info = schedule(cron="*/15 * * * * *")
    assert first(info, 3) == [T0, T0 + timedelta(seconds=15), T0 + timedelta(seconds=30)]


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"cron": "61 * * * *"}, "invalid cron"),
        ({"cron": "* * *"}, "invalid cron"),
        ({"cron": ""}, "cron must be"),
        ({"every": 0}, "every must be > 0"),
        ({"every": -5}, "every must be > 0"),
        ({"every": float("nan")}, "every must be > 0"),
        ({"every": timedelta(0)}, "every must be > 0"),
        ({"every": "5"}, "every must be a timedelta"),
        ({}, "exactly one of cron= and every= .got neither"),
        ({"every": 5, "cron": "* * * * *"}, "exactly one .* both"),
        ({"every": 5, "timezone": "Mars/Olympus"}, "unknown time zone"),
        ({"every": 5, "timezone": "../etc/passwd"}, "unknown time zone"),
        ({"every": 5, "misfire": "later"}, "misfire must be one of"),
        ({"every": 5, "overlap": "no"}, "overlap must be one of"),
        ({"every": 5, "start": datetime(2030, 1, 1)}, "aware|naive"),
        ({"every": 5, "start": T0, "end": T0 - timedelta(1)}, "before start"),
        ({"every": 5, "key": ""}, "key must be"),
        ({"every": 5, "key": "x" * 201}, "limit is 200"),
    ],
)
def test_bad_arguments_are_refused_at_the_call_site(kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(InvalidArgumentError, match=match):
        schedule(**kwargs)


def due_info(every: float, next_tick: datetime, **kwargs: Any) -> RecurringInfo:
    info = schedule(every=every, start=next_tick, **kwargs)
    return attrs.evolve(info, next_tick=next_tick)


def test_plan_on_time_runs_the_tick() -> None:
    info = due_info(60, T0)
    plan = plan_fire(info, T0 + timedelta(milliseconds=5), previous_active=False)
    assert plan.runs == [T0]
    assert plan.next_tick == T0 + timedelta(minutes=1)
    assert (plan.skipped_misfire, plan.skipped_overlap) == (0, 0)


def test_misfire_once_runs_the_latest_missed_tick_for_all() -> None:
    info = due_info(60, T0)
    plan = plan_fire(info, T0 + timedelta(minutes=10, seconds=30), previous_active=False)
    assert plan.runs == [T0 + timedelta(minutes=10)]
    assert plan.skipped_misfire == 10
    assert plan.next_tick == T0 + timedelta(minutes=11)


def test_misfire_skip_runs_nothing_after_downtime() -> None:
    info = due_info(60, T0, misfire="skip")
    plan = plan_fire(info, T0 + timedelta(minutes=10, seconds=30), previous_active=False)
    assert plan.runs == []
    assert plan.skipped_misfire == 11
    assert plan.next_tick == T0 + timedelta(minutes=11)
    # Within the grace, the tick is not missed.
    late = plan_fire(info, T0 + MISFIRE_GRACE, previous_active=False)
    assert late.runs == [T0]


def test_misfire_all_runs_every_missed_tick_up_to_the_bound() -> None:
    info = due_info(60, T0, misfire="all")
    plan = plan_fire(info, T0 + timedelta(minutes=4, seconds=1), previous_active=False)
    assert plan.runs == [T0 + timedelta(minutes=m) for m in range(5)]
    many = plan_fire(info, T0 + timedelta(minutes=MAX_CATCH_UP + 49), previous_active=False)
    assert len(many.runs) == MAX_CATCH_UP
    assert many.runs[-1] == T0 + timedelta(minutes=MAX_CATCH_UP + 49)
    assert many.skipped_misfire == 50


def test_a_long_downtime_of_a_fast_schedule_is_counted_without_iterating_it() -> None:
    info = due_info(0.001, T0)
    plan = plan_fire(info, T0 + timedelta(days=30), previous_active=False)
    assert len(plan.runs) == 1
    assert plan.skipped_misfire == 30 * 86400 * 1000  # every tick, exactly
    assert plan.next_tick is not None
    assert plan.next_tick > T0 + timedelta(days=30)


def test_overlap_skip_creates_no_run_while_the_previous_one_is_in_the_store() -> None:
    info = due_info(60, T0, overlap="skip", misfire="all")
    blocked = plan_fire(info, T0, previous_active=True)
    assert blocked.runs == []
    assert blocked.skipped_overlap == 1
    assert blocked.next_tick == T0 + timedelta(minutes=1)
    # A catch-up of several ticks would overlap itself: one run, the latest.
    caught_up = plan_fire(info, T0 + timedelta(minutes=3), previous_active=False)
    assert caught_up.runs == [T0 + timedelta(minutes=3)]
    assert caught_up.skipped_overlap == 3


def test_the_end_finishes_a_schedule() -> None:
    info = due_info(60, T0, end=T0 + timedelta(minutes=1))
    plan = plan_fire(info, T0 + timedelta(hours=1), previous_active=False)
    assert plan.runs == [T0 + timedelta(minutes=1)]
    assert plan.next_tick is None


def test_registering_the_same_definition_again_changes_nothing() -> None:
    first_time = schedule(every=60)
    stored = attrs.evolve(first_time, runs=7, next_tick=T0 + timedelta(hours=5))
    again = schedule(T0 + timedelta(hours=5), every=60)
    assert merge_registration(stored, again, replace=True) is None
    assert merge_registration(stored, again, replace=False) is None
    changed = schedule(T0 + timedelta(hours=5), every=120)
    merged = merge_registration(stored, changed, replace=True)
    assert merged is not None
    assert (merged.every, merged.runs, merged.next_tick) == (120, 7, changed.next_tick)
    assert merge_registration(stored, changed, replace=False) is None
    # A new payload keeps the ticks.
    new_payload = attrs.evolve(again, payload='{"x": 2}')
    kept = merge_registration(stored, new_payload, replace=True)
    assert kept is not None
    assert (kept.payload, kept.next_tick, kept.anchor) == (
        '{"x": 2}',
        stored.next_tick,
        stored.anchor,
    )


def test_after_a_long_downtime_the_latest_ticks_run() -> None:
    # every: exact arithmetic, however many ticks were missed.
    info = due_info(0.001, T0)
    down = T0 + timedelta(seconds=60)
    once = plan_fire(info, down, previous_active=False)
    assert once.runs == [down]
    assert once.skipped_misfire == 60_000
    every_all = plan_fire(attrs.evolve(info, misfire="all"), down, previous_active=False)
    assert every_all.runs[-1] == down
    assert len(every_all.runs) == MAX_CATCH_UP
    assert every_all.skipped_misfire == 60_001 - MAX_CATCH_UP
    # cron: the walk stops after MAX_TICK_SCAN ticks; the latest come from near now.
    cron = attrs.evolve(schedule(cron="* * * * * *"), next_tick=T0)
    later = T0 + timedelta(days=30, seconds=0.5)
    cron_once = plan_fire(cron, later, previous_active=False)
    assert cron_once.runs == [T0 + timedelta(days=30)]
    assert cron_once.skipped_misfire >= MAX_TICK_SCAN  # "at least"
    assert cron_once.next_tick == T0 + timedelta(days=30, seconds=1)
    cron_all = plan_fire(attrs.evolve(cron, misfire="all"), later, previous_active=False)
    assert cron_all.runs == [
        T0 + timedelta(days=30, seconds=s) for s in range(-MAX_CATCH_UP + 1, 1)
    ]


def test_a_short_cron_catch_up_is_counted_exactly() -> None:
    cron = attrs.evolve(schedule(cron="* * * * * *", misfire="all"), next_tick=T0)
    plan = plan_fire(cron, T0 + timedelta(seconds=MAX_TICK_SCAN + 50), previous_active=False)
    assert plan.runs == [
        T0 + timedelta(seconds=s)
        for s in range(MAX_TICK_SCAN + 50 - MAX_CATCH_UP + 1, MAX_TICK_SCAN + 51)
    ]
    assert plan.skipped_misfire == MAX_TICK_SCAN + 51 - MAX_CATCH_UP

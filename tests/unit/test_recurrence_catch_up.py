"""After a long downtime, clustered cron schedules run their latest ticks (a window
search ran the oldest ones; found by a review)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from trio_futurecalls._model import RecurringInfo
from trio_futurecalls._recurrence import plan_fire

T0 = datetime(2030, 1, 1, tzinfo=UTC)


def schedule(cron: str, misfire: str) -> RecurringInfo:
    return RecurringInfo(
        key="k",
        name="n",
        payload="null",
        cron=cron,
        misfire=misfire,
        anchor=T0,
        next_tick=T0 + timedelta(hours=1),
        created_at=T0,
        updated_at=T0,
    )


def test_once_after_downtime_runs_the_latest_tick_of_a_clustered_cron() -> None:
    # Every second of hour 01 (UTC); down from Jan 1 01:00 to Jan 5 16:06.
    info = schedule("* * 1 * * *", "once")
    now = datetime(2030, 1, 5, 16, 6, 40, tzinfo=UTC)
    plan = plan_fire(info, now, False)
    # README/a736bc1: "misfire once/all run the latest ticks ... not the first ones walked"
    assert plan.runs == [datetime(2030, 1, 5, 1, 59, 59, tzinfo=UTC)]


def test_all_after_downtime_runs_the_latest_100_ticks_of_a_business_hours_cron() -> None:
    # Every 10 s during 09:00-17:59 on weekdays; down from Friday 12:00 to Monday 08:00.
    fri = datetime(2030, 1, 4, 12, 0, tzinfo=UTC)
    assert fri.weekday() == 4
    info = RecurringInfo(
        key="k",
        name="n",
        payload="null",
        cron="*/10 * 9-17 * * mon-fri",
        misfire="all",
        anchor=T0,
        next_tick=fri,
        created_at=T0,
        updated_at=T0,
    )
    now = datetime(2030, 1, 7, 8, 0, tzinfo=UTC)
    plan = plan_fire(info, now, False)
    assert plan.runs[-1] == datetime(2030, 1, 4, 17, 59, 50, tzinfo=UTC)
    assert len(plan.runs) == 100

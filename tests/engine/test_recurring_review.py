"""Recurring calls, from a hostile review: each test once showed a bug (now fixed)."""

from __future__ import annotations

import logging
import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import attrs
import pytest
import trio

from trio_futurecalls import (
    CallInfo,
    FutureCall,
    InvalidArgumentError,
    MemoryStore,
    RecurringInfo,
    open_scheduler,
    open_sqlite_store,
    run_due_calls,
)
from trio_futurecalls._recurrence import plan_fire
from trio_futurecalls._recurring import build_schedule

T0 = datetime(2030, 1, 1, tzinfo=UTC)


def spec(key: str = "k", now: datetime = T0, **kwargs: Any) -> RecurringInfo:
    args: dict[str, Any] = dict(
        cron=None,
        every=10,
        timezone="UTC",
        start=None,
        end=None,
        misfire="once",
        overlap="allow",
        identifier=None,
    )
    args.update(kwargs)
    return build_schedule("job", None, key=key, now=now, **args)


# --- 1. hostile row: counter at the int64 bound crashes the SQLite worker ----------------


async def test_sqlite_hostile_counter_does_not_crash_fire(tmp_path: Path) -> None:
    path = tmp_path / "calls.sqlite3"
    async with open_sqlite_store(path) as store:
        await store.put_recurring(spec("bad", start=T0), True)
        await store.put_recurring(spec("good", start=T0 + timedelta(seconds=1)), True)
    # another tool writes a counter at the bound (passes the CHECK runs >= 0)
    conn = sqlite3.connect(path)
    conn.execute("UPDATE futurecalls_recurring SET runs = 9223372036854775807 WHERE key='bad'")
    conn.commit()
    conn.close()
    async with open_sqlite_store(path) as store:
        # expected: the bad schedule is stopped / skipped, "good" still fires; at worst
        # a StoreError the ticker can back off from.  Actual: a raw OverflowError.
        fire = await store.fire_recurring(T0 + timedelta(seconds=30), 100)
        assert fire.runs >= 1


# --- 2. "register it again to repair it" does not repair a stopped schedule --------------


async def test_reregistering_repairs_a_stopped_schedule(monkeypatch: pytest.MonkeyPatch) -> None:
    store = MemoryStore()
    info = spec("tz", cron="0 * * * *", every=None, timezone="Europe/Berlin")
    await store.put_recurring(info, True)
    # One worker whose machine lacks tzdata for the zone fires it: the schedule stops.
    import trio_futurecalls._recurrence as rec

    def broken_zone(name: str) -> ZoneInfo:
        raise InvalidArgumentError(f"unknown time zone {name!r}")

    with monkeypatch.context() as m:
        m.setattr(rec, "zone_of", broken_zone)
        assert info.next_tick is not None
        await store.fire_recurring(info.next_tick, 10)
    (stopped,) = await store.recurring_schedules()
    assert stopped.next_tick is None  # stopped, as documented
    # README: "Register it again to repair it."  Every worker registers at start-up:
    await store.put_recurring(
        spec(
            "tz",
            cron="0 * * * *",
            every=None,
            timezone="Europe/Berlin",
            now=T0 + timedelta(hours=5),
        ),
        True,
    )
    (after,) = await store.recurring_schedules()
    assert after.next_tick is not None, "re-registration left the schedule stopped for good"


# --- 3. run-once stops firing when a full batch produced no runs ------------------------


async def test_run_once_fires_every_due_schedule() -> None:
    store = MemoryStore()
    ran: list[CallInfo] = []

    class Job(FutureCall):
        name = "job"
        max_concurrent = None

        async def invoke(self, session: Any, payload: Any) -> None:
            ran.append(self.info)

    # 100 schedules whose missed tick is skipped (misfire="skip"), then one "once".
    for i in range(100):
        await store.put_recurring(spec(f"a{i:03}", start=T0, misfire="skip"), True)
    await store.put_recurring(spec("z-once", start=T0 + timedelta(seconds=5)), True)
    now = T0 + timedelta(hours=1, seconds=5)  # a* ticks are 5 s late: skipped
    await run_due_calls(store, [Job], clock=lambda: now)
    (z,) = await store.recurring_schedules("z-once")
    assert z.runs == 1, f"z-once never fired in run-once mode (next_tick={z.next_tick})"


# --- 4. past MAX_TICK_SCAN, misfire "once"/"all" run old ticks, not the latest ----------


def test_once_after_huge_downtime_runs_latest_tick() -> None:
    info = spec("fast", every=0.001, start=T0)
    now = T0 + timedelta(seconds=60)  # 60,000 missed ticks
    plan = plan_fire(info, now, False)
    assert plan.runs == [now], (
        f"ran tick {plan.runs[0]} (~{(now - plan.runs[0]).total_seconds()} s old)"
    )


def test_all_after_huge_downtime_runs_latest_ticks() -> None:
    info = spec("fast", every=0.001, start=T0, misfire="all")
    now = T0 + timedelta(seconds=60)
    plan = plan_fire(info, now, False)
    assert plan.runs[-1] == now
    assert plan.skipped_misfire + len(plan.runs) == 60_001


# --- 5. validation hole: StoreArgs.put_recurring accepts every=timedelta ------------------


@pytest.mark.parametrize("kind", ["memory", "sqlite"])
async def test_put_recurring_normalizes_every_given_as_timedelta(kind: str, tmp_path: Path) -> None:
    bad = attrs.evolve(spec("td"), every=timedelta(seconds=10))  # type: ignore[arg-type]
    if kind == "memory":
        store: Any = MemoryStore()
        assert (await store.put_recurring(bad, True)).every == 10.0
    else:
        async with open_sqlite_store(tmp_path / "x.sqlite3") as store:
            assert (await store.put_recurring(bad, True)).every == 10.0
            assert (await store.recurring_schedules())[0].every == 10.0


# --- 6. a stored cron the library cannot parse stops silently (no error logged) ----------


async def test_unparsable_stored_cron_is_logged(caplog: pytest.LogCaptureFixture) -> None:
    store = MemoryStore()
    info = spec("c", cron="* * * * *", every=None)
    await store.put_recurring(info, True)
    # another tool / version stored an expression this cronsim does not accept
    store._recurring["c"] = attrs.evolve(store._recurring["c"], cron="*/0 * * * *")
    with caplog.at_level(logging.ERROR):
        assert info.next_tick is not None
        await store.fire_recurring(info.next_tick, 10)
    (s,) = await store.recurring_schedules()
    assert s.next_tick is None
    assert any(r.levelno >= logging.ERROR for r in caplog.records), "stopped without a word"


# --- 1b. the same hostile row takes the whole scheduler down ----------------------------


async def test_sqlite_hostile_counter_does_not_crash_scheduler(tmp_path: Path) -> None:
    # real clock: the store works in a thread, which autojump would run past
    path = tmp_path / "calls.sqlite3"
    async with open_sqlite_store(path) as store:
        await store.put_recurring(spec("bad", start=T0), True)  # 2030: due to a 2031 clock
    clock = lambda: T0 + timedelta(days=365)  # noqa: E731
    conn = sqlite3.connect(path)
    conn.execute("UPDATE futurecalls_recurring SET runs = 9223372036854775807")
    conn.commit()
    conn.close()

    class Job(FutureCall):
        name = "job"

        async def invoke(self, session: Any, payload: Any) -> None:
            pass

    async with open_sqlite_store(path) as store, open_scheduler(store, [Job], clock=clock):
        await trio.sleep(1.0)  # the ticker fires at once; a worker must survive any row


# --- 7. README documents a CLI that does not exist ---------------------------------------


def test_cli_recurring_list_exists(tmp_path: Path) -> None:
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "-m", "trio_futurecalls", "--store", "memory://", "recurring", "list"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        check=False,
    )
    assert done.returncode == 0, done.stderr

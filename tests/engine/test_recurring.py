"""Recurring schedules in the engine, on the memory store, with Trio's autojump clock."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar

import pytest
import trio
from trio.testing import MockClock

from trio_futurecalls import (
    CallInfo,
    Delivery,
    FutureCall,
    InvalidArgumentError,
    MemoryStore,
    cancel_recurring,
    list_recurring,
    open_scheduler,
    run_due_calls,
    schedule_recurring,
)
from trio_futurecalls.testing import trio_wall_clock

T0 = datetime(2030, 1, 1, tzinfo=UTC)


def recording(
    runs: list[CallInfo], *, sleep: float = 0.0, leased: bool = False
) -> type[FutureCall]:
    class Job(FutureCall):
        name = "job"
        max_concurrent = None
        delivery: ClassVar[Delivery | None] = Delivery.AT_LEAST_ONCE if leased else None

        async def invoke(self, session: Any, payload: Any) -> None:
            runs.append(self.info)
            await trio.sleep(sleep)

    return Job


async def test_every_runs_each_tick_once_with_start_and_end(
    autojump_clock: MockClock, clock: Callable[[], datetime]
) -> None:
    runs: list[CallInfo] = []
    job = recording(runs)
    async with open_scheduler(MemoryStore(), [job], clock=clock) as s:
        info = await s.schedule_recurring(
            job,
            {"n": 1},
            key="every-5",
            every=timedelta(seconds=5),
            start=T0 + timedelta(seconds=10),
            end=T0 + timedelta(seconds=30),
        )
        assert info.next_tick == T0 + timedelta(seconds=10)
        await trio.sleep(60)
        (stored,) = await s.recurring()
    ticks = [T0 + timedelta(seconds=t) for t in (10, 15, 20, 25, 30)]
    assert [r.tick_at for r in runs] == ticks
    assert [r.started_at for r in runs] == ticks  # on time, to the microsecond
    assert {r.recurring_key for r in runs} == {"every-5"}
    assert (stored.runs, stored.next_tick, stored.last_tick) == (5, None, ticks[-1])
    assert stored.last_call_id == runs[-1].id


async def test_cron_across_dst_in_berlin(autojump_clock: MockClock) -> None:
    runs: list[CallInfo] = []
    job = recording(runs)
    clock = trio_wall_clock(datetime(2030, 3, 29, 12, tzinfo=UTC))
    async with open_scheduler(MemoryStore(), [job], clock=clock) as s:
        await s.schedule_recurring(job, key="nightly", cron="30 2 * * *", timezone="Europe/Berlin")
        await trio.sleep(4 * 86400)
    assert [r.tick_at for r in runs] == [
        datetime(2030, 3, 30, 1, 30, tzinfo=UTC),  # 02:30 CET
        datetime(2030, 3, 31, 1, 0, tzinfo=UTC),  # 02:30 does not exist: 03:00 CEST
        datetime(2030, 4, 1, 0, 30, tzinfo=UTC),  # 02:30 CEST
        datetime(2030, 4, 2, 0, 30, tzinfo=UTC),
    ]


async def downtime(misfire: str, down: float) -> tuple[list[CallInfo], list[Any]]:
    """Register an every-60-s schedule, stop the worker for ``down`` seconds, restart."""
    runs: list[CallInfo] = []
    job = recording(runs)
    store = MemoryStore()
    clock = trio_wall_clock(T0)
    async with open_scheduler(store, [job], clock=clock) as s:
        await s.schedule_recurring(job, key="k", every=60, start=T0, misfire=misfire)
        await trio.sleep(90)  # ticks at 0 and 60 run
    await trio.sleep(down)  # no worker
    async with open_scheduler(store, [job], clock=clock):
        await trio.sleep(1)
    return runs, await list_recurring(store)


@pytest.mark.parametrize(
    ("misfire", "ticks_after_downtime", "skipped"),
    [
        ("once", [600], 8),  # one run at restart, for the latest missed tick (600)
        ("skip", [], 9),  # none: wait for the next tick
        ("all", [120, 180, 240, 300, 360, 420, 480, 540, 600], 0),
    ],
)
async def test_misfire_policies_after_downtime(
    autojump_clock: MockClock, misfire: str, ticks_after_downtime: list[int], skipped: int
) -> None:
    runs, (info,) = await downtime(misfire, 540)  # restart at T0+630 s
    # (Runs due together start side by side, in Trio's order: compare them sorted.)
    assert sorted(r.tick_at for r in runs if r.tick_at is not None) == [
        T0 + timedelta(seconds=t) for t in [0, 60, *ticks_after_downtime]
    ]
    assert info.skipped_misfire == skipped
    assert info.next_tick == T0 + timedelta(seconds=660)


async def test_overlap_skip_starts_no_run_while_the_previous_one_runs(
    autojump_clock: MockClock, clock: Callable[[], datetime]
) -> None:
    runs: list[CallInfo] = []
    job = recording(runs, sleep=2.5, leased=True)
    async with open_scheduler(MemoryStore(), [job], clock=clock) as s:
        await s.schedule_recurring(job, key="slow", every=1, start=T0, overlap="skip")
        await trio.sleep(9.5)
        (info,) = await s.recurring()
    # Each run lasts 2.5 s: ticks 1 and 2 are skipped while run 0 runs, and so on.
    assert [r.tick_at for r in runs] == [T0 + timedelta(seconds=t) for t in (0, 3, 6, 9)]
    assert info.skipped_overlap == 6
    assert info.runs == 4


async def test_overlap_skip_needs_an_at_least_once_class(
    autojump_clock: MockClock, clock: Callable[[], datetime]
) -> None:
    job = recording([])
    async with open_scheduler(MemoryStore(), [job], clock=clock) as s:
        with pytest.raises(InvalidArgumentError, match="at-least-once"):
            await s.schedule_recurring(job, key="k", every=1, overlap="skip")
        assert await s.recurring() == []


async def test_overlap_allow_runs_ticks_side_by_side(
    autojump_clock: MockClock, clock: Callable[[], datetime]
) -> None:
    runs: list[CallInfo] = []
    job = recording(runs, sleep=2.5)
    async with open_scheduler(MemoryStore(), [job], clock=clock) as s:
        await s.schedule_recurring(job, key="k", every=1, start=T0)
        await trio.sleep(4.5)
    assert [r.tick_at for r in runs] == [T0 + timedelta(seconds=t) for t in range(5)]


async def test_many_schedulers_on_one_store_run_each_tick_once(
    autojump_clock: MockClock, clock: Callable[[], datetime]
) -> None:
    runs: list[CallInfo] = []
    job = recording(runs)
    store = MemoryStore()
    async with (
        open_scheduler(store, [job], clock=clock) as a,
        open_scheduler(store, [job], clock=clock) as b,
        open_scheduler(store, [job], clock=clock) as c,
    ):
        for s in (a, b, c):  # every worker registers at start-up: idempotent
            await s.schedule_recurring(job, key="k", every=2, start=T0 + timedelta(seconds=2))
        await trio.sleep(20.5)
    ticks = [r.tick_at for r in runs]
    assert ticks == [T0 + timedelta(seconds=t) for t in range(2, 21, 2)]
    assert len({r.id for r in runs}) == len(runs)


async def test_registering_again_replaces_or_keeps(
    autojump_clock: MockClock, clock: Callable[[], datetime]
) -> None:
    runs: list[CallInfo] = []
    job = recording(runs)
    async with open_scheduler(MemoryStore(), [job], clock=clock) as s:
        first = await s.schedule_recurring(job, {"v": 1}, key="k", every=10)
        await trio.sleep(15)
        # The same definition again (a restart): the ticks go on undisturbed.
        same = await s.schedule_recurring(job, {"v": 1}, key="k", every=10)
        assert (same.next_tick, same.runs, same.anchor) == (
            T0 + timedelta(seconds=20),
            1,
            first.anchor,
        )
        kept = await s.schedule_recurring(job, {"v": 2}, key="k", every=3, replace=False)
        assert (kept.payload, kept.every) == ('{"v":1}', 10)
        replaced = await s.schedule_recurring(job, {"v": 2}, key="k", every=3)
        assert (replaced.payload, replaced.every, replaced.runs) == ('{"v":2}', 3, 1)
        assert replaced.next_tick == T0 + timedelta(seconds=18)  # 3 s after the change
        await trio.sleep(4)
    assert [r.tick_at for r in runs] == [T0 + timedelta(seconds=t) for t in (10, 18)]


async def test_cancel_recurring_stops_ticks_and_drops_runs_not_started(
    autojump_clock: MockClock, clock: Callable[[], datetime]
) -> None:
    store = MemoryStore()
    # A producer registers; no worker runs: a run is created only by a worker's ticker.
    info = await schedule_recurring(store, "job", {"a": 1}, key="k", every=5, clock=clock)
    assert info.name == "job"
    runs: list[CallInfo] = []
    job = recording(runs)
    await trio.sleep(5)
    # Fire without executing: a run-once pass over a class that is not "job".
    other = recording([])
    other.name = "other"
    await run_due_calls(store, [other], clock=clock)
    assert len(await store.pending(_all())) == 1
    assert await cancel_recurring(store, "k") is True
    assert await cancel_recurring(store, "k") is False
    assert await store.pending(_all()) == []
    async with open_scheduler(store, [job], clock=clock):
        await trio.sleep(30)
    assert runs == []


def _all() -> Any:
    from trio_futurecalls import PendingQuery

    return PendingQuery()


async def test_run_due_calls_runs_the_due_ticks(
    autojump_clock: MockClock, clock: Callable[[], datetime]
) -> None:
    store = MemoryStore()
    runs: list[CallInfo] = []
    job = recording(runs)
    await schedule_recurring(store, job, key="k", every=60, start=T0, misfire="all", clock=clock)
    await trio.sleep(150)
    stats = await run_due_calls(store, [job], clock=clock)
    assert sorted(r.tick_at for r in runs if r.tick_at is not None) == [
        T0 + timedelta(seconds=t) for t in (0, 60, 120)
    ]
    assert stats.classes["job"].succeeded == 3


async def test_a_recurring_run_is_an_ordinary_call_with_retries(
    autojump_clock: MockClock, clock: Callable[[], datetime]
) -> None:
    attempts: list[tuple[datetime | None, int]] = []

    class Flaky(FutureCall):
        name = "flaky"
        delivery = Delivery.AT_LEAST_ONCE
        max_attempts = 3
        retry_backoff = staticmethod(lambda attempt: 1.0)

        async def invoke(self, session: Any, payload: Any) -> None:
            attempts.append((self.info.tick_at, self.info.attempt))
            if self.info.attempt < 3:
                raise RuntimeError("not yet")

    async with open_scheduler(MemoryStore(), [Flaky], clock=clock) as s:
        await s.schedule_recurring(Flaky, key="k", every=60, start=T0, overlap="skip")
        await trio.sleep(30)
        stats = s.statistics().classes["flaky"]
    assert attempts == [(T0, 1), (T0, 2), (T0, 3)]
    assert (stats.succeeded, stats.retried) == (1, 2)


async def test_a_stored_schedule_no_worker_can_read_is_stopped_not_fatal(
    autojump_clock: MockClock, clock: Callable[[], datetime], caplog: pytest.LogCaptureFixture
) -> None:
    import attrs

    store = MemoryStore()
    runs: list[CallInfo] = []
    job = recording(runs)
    good = await schedule_recurring(store, job, key="good", every=1, start=T0, clock=clock)
    # Another tool wrote a schedule with a time zone this machine does not know.
    bad = attrs.evolve(good, key="bad", timezone="Nowhere/Atlantis", cron="* * * * *", every=None)
    store._recurring["bad"] = bad
    async with open_scheduler(store, [job], clock=clock):
        await trio.sleep(2.5)
    assert [r.recurring_key for r in runs] == ["good"] * 3
    infos = {i.key: i for i in await list_recurring(store)}
    assert infos["bad"].next_tick is None
    assert "recurring schedule 'bad' cannot run and is stopped" in caplog.text


async def test_a_schedule_registered_elsewhere_fires_from_its_first_tick(
    autojump_clock: MockClock, clock: Callable[[], datetime]
) -> None:
    # (Found by the process tests: a producer's registration waited for RECHECK, and
    # the ticks due meanwhile were folded by misfire="once".)
    runs: list[CallInfo] = []
    job = recording(runs)
    store = MemoryStore()
    async with open_scheduler(store, [job], clock=clock):
        await trio.sleep(1)
        await schedule_recurring(store, "job", key="k", every=0.5, clock=clock)
        await trio.sleep(3.1)
    (info,) = await list_recurring(store)
    assert [r.tick_at for r in runs] == [T0 + timedelta(seconds=1 + 0.5 * n) for n in range(1, 7)]
    assert info.skipped_misfire == 0


async def test_overlap_skip_of_an_at_most_once_class_from_a_producer_is_reported(
    autojump_clock: MockClock, clock: Callable[[], datetime], caplog: pytest.LogCaptureFixture
) -> None:
    # A producer (or the CLI) cannot know a class's delivery; the worker that runs
    # the class at most once says what is wrong, once per schedule.
    store = MemoryStore()
    await schedule_recurring(store, "job", key="k", every=1, overlap="skip", clock=clock)
    await schedule_recurring(store, "job", key="fine", every=1, clock=clock)
    job = recording([])
    async with open_scheduler(store, [job], clock=clock):
        await trio.sleep(1300)  # past two checks
    errors = [r for r in caplog.records if "has overlap='skip'" in r.getMessage()]
    assert len(errors) == 1
    assert "'k'" in errors[0].getMessage()
    assert "AT_LEAST_ONCE" in errors[0].getMessage()
    caplog.clear()
    leased = recording([], leased=True)
    async with open_scheduler(store, [leased], clock=clock):
        await trio.sleep(1)
    assert "has overlap='skip'" not in caplog.text

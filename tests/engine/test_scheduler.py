"""Engine behaviour on the memory store, with Trio's autojump clock (no real sleeps)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta
from typing import Any, ClassVar

import attrs
import pytest
import trio
import trio.testing
from helpers import Recorder, make_call
from trio.testing import MockClock

from trio_futurecalls import (
    CancelOutcome,
    Claim,
    FutureCall,
    Lease,
    MemoryStore,
    NewCall,
    PendingQuery,
    QueueLength,
    SchedulerClosedError,
    SchedulerError,
    StoreUnavailableError,
    open_scheduler,
    run_due_calls,
    schedule_call,
)


async def test_long_call_does_not_block_short_ones(
    autojump_clock: MockClock, clock: Callable[[], datetime]
) -> None:
    rec = Recorder()
    long_call = make_call("long", rec)
    short = make_call("short", rec, max_concurrent=2)
    store = MemoryStore()
    async with open_scheduler(store, [long_call, short], max_concurrent=10, clock=clock) as s:
        await s.schedule(long_call, {"tag": "long", "sleep": 3600}, delay=0)
        for i in range(6):
            await s.schedule(short, {"tag": i, "sleep": 1}, delay=0.5)
        await trio.sleep(10)
        # Two at a time: pairs finish together (their order within a pair is Trio's).
        assert sorted(rec.tags("finished")) == [0, 1, 2, 3, 4, 5]
        assert rec.finish_time(5) == pytest.approx(3.5)  # 6 calls, 2 at a time, 1 s each
        assert rec.running["long"] == 1
        await s.shutdown(grace_period=0)
    assert s.statistics().classes["long"].cancelled == 1


async def test_per_class_limit_is_never_exceeded(
    autojump_clock: MockClock, clock: Callable[[], datetime]
) -> None:
    rec = Recorder()
    call = make_call("limited", rec, max_concurrent=3)
    async with open_scheduler(MemoryStore(), [call], max_concurrent=50, clock=clock) as s:
        for i in range(20):
            await s.schedule(call, {"tag": i, "sleep": 1}, delay=0)
        await trio.sleep(100)
    assert rec.peak["limited"] == 3
    assert len(rec.finished) == 20
    assert max(t for _, _, t in rec.finished) == pytest.approx(7)  # ceil(20 / 3) rounds


async def test_global_limit_is_never_exceeded(
    autojump_clock: MockClock, clock: Callable[[], datetime]
) -> None:
    rec = Recorder()
    calls = [make_call(f"c{i}", rec, max_concurrent=None) for i in range(3)]
    async with open_scheduler(MemoryStore(), calls, max_concurrent=4, clock=clock) as s:
        for i in range(30):
            await s.schedule(calls[i % 3], {"tag": i, "sleep": 1 + i % 2}, delay=0)
        await trio.sleep(1000)
        assert s.statistics().running == 0
    assert rec.total_peak == 4
    assert len(rec.finished) == 30


async def test_saturated_class_does_not_hold_back_another(
    autojump_clock: MockClock, clock: Callable[[], datetime]
) -> None:
    rec = Recorder()
    busy = make_call("busy", rec, max_concurrent=1)
    other = make_call("other", rec, max_concurrent=1)
    async with open_scheduler(MemoryStore(), [busy, other], max_concurrent=5, clock=clock) as s:
        # Many busy calls are due first; the one 'other' call is due later.
        for i in range(10):
            await s.schedule(busy, {"tag": f"b{i}", "sleep": 100}, delay=0)
        await s.schedule(other, {"tag": "o", "sleep": 1}, delay=2)
        await trio.sleep(50)
        assert rec.start_time("o") == pytest.approx(2)
        assert rec.tags() == ["b0", "o"]
        await s.shutdown(grace_period=0)


async def test_earliest_due_runs_first_ties_in_scheduling_order(
    autojump_clock: MockClock,
    clock: Callable[[], datetime],
) -> None:
    rec = Recorder()
    a = make_call("a", rec, max_concurrent=None)
    b = make_call("b", rec, max_concurrent=None)
    store = MemoryStore()
    # Scheduled before any scheduler runs, all due by the time it starts.
    now = clock()
    for tag, cls, due in [
        ("t5", a, 5),
        ("t1", b, 1),
        ("t3a", a, 3),
        ("t3b", b, 3),
        ("t3c", a, 3),
        ("t2", a, 2),
    ]:
        await schedule_call(store, cls, {"tag": tag, "sleep": 1}, at=now + timedelta(seconds=due))
    await trio.sleep(10)
    async with open_scheduler(store, [a, b], max_concurrent=1, clock=clock):
        await trio.sleep(100)
    assert rec.tags() == ["t1", "t2", "t3a", "t3b", "t3c", "t5"]


async def test_dispatcher_sleeps_until_due_and_wakes_for_earlier_calls(
    autojump_clock: MockClock,
    clock: Callable[[], datetime],
) -> None:
    rec = Recorder()
    call = make_call("c", rec, max_concurrent=None)
    store = CountingStore()
    async with open_scheduler(store, [call], clock=clock) as s:
        start = trio.current_time()
        await s.schedule(call, {"tag": "late"}, delay=3600)
        await trio.sleep(10)
        await s.schedule(call, {"tag": "early"}, delay=5)
        await trio.sleep(7200)
    assert rec.tags() == ["early", "late"]
    assert rec.start_time("early") - start == pytest.approx(15)
    assert rec.start_time("late") - start == pytest.approx(3600)
    # No polling: two hours passed with only a handful of claims.
    assert store.claims < 20


async def test_queued_call_starts_the_moment_a_slot_frees(
    autojump_clock: MockClock, clock: Callable[[], datetime]
) -> None:
    rec = Recorder()
    call = make_call("one-at-a-time", rec, max_concurrent=1)
    async with open_scheduler(MemoryStore(), [call], clock=clock) as s:
        t0 = trio.current_time()
        await s.schedule(call, {"tag": 1, "sleep": 10}, delay=0)
        await s.schedule(call, {"tag": 2, "sleep": 10}, delay=0)
        await trio.sleep(30)
    assert rec.start_time(2) - t0 == pytest.approx(10)


async def test_cancel_by_id_and_by_identifier(
    autojump_clock: MockClock, clock: Callable[[], datetime]
) -> None:
    rec = Recorder()
    call = make_call("c", rec, max_concurrent=None)
    async with open_scheduler(MemoryStore(), [call], clock=clock) as s:
        keep = await s.schedule(call, {"tag": "keep"}, delay=10, identifier="user:1")
        drop = await s.schedule(call, {"tag": "drop"}, delay=10)
        for i in range(3):
            await s.schedule(call, {"tag": f"x{i}"}, delay=10, identifier="user:2")
        assert await s.cancel(drop) is CancelOutcome.PENDING
        assert await s.cancel(drop) is CancelOutcome.NOT_FOUND
        assert await s.cancel_identifier("user:2") == 3
        assert await s.cancel_identifier("user:2") == 0
        pending = await s.pending(identifier="user:1")
        assert [c.id for c in pending] == [keep]
        await trio.sleep(20)
    assert rec.tags() == ["keep"]


async def test_failing_call_is_logged_isolated_and_kept_as_dead_letter(
    autojump_clock: MockClock,
    clock: Callable[[], datetime],
    caplog: pytest.LogCaptureFixture,
) -> None:
    rec = Recorder()
    call = make_call("flaky", rec, max_concurrent=None)
    store = MemoryStore()
    async with open_scheduler(store, [call], clock=clock) as s:
        bad = await s.schedule(call, {"tag": "bad", "fail": True, "sleep": 1}, identifier="k")
        await s.schedule(call, {"tag": "good", "sleep": 2}, delay=0)
        await trio.sleep(10)
        stats = s.statistics().classes["flaky"]
    assert rec.tags("finished") == ["good"]
    assert (stats.started, stats.succeeded, stats.failed, stats.dead_lettered) == (2, 1, 1, 1)
    (record,) = [r for r in caplog.records if r.exc_info]
    assert record.name == "trio_futurecalls.call"
    assert record.levelno == logging.ERROR
    assert record.exc_info is not None
    assert "failed on purpose" in str(record.exc_info[1])
    assert getattr(record, "call_id") == bad  # noqa: B009
    assert getattr(record, "call_identifier") == "k"  # noqa: B009
    assert getattr(record, "call_name") == "flaky"  # noqa: B009
    assert getattr(record, "call_attempt") == 1  # noqa: B009
    assert "due" in record.getMessage()
    # max_attempts defaults to 1: the failed call is kept, with its traceback.
    (dead,) = await store.dead_letters()
    assert dead.call_id == bad
    assert dead.identifier == "k"
    assert "RuntimeError: call bad failed on purpose" in dead.error
    assert "Traceback" in dead.error


async def test_shutdown_drains_within_grace_then_cancels(
    autojump_clock: MockClock, clock: Callable[[], datetime]
) -> None:
    rec = Recorder()
    call = make_call("c", rec, max_concurrent=None)
    async with open_scheduler(MemoryStore(), [call], clock=clock) as s:
        await s.schedule(call, {"tag": "quick", "sleep": 10}, delay=0)
        await s.schedule(call, {"tag": "slow", "sleep": 100}, delay=0)
        await trio.sleep(1)
        t0 = trio.current_time()
        await s.shutdown(grace_period=20)
        assert trio.current_time() - t0 == pytest.approx(20)
        stats = s.statistics().classes["c"]
    assert rec.tags("finished") == ["quick"]
    assert (stats.succeeded, stats.cancelled) == (1, 1)
    assert rec.running["c"] == 0


async def test_shutdown_returns_early_when_calls_finish(
    autojump_clock: MockClock, clock: Callable[[], datetime]
) -> None:
    rec = Recorder()
    call = make_call("c", rec)
    async with open_scheduler(MemoryStore(), [call], clock=clock, grace_period=600) as s:
        await s.schedule(call, {"tag": 1, "sleep": 3}, delay=0)
        await trio.sleep(1)
        t0 = trio.current_time()
    assert trio.current_time() - t0 == pytest.approx(2)
    assert rec.tags("finished") == [1]


async def test_calls_not_started_remain_after_shutdown(
    autojump_clock: MockClock, clock: Callable[[], datetime]
) -> None:
    rec = Recorder()
    call = make_call("c", rec, max_concurrent=1)
    store = MemoryStore()
    async with open_scheduler(store, [call], clock=clock, grace_period=0) as s:
        ids = [await s.schedule(call, {"tag": i, "sleep": 50}, delay=0) for i in range(5)]
        future = await s.schedule(call, {"tag": "future"}, delay=3600)
        await trio.sleep(1)
    with pytest.raises(SchedulerClosedError):
        await s.schedule(call, {"tag": "after"}, delay=0)
    # The first call started (its row went at start) and was cancelled; nothing else ran.
    assert rec.tags() == [0]
    assert [c.id for c in await s.pending()] == [*ids[1:], future]


async def test_each_call_gets_its_own_session_closed_after(
    autojump_clock: MockClock, clock: Callable[[], datetime]
) -> None:
    rec = Recorder()
    call = make_call("c", rec, max_concurrent=None)
    store = MemoryStore()
    async with open_scheduler(store, [call], clock=clock) as s:
        for i in range(5):
            await s.schedule(call, {"tag": i, "sleep": 5}, delay=0)
        await trio.sleep(1)
        assert len(store.open_sessions) == 5
        await trio.sleep(10)
    assert len(rec.sessions) == 5
    assert all(session.closed for session in rec.sessions)
    assert not store.open_sessions


@attrs.frozen
class Point:
    x: int
    y: float
    label: str | None = None


class PointCall(FutureCall):
    name = "point"
    payload_type = Point
    seen: ClassVar[list[Point]] = []

    async def invoke(self, session: Any, payload: Point) -> None:
        PointCall.seen.append(payload)


async def test_attrs_payload_round_trips(
    autojump_clock: MockClock, clock: Callable[[], datetime]
) -> None:
    PointCall.seen = []
    async with open_scheduler(MemoryStore(), [PointCall], clock=clock) as s:
        await s.schedule(PointCall, Point(1, 2.5, "p"), delay=1)
        await trio.sleep(5)
    assert PointCall.seen == [Point(1, 2.5, "p")]


async def test_payload_that_no_longer_decodes_goes_to_dead_letters(
    autojump_clock: MockClock, clock: Callable[[], datetime], caplog: pytest.LogCaptureFixture
) -> None:
    PointCall.seen = []
    store = MemoryStore()
    now = clock()
    await store.schedule(
        [NewCall(name="point", payload='{"x": "one"}', due_at=now, scheduled_at=now)]
    )
    async with open_scheduler(store, [PointCall], clock=clock):
        await trio.sleep(5)
    assert PointCall.seen == []
    (dead,) = await store.dead_letters()
    assert dead.name == "point"
    assert "x" in dead.error
    assert any("dead letters" in r.getMessage() for r in caplog.records)


async def test_unknown_names_are_kept_and_reported_once(
    autojump_clock: MockClock, clock: Callable[[], datetime], caplog: pytest.LogCaptureFixture
) -> None:
    rec = Recorder()
    call = make_call("known", rec)
    store = MemoryStore()
    now = clock()
    await store.schedule(
        [NewCall(name="ghost", payload="null", due_at=now, scheduled_at=now) for _ in range(2)]
    )
    async with open_scheduler(store, [call], clock=clock, unknown_check_interval=60) as s:
        await trio.sleep(300)
        unknown = await s.unknown_calls()
    assert [c.name for c in unknown] == ["ghost", "ghost"]
    reports = [r for r in caplog.records if "ghost" in r.getMessage()]
    assert len(reports) == 1
    assert reports[0].levelno == logging.ERROR
    assert len(await store.pending(PendingQuery())) == 2


async def test_execute_false_only_schedules(
    autojump_clock: MockClock, clock: Callable[[], datetime]
) -> None:
    rec = Recorder()
    call = make_call("c", rec)
    store = MemoryStore()
    async with open_scheduler(store, [call], clock=clock, execute=False) as s:
        await s.schedule(call, {"tag": 1}, delay=0)
        await trio.sleep(100)
    assert rec.started == []
    assert len(await s.pending()) == 1


async def test_body_exception_propagates_unwrapped_after_graceful_drain(
    autojump_clock: MockClock,
    clock: Callable[[], datetime],
) -> None:
    rec = Recorder()
    call = make_call("c", rec)
    with pytest.raises(KeyError, match="from the body"):  # noqa: PT012 - the body is the test
        async with open_scheduler(MemoryStore(), [call], clock=clock, grace_period=60) as s:
            await s.schedule(call, {"tag": 1, "sleep": 5}, delay=0)
            await trio.sleep(1)
            raise KeyError("from the body")
    assert rec.tags("finished") == [1]


async def test_outer_cancellation_cancels_running_calls(
    autojump_clock: MockClock, clock: Callable[[], datetime]
) -> None:
    rec = Recorder()
    call = make_call("c", rec)
    with trio.move_on_after(5) as scope:
        async with open_scheduler(MemoryStore(), [call], clock=clock, grace_period=60) as s:
            await s.schedule(call, {"tag": 1, "sleep": 100}, delay=0)
            await trio.sleep(1000)
    assert scope.cancelled_caught
    assert rec.tags() == [1]
    assert rec.tags("finished") == []
    assert rec.running["c"] == 0


class CountingStore(MemoryStore):
    """A memory store that counts claims."""

    claims = 0

    async def claim(
        self, now: datetime, slots: Mapping[str, int], limit: int, lease: Lease | None = None
    ) -> Claim:
        self.claims += 1
        return await super().claim(now, slots, limit, lease)


class FlakyStore(MemoryStore):
    """A memory store whose claims fail the first ``failures`` times."""

    def __init__(self, failures: int, error: Exception) -> None:
        super().__init__()
        self.failures = failures
        self.error = error

    async def claim(
        self, now: datetime, slots: Mapping[str, int], limit: int, lease: Lease | None = None
    ) -> Claim:
        if self.failures:
            self.failures -= 1
            raise self.error
        return await super().claim(now, slots, limit, lease)


async def test_store_outage_is_retried_with_backoff(
    autojump_clock: MockClock, clock: Callable[[], datetime], caplog: pytest.LogCaptureFixture
) -> None:
    rec = Recorder()
    call = make_call("c", rec)
    store = FlakyStore(5, StoreUnavailableError("database down"))
    async with open_scheduler(store, [call], clock=clock) as s:
        await s.schedule(call, {"tag": 1}, delay=0)
        await trio.sleep(60)
    assert rec.tags("finished") == [1]
    assert store.failures == 0
    assert sum("database down" in r.getMessage() for r in caplog.records) == 5


async def test_unexpected_internal_error_is_one_library_error(
    autojump_clock: MockClock,
    clock: Callable[[], datetime],
) -> None:
    rec = Recorder()
    call = make_call("c", rec)
    store = FlakyStore(1, RuntimeError("bug in a store"))
    with pytest.raises(SchedulerError, match="bug in a store") as info:
        async with open_scheduler(store, [call], clock=clock):
            await trio.sleep(10)
    assert isinstance(info.value.__cause__, BaseExceptionGroup)


async def test_global_limit_from_environment(
    autojump_clock: MockClock, clock: Callable[[], datetime], monkeypatch: pytest.MonkeyPatch
) -> None:
    rec = Recorder()
    call = make_call("c", rec, max_concurrent=None)
    monkeypatch.setenv("TRIO_FUTURECALLS_MAX_CONCURRENT", "2")
    async with open_scheduler(MemoryStore(), [call], clock=clock) as s:
        assert s.max_concurrent == 2
        for i in range(6):
            await s.schedule(call, {"tag": i, "sleep": 1}, delay=0)
        await trio.sleep(10)
    assert rec.total_peak == 2
    monkeypatch.setenv("TRIO_FUTURECALLS_MAX_CONCURRENT", "unlimited")
    async with open_scheduler(MemoryStore(), [call], clock=clock) as s:
        assert s.max_concurrent is None
    monkeypatch.delenv("TRIO_FUTURECALLS_MAX_CONCURRENT")
    async with open_scheduler(MemoryStore(), [call], clock=clock) as s:
        assert s.max_concurrent == 100


async def test_schedule_many_in_one_batch(
    autojump_clock: MockClock, clock: Callable[[], datetime]
) -> None:
    rec = Recorder()
    call = make_call("c", rec, max_concurrent=None)
    async with open_scheduler(MemoryStore(), [call], clock=clock) as s:
        ids = await s.schedule_many(
            [(call, {"tag": i}, timedelta(seconds=i)) for i in range(3)]
            + [(call, {"tag": "at"}, clock() + timedelta(seconds=10))]
        )
        assert len(set(ids)) == 4
        await trio.sleep(20)
    assert rec.tags() == [0, 1, 2, "at"]


async def test_running_lists_calls_in_flight(
    autojump_clock: MockClock, clock: Callable[[], datetime]
) -> None:
    rec = Recorder()
    call = make_call("c", rec)
    async with open_scheduler(MemoryStore(), [call], clock=clock) as s:
        call_id = await s.schedule(call, {"tag": 1, "sleep": 10}, delay=0, identifier="i")
        await trio.sleep(1)
        (info,) = s.running()
        assert (info.id, info.name, info.identifier) == (call_id, "c", "i")
        await trio.testing.wait_all_tasks_blocked()
        assert s.statistics().classes["c"].running == 1
        await trio.sleep(20)
        assert s.running() == []


async def test_run_due_calls_runs_what_is_due_then_returns(
    autojump_clock: MockClock, clock: Callable[[], datetime]
) -> None:
    rec = Recorder()
    serial = make_call("serial", rec, max_concurrent=1)
    wide = make_call("wide", rec, max_concurrent=None)
    store = MemoryStore()
    for i in range(3):
        await schedule_call(store, serial, {"tag": f"s{i}", "sleep": 10}, clock=clock)
        await schedule_call(store, wide, {"tag": f"w{i}", "sleep": 5}, clock=clock)
    later = await schedule_call(store, wide, {"tag": "later"}, delay=60, clock=clock)
    t0 = trio.current_time()
    stats = await run_due_calls(store, [serial, wide], max_concurrent=10, clock=clock)
    # The serial class needs three rounds of 10 s; nothing due later was started.
    assert trio.current_time() - t0 == pytest.approx(30)
    assert sorted(rec.tags("finished")) == ["s0", "s1", "s2", "w0", "w1", "w2"]
    assert stats.classes["serial"].succeeded == 3
    assert stats.classes["wide"].succeeded == 3
    assert [c.id for c in await store.pending(PendingQuery())] == [later]


class SlowClaims(MemoryStore):
    """Claims that take ``seconds`` to answer (a store on a slow network)."""

    def __init__(self, seconds: float) -> None:
        super().__init__()
        self.seconds = seconds

    async def claim(
        self, now: datetime, slots: Mapping[str, int], limit: int, lease: Lease | None = None
    ) -> Claim:
        await trio.sleep(self.seconds)
        return await super().claim(now, slots, limit, lease)


async def test_run_due_calls_is_not_done_when_a_call_ends_during_a_claim(
    autojump_clock: MockClock, clock: Callable[[], datetime]
) -> None:
    rec = Recorder()
    serial = make_call("serial", rec, max_concurrent=1)
    other = make_call("other", rec, max_concurrent=None)
    store = SlowClaims(1.0)
    await schedule_call(store, serial, {"tag": "s1", "sleep": 1.0}, clock=clock)
    await schedule_call(store, serial, {"tag": "s2", "sleep": 1.0}, clock=clock)
    await schedule_call(store, other, {"tag": "o", "sleep": 0.5}, clock=clock)
    # 0-1: a claim takes s1 and o. o ends at 1.5: a claim (1.5-2.5) looks at "other"
    # only ("serial" is full), and s1 ends in the middle of it (2.0). Nothing is
    # running when it answers, but it never looked at "serial": s2 must still run.
    stats = await run_due_calls(store, [serial, other], clock=clock)
    assert sorted(rec.tags("finished")) == ["o", "s1", "s2"]
    assert stats.total.succeeded == 3


async def test_a_slot_freed_during_a_claim_is_used(
    autojump_clock: MockClock, clock: Callable[[], datetime]
) -> None:
    rec = Recorder()
    call = make_call("c", rec, max_concurrent=None)
    store = SlowClaims(1.0)
    for tag, sleep in [("a", 0.5), ("b", 1.2), ("c", 0.1), ("d", 0.1), ("e", 0.1)]:
        await schedule_call(store, call, {"tag": tag, "sleep": sleep}, clock=clock)
    async with open_scheduler(store, [call], max_concurrent=2, clock=clock):
        # 0-1: a claim takes a and b (the limit). a ends at 1.5: a claim (1.5-2.5) for
        # its one slot takes c. b ends at 2.2, during that claim, when no limiter is
        # full: the dispatcher must still look again once the claim answers.
        await trio.sleep(30)
    assert sorted(rec.tags("finished")) == ["a", "b", "c", "d", "e"]


async def test_run_due_calls_with_nothing_due_returns_at_once(
    autojump_clock: MockClock, clock: Callable[[], datetime]
) -> None:
    rec = Recorder()
    call = make_call("c", rec)
    t0 = trio.current_time()
    stats = await run_due_calls(MemoryStore(), [call], clock=clock)
    assert trio.current_time() == t0
    assert stats.classes["c"].started == 0


async def test_statistics_and_queue_lengths(
    autojump_clock: MockClock, clock: Callable[[], datetime]
) -> None:
    rec = Recorder()
    slow = make_call("slow", rec, max_concurrent=1)
    other = make_call("other", rec, max_concurrent=None)
    store = MemoryStore()
    now = clock()
    await store.schedule([NewCall(name="ghost", payload="null", due_at=now, scheduled_at=now)])
    async with open_scheduler(store, [slow, other], clock=clock) as s:
        for i in range(4):
            await s.schedule(slow, {"tag": i, "sleep": 10}, delay=0)
        await s.schedule(other, {"tag": "f", "fail": True, "sleep": 2}, delay=0)
        await s.schedule(other, {"tag": "later"}, delay=3600)
        await trio.sleep(1)
        lengths = await s.queue_lengths()
        assert lengths["slow"] == QueueLength(pending=3, due=3)  # one running, three waiting
        assert lengths["other"] == QueueLength(pending=1, due=0)
        assert lengths["ghost"] == QueueLength(pending=1, due=1)
        await trio.sleep(100)
        stats = s.statistics()
    slow_stats = stats.classes["slow"]
    assert (slow_stats.started, slow_stats.succeeded, slow_stats.finished) == (4, 4, 4)
    # Waits were 0, 10, 20 and 30 s; each run took 10 s.
    assert slow_stats.wait.count == 4
    assert slow_stats.wait.max == pytest.approx(30)
    assert slow_stats.average_wait_seconds == pytest.approx(15)
    assert slow_stats.run.p50 == pytest.approx(10)
    assert slow_stats.run.p99 == pytest.approx(10)
    assert stats.classes["other"].failed == 1
    assert stats.total.started == 5
    assert stats.total.run.count == 5
    assert stats.total.failed == 1
    assert stats.running == 0


def test_distribution_quantiles_interpolate_within_buckets() -> None:
    from trio_futurecalls._stats import Recorder as StatsRecorder

    recorder = StatsRecorder()
    assert recorder.snapshot().p50 is None
    for value in [0.002] * 50 + [0.2] * 49 + [4.0]:
        recorder.add(value)
    dist = recorder.snapshot()
    assert dist.count == 100
    p50 = dist.p50
    assert p50 is not None
    assert 0.001 <= p50 <= 0.0025
    p95 = dist.p95
    assert p95 is not None
    assert 0.1 <= p95 <= 0.25
    assert dist.quantile(1.0) == pytest.approx(4.0)
    with pytest.raises(ValueError, match="within"):
        dist.quantile(1.5)


async def test_exception_group_from_the_body_passes_through(
    autojump_clock: MockClock, clock: Callable[[], datetime]
) -> None:
    rec = Recorder()
    call = make_call("c", rec)

    async def fail() -> None:
        raise ValueError("inside the user's nursery")

    with pytest.raises(ExceptionGroup) as info:
        async with (
            open_scheduler(MemoryStore(), [call], clock=clock),
            trio.open_nursery() as nursery,
        ):
            nursery.start_soon(fail)
    assert not isinstance(info.value, SchedulerError)
    (leaf,) = info.value.exceptions
    assert isinstance(leaf, ValueError)

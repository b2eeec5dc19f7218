"""Pause, resume and set_limit on a running scheduler (memory store, autojump clock)."""

from __future__ import annotations

import math
from collections.abc import Callable
from datetime import datetime

import pytest
import trio
import trio.testing
from helpers import Recorder, make_call
from trio.testing import MockClock

from trio_futurecalls import (
    FutureCall,
    InvalidArgumentError,
    MemoryStore,
    PendingQuery,
    open_scheduler,
    run_due_calls,
)


async def test_paused_class_does_not_start_and_others_do(
    autojump_clock: MockClock, clock: Callable[[], datetime]
) -> None:
    rec = Recorder()
    a, b = make_call("a", rec), make_call("b", rec)
    store = MemoryStore()
    async with open_scheduler(store, [a, b], clock=clock) as s:
        assert await s.pause(a) is True
        assert await s.pause("a") is False  # by name, the same class: paused already
        for i in range(3):
            await s.schedule(a, {"tag": f"a{i}"})
            await s.schedule(b, {"tag": f"b{i}"})
        await trio.sleep(100)
        assert rec.tags("finished") == ["b0", "b1", "b2"]
        assert len(await store.pending(PendingQuery(name="a"))) == 3
        stats = s.statistics()
        assert stats.classes["a"].paused
        assert not stats.classes["b"].paused
        assert not stats.total.paused
        assert list(await s.paused()) == ["a"]
        await s.shutdown()


async def test_resume_starts_due_calls_at_once(
    autojump_clock: MockClock, clock: Callable[[], datetime]
) -> None:
    rec = Recorder()
    a = make_call("a", rec, max_concurrent=5)
    async with open_scheduler(MemoryStore(), [a], clock=clock) as s:
        await s.pause(a)
        for i in range(3):
            await s.schedule(a, {"tag": i, "sleep": 1}, delay=i)
        # The dispatcher sleeps with nothing to wait for (paused rows are not in
        # next_due); only the resume's wake-up can start them.
        await trio.sleep(3600)
        assert rec.started == []
        resumed_at = trio.current_time()
        assert await s.resume(a) is True
        assert await s.resume(a) is False
        await trio.testing.wait_all_tasks_blocked()
        assert [t for _, _, t in rec.started] == [resumed_at] * 3
        assert await s.paused() == {}
        assert not s.statistics().classes["a"].paused


async def test_running_calls_finish_when_their_class_is_paused(
    autojump_clock: MockClock, clock: Callable[[], datetime]
) -> None:
    rec = Recorder()
    a = make_call("a", rec, max_concurrent=2)
    store = MemoryStore()
    async with open_scheduler(store, [a], clock=clock) as s:
        await s.schedule(a, {"tag": "running", "sleep": 10})
        await s.schedule(a, {"tag": "queued", "sleep": 10}, delay=5)
        await trio.sleep(1)
        assert rec.running["a"] == 1
        await s.pause(a)
        await trio.sleep(100)
        assert rec.tags("finished") == ["running"]
        assert s.statistics().classes["a"].succeeded == 1
        assert [c.due_at for c in await store.pending(PendingQuery(name="a"))]


async def test_run_once_finishes_with_only_paused_calls_due(
    autojump_clock: MockClock, clock: Callable[[], datetime]
) -> None:
    rec = Recorder()
    a, b = make_call("a", rec), make_call("b", rec)
    store = MemoryStore()
    async with open_scheduler(store, [a, b], clock=clock, execute=False) as producer:
        await producer.pause(a)
        for i in range(2):
            await producer.schedule(a, {"tag": f"a{i}"})
            await producer.schedule(b, {"tag": f"b{i}", "sleep": 1})
    with trio.fail_after(60):
        stats = await run_due_calls(store, [a, b], clock=clock)
    assert stats.classes["b"].succeeded == 2
    assert stats.classes["a"].started == 0
    assert stats.classes["a"].paused
    assert len(await store.pending(PendingQuery(name="a"))) == 2
    # Only paused calls due: it still ends at once.
    with trio.fail_after(60):
        stats = await run_due_calls(store, [a, b], clock=clock)
    assert stats.total.started == 0


async def test_a_pause_made_elsewhere_shows_in_statistics(
    autojump_clock: MockClock, clock: Callable[[], datetime]
) -> None:
    rec = Recorder()
    a = make_call("a", rec)
    store = MemoryStore()
    async with open_scheduler(store, [a], clock=clock, unknown_check_interval=30) as s:
        await trio.testing.wait_all_tasks_blocked()
        await store.pause("a", clock())  # another worker, or the CLI
        assert not s.statistics().classes["a"].paused
        await s.queue_lengths()  # (the metrics read it before each scrape)
        assert s.statistics().classes["a"].paused
        await store.resume("a")
        await trio.sleep(31)  # and it is read every unknown_check_interval
        assert not s.statistics().classes["a"].paused


async def test_pause_of_a_class_not_registered_here(
    autojump_clock: MockClock, clock: Callable[[], datetime]
) -> None:
    """Another deployment may run it: any valid name or FutureCall class is paused."""
    rec = Recorder()
    a, other = make_call("a", rec), make_call("other", rec)
    store = MemoryStore()
    async with open_scheduler(store, [a], clock=clock) as s:
        assert await s.pause(other)
        assert await s.pause("elsewhere.job")
        assert list(await store.paused()) == ["elsewhere.job", "other"]
        assert "other" not in s.statistics().classes


@pytest.mark.parametrize("bad", ["", "1abc", "has space", "n" * 201, 3, None, object, FutureCall])
async def test_pause_and_resume_refuse_bad_classes(
    autojump_clock: MockClock, clock: Callable[[], datetime], bad: object
) -> None:
    store = MemoryStore()
    async with open_scheduler(store, [], clock=clock) as s:
        with pytest.raises(InvalidArgumentError):
            await s.pause(bad)  # type: ignore[arg-type]
        with pytest.raises(InvalidArgumentError):
            await s.resume(bad)  # type: ignore[arg-type]
    assert await store.paused() == {}


async def test_raising_a_class_limit_fills_the_new_slots_at_once(
    autojump_clock: MockClock, clock: Callable[[], datetime]
) -> None:
    rec = Recorder()
    a = make_call("a", rec, max_concurrent=1)
    async with open_scheduler(MemoryStore(), [a], clock=clock) as s:
        for i in range(6):
            await s.schedule(a, {"tag": i, "sleep": 10})
        await trio.sleep(1)
        assert rec.running["a"] == 1
        raised_at = trio.current_time()
        s.set_limit(a, 3)
        await trio.testing.wait_all_tasks_blocked()
        assert rec.running["a"] == 3
        assert [t for _, tag, t in rec.started if tag in (1, 2)] == [raised_at] * 2
        assert s.statistics().classes["a"].max_concurrent == 3
        # Lowering cancels nothing: the three run on, and no call starts until
        # fewer than the new limit run.
        s.set_limit("a", 1)
        await trio.testing.wait_all_tasks_blocked()
        assert rec.running["a"] == 3
        await trio.sleep(9.5)  # the first ends at 10 s: still two, above the limit
        assert rec.running["a"] == 2
        await trio.sleep(1)  # the other two end at 11 s: one starts then
        assert rec.running["a"] == 1
        assert rec.start_time(3) == 11
        assert s.statistics().classes["a"].cancelled == 0
        s.set_limit(a, None)  # unlimited: the two left start at once
        await trio.testing.wait_all_tasks_blocked()
        assert rec.running["a"] == 3
        assert s.statistics().classes["a"].max_concurrent is None
        await trio.sleep(100)
    assert len(rec.finished) == 6
    assert rec.peak["a"] == 3


async def test_the_global_limit_changes_at_run_time(
    autojump_clock: MockClock, clock: Callable[[], datetime]
) -> None:
    rec = Recorder()
    calls = [make_call(f"c{i}", rec, max_concurrent=None) for i in range(2)]
    async with open_scheduler(MemoryStore(), calls, max_concurrent=2, clock=clock) as s:
        for i in range(10):
            await s.schedule(calls[i % 2], {"tag": i, "sleep": 10})
        await trio.sleep(1)
        assert rec.total_running == 2
        s.set_limit(None, 5)
        await trio.testing.wait_all_tasks_blocked()
        assert rec.total_running == 5
        assert s.max_concurrent == 5
        stats = s.statistics()
        assert stats.max_concurrent == stats.total.max_concurrent == 5
        s.set_limit(None, 1)
        await trio.testing.wait_all_tasks_blocked()
        assert rec.total_running == 5  # none cancelled
        await trio.sleep(9.5)  # two end at 10 s: three run, above the limit
        assert rec.total_running == 3
        await trio.sleep(1)  # the other three end at 11 s: one starts then
        assert rec.total_running == 1
        s.set_limit(None, None)
        await trio.testing.wait_all_tasks_blocked()
        assert rec.total_running == 5  # the four left join the one running
        assert s.statistics().max_concurrent is None
        await trio.sleep(100)
    assert len(rec.finished) == 10
    assert s.statistics().total.cancelled == 0


@pytest.mark.parametrize("limit", [0, -1, True, 1.5, "2", math.inf])
async def test_set_limit_refuses_bad_limits(
    autojump_clock: MockClock, clock: Callable[[], datetime], limit: object
) -> None:
    a = make_call("a", Recorder(), max_concurrent=2)
    async with open_scheduler(MemoryStore(), [a], max_concurrent=7, clock=clock) as s:
        for target in (a, "a", None):
            with pytest.raises(InvalidArgumentError):
                s.set_limit(target, limit)  # type: ignore[arg-type]
        stats = s.statistics()
        assert (stats.max_concurrent, stats.classes["a"].max_concurrent) == (7, 2)


async def test_set_limit_refuses_classes_not_registered_here(
    autojump_clock: MockClock, clock: Callable[[], datetime]
) -> None:
    rec = Recorder()
    a, other = make_call("a", rec), make_call("other", rec)
    twin = make_call("a", rec)  # the same name, another class
    async with open_scheduler(MemoryStore(), [a], clock=clock) as s:
        for target in ("other", other, twin, "", 5, FutureCall):
            with pytest.raises(InvalidArgumentError):
                s.set_limit(target, 3)  # type: ignore[arg-type]
        assert s.statistics().classes["a"].max_concurrent == 1


async def test_metrics_show_paused_classes(
    autojump_clock: MockClock, clock: Callable[[], datetime]
) -> None:
    pytest.importorskip("prometheus_client")
    from trio_futurecalls.metrics import SchedulerCollector

    rec = Recorder()
    a, b = make_call("a", rec), make_call("b", rec)
    store = MemoryStore()
    async with open_scheduler(store, [a, b], clock=clock) as s:
        collector = SchedulerCollector(s)
        await store.pause("b", clock())  # elsewhere: the scrape's refresh reads it
        assert await collector.refresh_queue_lengths()
        (family,) = [m for m in collector.collect() if m.name == "futurecalls_class_paused"]
        assert {x.labels["call_class"]: x.value for x in family.samples} == {"a": 0.0, "b": 1.0}

"""Priorities through the engine: the order calls start in, and the API that sets them."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

import pytest
import trio
from helpers import Recorder, make_call
from trio.testing import MockClock

from trio_futurecalls import (
    MAX_PRIORITY,
    MIN_PRIORITY,
    CallRequest,
    FutureCall,
    InvalidArgumentError,
    MemoryStore,
    PendingQuery,
    open_scheduler,
    schedule_call,
)


def with_priority(cls: type[FutureCall], priority: int) -> type[FutureCall]:
    sub: type[FutureCall] = type(cls.__name__ + "_p", (cls,), {"priority": priority})
    return sub


async def test_priorities_order_starts_under_a_global_limit_of_1(
    autojump_clock: MockClock, clock: Callable[[], datetime]
) -> None:
    rec = Recorder()
    a = with_priority(make_call("a", rec, max_concurrent=None), 5)
    b = make_call("b", rec, max_concurrent=None)
    store = MemoryStore()
    now = clock()
    # All due before the scheduler starts: class priority, per-call overrides, then
    # due time, then scheduling order.
    for tag, cls, due, priority in [
        ("b-0-late", b, 4, None),
        ("a-5-late", a, 3, None),
        ("b-9", b, 5, 9),
        ("a-5-early", a, 1, None),
        ("b-0-early", b, 1, None),
        ("a-neg", a, 0, -1),
        ("b-0-tie", b, 1, None),
        ("future-top", b, 30, MAX_PRIORITY),
    ]:
        await schedule_call(
            store,
            cls,
            {"tag": tag, "sleep": 1},
            at=now + timedelta(seconds=due),
            priority=priority,
        )
    await trio.sleep(10)
    async with open_scheduler(store, [a, b], max_concurrent=1, clock=clock):
        await trio.sleep(100)
    assert rec.tags() == [
        "b-9",
        "a-5-early",
        "a-5-late",
        "b-0-early",
        "b-0-tie",
        "b-0-late",
        "a-neg",
        "future-top",
    ]
    starts = [t for _, _, t in rec.started]
    # One at a time, each the moment the previous ended (the last when it fell due).
    assert starts[:7] == [starts[0] + k for k in range(7)]
    assert starts[7] == pytest.approx(30.0 + starts[0] - 10.0)


async def test_a_high_priority_call_of_a_saturated_class_does_not_block_others(
    autojump_clock: MockClock, clock: Callable[[], datetime]
) -> None:
    rec = Recorder()
    busy = with_priority(make_call("busy", rec, max_concurrent=1), MAX_PRIORITY)
    other = with_priority(make_call("other", rec, max_concurrent=1), MIN_PRIORITY)
    async with open_scheduler(MemoryStore(), [busy, other], max_concurrent=5, clock=clock) as s:
        await s.schedule(busy, {"tag": "b0", "sleep": 50})
        await trio.sleep(1)
        await s.schedule(busy, {"tag": "b1", "sleep": 1})
        await s.schedule(other, {"tag": "o", "sleep": 1})
        await trio.sleep(5)
        assert rec.tags() == ["b0", "o"]
        await s.shutdown(grace_period=0)


async def test_schedule_schedule_many_and_schedule_call_set_the_priority(
    autojump_clock: MockClock, clock: Callable[[], datetime]
) -> None:
    rec = Recorder()
    a = with_priority(make_call("a", rec), 7)
    store = MemoryStore()
    async with open_scheduler(store, [a], clock=clock, execute=False) as s:
        first = await s.schedule(a, delay=10)
        second = await s.schedule(a, delay=10, priority=-3)
        third, fourth, fifth = await s.schedule_many(
            [
                (a, None, 10),
                CallRequest(call_class=a, delay=10, priority=MAX_PRIORITY),
                CallRequest(call_class=a, payload={"tag": "x"}, delay=10, identifier="i"),
            ]
        )
        sixth = await schedule_call(store, a, delay=10, priority=0)
        listed = {c.id: c.priority for c in await store.pending(PendingQuery())}
        assert listed == {
            first: 7,
            second: -3,
            third: 7,
            fourth: MAX_PRIORITY,
            fifth: 7,
            sixth: 0,
        }
        await s.shutdown(grace_period=0)


@pytest.mark.parametrize("bad", [MAX_PRIORITY + 1, MIN_PRIORITY - 1, True, 1.5, "3"])
async def test_bad_priorities_raise_at_the_call_site(
    autojump_clock: MockClock, clock: Callable[[], datetime], bad: Any
) -> None:
    rec = Recorder()
    a = make_call("a", rec)
    store = MemoryStore()
    async with open_scheduler(store, [a], clock=clock, execute=False) as s:
        with pytest.raises(InvalidArgumentError, match="priority must be an int"):
            await s.schedule(a, priority=bad)
        with pytest.raises(InvalidArgumentError, match="priority must be an int"):
            await s.schedule_many([(a, None, 0), CallRequest(call_class=a, priority=bad)])
        with pytest.raises(InvalidArgumentError, match="priority must be an int"):
            await schedule_call(store, a, priority=bad)
        assert await store.pending(PendingQuery()) == []
        await s.shutdown(grace_period=0)
    with pytest.raises(InvalidArgumentError, match=r"\.priority must be an int"):
        with_priority(a, bad)

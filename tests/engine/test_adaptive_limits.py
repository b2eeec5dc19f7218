"""Adaptive limits in a running scheduler (memory store, autojump clock): a simulated
downstream makes the limit converge near its capacity and follow it when it changes;
statistics, metrics and set_limit show and change the limits."""

from __future__ import annotations

import math
from collections.abc import Callable
from datetime import datetime
from typing import Any

import trio
import trio.testing
from prometheus_client.core import Metric
from trio.testing import MockClock

from trio_futurecalls import Adaptive, FutureCall, MemoryStore, open_scheduler
from trio_futurecalls._adaptive_limits import AdaptiveLimits
from trio_futurecalls._outcome import Outcome
from trio_futurecalls._slots import Slots
from trio_futurecalls.metrics import SchedulerCollector

BASE = 0.020


class Downstream:
    """A service that serves ``capacity`` requests at once in BASE seconds, queues the
    rest (latency grows linearly beyond) and hangs (the caller times out) past
    ``fail_past`` requests at once."""

    def __init__(self, capacity: int, fail_past: int) -> None:
        self.capacity = capacity
        self.fail_past = fail_past
        self.in_flight = 0
        self.peak = 0
        self.served = 0

    async def request(self) -> None:
        self.in_flight += 1
        self.peak = max(self.peak, self.in_flight)
        try:
            if self.in_flight > self.fail_past:
                await trio.sleep_forever()
            await trio.sleep(BASE * max(1.0, self.in_flight / self.capacity))
            self.served += 1
        finally:
            self.in_flight -= 1


def partner_call(downstream: Downstream, limit: Any, *, name: str = "partner") -> type[FutureCall]:
    class Partner(FutureCall):
        max_concurrent = limit
        timeout = 1.0

        async def invoke(self, session: Any, payload: Any) -> None:
            await downstream.request()

    Partner.name = name
    return Partner


async def watch(seconds: float, read: Callable[[], int | None], every: float = 0.5) -> list[int]:
    """``read()`` (a limit, never unlimited here) every ``every`` seconds for ``seconds``."""
    seen = []
    for _ in range(int(seconds / every)):
        await trio.sleep(every)
        value = read()
        assert value is not None
        seen.append(value)
    return seen


async def test_a_class_limit_converges_near_capacity_and_follows_it(
    autojump_clock: MockClock, clock: Callable[[], datetime]
) -> None:
    downstream = Downstream(capacity=8, fail_past=32)
    partner = partner_call(downstream, Adaptive(1, 64))
    async with open_scheduler(MemoryStore(), [partner], clock=clock) as s:
        assert s.statistics().classes["partner"].current_limit == 1
        await s.schedule_many([(partner, None, 0.0)] * 20_000)

        def current() -> int | None:
            return s.statistics().classes["partner"].current_limit

        first = await watch(10, current)
        served = downstream.served
        steady = await watch(10, current)
        # Settled within 10 s, where throughput is best (the downstream's capacity,
        # no timeouts): 8 to 32 calls at once serve 400 calls/s.
        assert all(8 <= limit <= 32 for limit in steady), first
        assert downstream.served - served >= 0.9 * 400 * 10
        assert max(first + steady) <= 32
        stats = s.statistics().classes["partner"]
        assert stats.max_concurrent == 64
        assert stats.failed == stats.cancelled == 0

        # Capacity halves (and the downstream hangs past 16): the limit follows it
        # down, lowering the limit cancelled no call.
        downstream.capacity, downstream.fail_past = 4, 16
        halved = await watch(15, current)
        assert all(4 <= limit <= 16 for limit in halved[-10:]), halved
        # And back up.
        downstream.capacity, downstream.fail_past = 8, 32
        restored = await watch(15, current)
        assert all(8 <= limit <= 32 for limit in restored[-10:]), restored
        assert s.statistics().classes["partner"].cancelled == 0
        await s.shutdown(0)


async def test_a_global_adaptive_limit_converges_over_several_classes(
    autojump_clock: MockClock, clock: Callable[[], datetime]
) -> None:
    downstream = Downstream(capacity=8, fail_past=32)
    a = partner_call(downstream, None, name="a")
    b = partner_call(downstream, None, name="b")
    async with open_scheduler(
        MemoryStore(), [a, b], clock=clock, max_concurrent=Adaptive(2, 100)
    ) as s:
        await s.schedule_many([(a, None, 0.0), (b, None, 0.0)] * 10_000)
        limits = await watch(20, lambda: s.statistics().total.current_limit)
        assert all(8 <= limit <= 32 for limit in limits[-10:]), limits
        stats = s.statistics()
        assert stats.max_concurrent == s.max_concurrent == 100
        assert stats.total.max_concurrent == 100
        assert stats.classes["a"].current_limit is None  # unlimited, not adaptive
        assert stats.total.failed == 0
        await s.shutdown(0)


async def test_statistics_show_current_limits_of_fixed_and_adaptive_classes(
    autojump_clock: MockClock, clock: Callable[[], datetime]
) -> None:
    downstream = Downstream(capacity=8, fail_past=32)
    fixed = partner_call(downstream, 5, name="fixed")
    free = partner_call(downstream, None, name="free")
    adaptive = partner_call(downstream, Adaptive(3, 40, initial=6), name="adaptive")
    async with open_scheduler(
        MemoryStore(), [fixed, free, adaptive], clock=clock, max_concurrent=50
    ) as s:
        stats = s.statistics()
        assert (stats.classes["fixed"].max_concurrent, stats.classes["fixed"].current_limit) == (
            5,
            5,
        )
        assert stats.classes["free"].max_concurrent is None
        assert stats.classes["free"].current_limit is None
        assert stats.classes["adaptive"].max_concurrent == 40
        assert stats.classes["adaptive"].current_limit == 6
        assert (stats.total.max_concurrent, stats.total.current_limit) == (50, 50)

        # The Prometheus collector shows both.
        metrics = {m.name: m for m in SchedulerCollector(s).collect()}
        assert _sample(metrics["futurecalls_concurrency_current_limit"], "adaptive") == 6
        assert _sample(metrics["futurecalls_concurrency_current_limit"], "fixed") == 5
        assert _sample(metrics["futurecalls_concurrency_current_limit"], "free") == math.inf
        assert _sample(metrics["futurecalls_concurrency_limit"], "adaptive") == 40
        assert metrics["futurecalls_global_concurrency_current_limit"].samples[0].value == 50
        await s.shutdown()


def _sample(metric: Metric, call_class: str) -> float:
    return next(x.value for x in metric.samples if x.labels.get("call_class") == call_class)


async def test_set_limit_fixes_an_adaptive_limit_or_makes_one(
    autojump_clock: MockClock, clock: Callable[[], datetime]
) -> None:
    downstream = Downstream(capacity=8, fail_past=32)
    partner = partner_call(downstream, Adaptive(1, 64))
    async with open_scheduler(MemoryStore(), [partner], clock=clock) as s:
        await s.schedule_many([(partner, None, 0.0)] * 20_000)
        await trio.sleep(5)
        assert (s.statistics().classes["partner"].current_limit or 0) > 1
        # An int fixes it: adaptation stops, statistics show the int.
        s.set_limit(partner, 3)
        limits = await watch(5, lambda: s.statistics().classes["partner"].current_limit)
        assert set(limits) == {3}
        assert s.statistics().classes["partner"].max_concurrent == 3
        # An Adaptive makes it adaptive again, from the limit in force.
        s.set_limit("partner", Adaptive(2, 20))
        stats = s.statistics().classes["partner"]
        assert (stats.current_limit, stats.max_concurrent) == (3, 20)
        limits = await watch(10, lambda: s.statistics().classes["partner"].current_limit)
        assert max(limits) > 3
        assert max(limits) <= 20
        # The global limit too.
        s.set_limit(None, Adaptive(4, 8))
        assert s.statistics().total.current_limit == 8  # 100 clamped into 4..8
        assert s.max_concurrent == 8
        await s.shutdown(0)


async def test_a_scheduler_with_fixed_limits_starts_adapting_when_set_limit_says(
    autojump_clock: MockClock, clock: Callable[[], datetime]
) -> None:
    downstream = Downstream(capacity=8, fail_past=32)
    partner = partner_call(downstream, 1)
    async with open_scheduler(MemoryStore(), [partner], clock=clock) as s:
        await s.schedule_many([(partner, None, 0.0)] * 10_000)
        await trio.sleep(2)
        s.set_limit(partner, Adaptive(1, 64))
        limits = await watch(10, lambda: s.statistics().classes["partner"].current_limit)
        assert all(8 <= limit <= 32 for limit in limits[-6:]), limits
        await s.shutdown(0)


async def test_event_loop_lag_lowers_every_adaptive_limit() -> None:
    slots = Slots(40, {"a": 20, "b": 5, "c": 3})
    limits = AdaptiveLimits(
        slots,
        Adaptive(1, 64, initial=40),
        {"a": Adaptive(1, 64, initial=20), "b": 5, "c": Adaptive(3, 9)},
    )
    # Enough calls of "a" end for a window (as many as its limit); none of the others.
    for _ in range(20):
        limits.observe("a", BASE, Outcome.SUCCEEDED)
    # Half a second of probes, each woken 250 ms late.
    for i in range(10):
        limits.probe(0.25, i * 0.05)
    limits.tick(0.45)  # not yet half a second of probes: lag is not judged yet
    assert (slots.limit(None), slots.limit("a")) == (40, 20)
    limits.tick(0.5)
    assert slots.limit(None) == 28  # 40 * 0.7
    assert slots.limit("a") == 14  # 20 * 0.7
    assert slots.limit("b") == 5  # fixed: untouched
    assert slots.limit("c") == 3  # at its min already
    # Judged once per half second, not at every tick.
    limits.tick(0.6)
    assert (slots.limit(None), slots.limit("a")) == (28, 14)
    # A calm loop changes nothing.
    for i in range(10):
        limits.probe(0.0, 1 + i * 0.05)
    limits.tick(1.5)
    assert (slots.limit(None), slots.limit("a")) == (28, 14)


async def test_cancellations_and_undecodable_payloads_are_not_load_signals() -> None:
    slots = Slots(None, {"a": 8})
    limits = AdaptiveLimits(slots, None, {"a": Adaptive(1, 64, initial=8)})
    for outcome in (Outcome.CANCELLED, Outcome.UNDECODABLE, Outcome.FAILED_FOR_GOOD) * 5:
        limits.observe("a", 5.0, outcome)
    limits.tick(1.0)
    assert slots.limit("a") == 8
    for _ in range(10):
        limits.observe("a", 1.0, Outcome.TIMED_OUT)
    limits.tick(2.0)
    assert slots.limit("a") == 5  # 8 * 0.7


async def test_the_workers_registry_records_adaptive_limits(
    autojump_clock: MockClock, clock: Callable[[], datetime]
) -> None:
    partner = partner_call(Downstream(capacity=8, fail_past=32), Adaptive(2, 30))
    async with open_scheduler(
        MemoryStore(), [partner], clock=clock, max_concurrent=Adaptive(5, 50)
    ) as s:
        (me,) = await s.workers()
        assert me.limits == {
            "max_concurrent": 50,
            "adaptive": {"min": 5, "max": 50},
            "classes": {
                "partner": {
                    "max_concurrent": 30,
                    "adaptive": {"min": 2, "max": 30},
                    "delivery": "at_most_once",
                }
            },
        }


async def test_a_lagging_event_loop_lowers_the_limits_of_a_running_scheduler(
    autojump_clock: MockClock, clock: Callable[[], datetime]
) -> None:
    partner = partner_call(Downstream(capacity=8, fail_past=32), Adaptive(2, 64, initial=32))
    async with open_scheduler(
        MemoryStore(), [partner], clock=clock, max_concurrent=Adaptive(1, 100, initial=40)
    ) as s:
        await trio.sleep(2)
        assert s.statistics().classes["partner"].current_limit == 32  # a calm loop
        # The loop stalls: each jump of the clock wakes every sleeper 0.3 s late.
        for _ in range(40):
            autojump_clock.jump(0.3)
            await trio.sleep(0.01)
        stats = s.statistics()
        assert stats.classes["partner"].current_limit == 2  # down to its min
        assert stats.total.current_limit == 1
        assert stats.classes["partner"].max_concurrent == 64

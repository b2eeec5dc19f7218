"""Cluster-wide limits in the engine, on the memory store (its process is the cluster):
several schedulers on one store obey one limit; rate limits spread starts; limits are
recorded at start (the last value set wins, with a warning); tokens go back when calls
end, fail or are handed back at shutdown; a lapse stops the calls holding slots.

Autojump clock throughout: the times asserted are exact.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any, ClassVar

import pytest
import trio
from trio.testing import MockClock

from trio_futurecalls import (
    ALL_CLASSES,
    ClusterLimit,
    Delivery,
    FutureCall,
    MemoryStore,
    RateLimit,
    StoreUnavailableError,
    open_scheduler,
    run_due_calls,
)


class Probe:
    """What the calls of a test did (time in Trio seconds since the test began)."""

    running = 0
    peak = 0
    starts: ClassVar[list[float]] = []
    ends: ClassVar[list[float]] = []
    t0 = 0.0

    @classmethod
    def reset(cls) -> None:
        cls.running = cls.peak = 0
        cls.starts = []
        cls.ends = []
        cls.t0 = 0.0  # (each test's Trio clock starts at 0)


@pytest.fixture(autouse=True)
def _probe() -> None:
    Probe.reset()


class Limited(FutureCall):
    name = "limited"
    max_concurrent = 10
    cluster_max_concurrent = 2

    async def invoke(self, session: Any, payload: Any) -> None:
        Probe.running += 1
        Probe.peak = max(Probe.peak, Probe.running)
        Probe.starts.append(trio.current_time() - Probe.t0)
        try:
            await trio.sleep(1)
        finally:
            Probe.running -= 1
            Probe.ends.append(trio.current_time() - Probe.t0)


class Rated(FutureCall):
    name = "rated"
    max_concurrent = None
    rate_limit = RateLimit(3, per=timedelta(seconds=10))

    async def invoke(self, session: Any, payload: Any) -> None:
        Probe.starts.append(trio.current_time() - Probe.t0)


class Free(FutureCall):
    name = "free"
    max_concurrent = 10

    async def invoke(self, session: Any, payload: Any) -> None:
        Probe.starts.append(trio.current_time() - Probe.t0)
        await trio.sleep(1)


async def wait_for(predicate: Callable[[], bool]) -> None:
    while not predicate():  # noqa: ASYNC110 - autojump clock: each sleep is instant
        await trio.sleep(0.01)


async def test_schedulers_on_one_store_share_the_limit(
    autojump_clock: MockClock, clock: Callable[[], datetime]
) -> None:
    """Three schedulers that may each run one call at a time: without the shared
    limit 3 would run at once; with it, 2, so at least two schedulers take part.
    (Which ones get each freed token is up to Trio's scheduling order: asserting
    that a given one did was a flaky test.)"""
    store = MemoryStore()
    async with (
        open_scheduler(store, [Limited], clock=clock, max_concurrent=1) as a,
        open_scheduler(store, [Limited], clock=clock, max_concurrent=1) as b,
        open_scheduler(store, [Limited], clock=clock, max_concurrent=1) as c,
    ):
        await a.schedule_many([(Limited, None, 0)] * 10)
        await wait_for(lambda: len(Probe.ends) == 10)
        ran = [s.statistics().classes["limited"].succeeded for s in (a, b, c)]
    assert Probe.peak == 2
    assert sum(ran) == 10
    assert sum(1 for n in ran if n) >= 2
    # Two at a time, one second each, and a freed slot is taken at once: 5 s.
    assert max(Probe.ends) == pytest.approx(5, abs=0.05)
    assert await store.cluster_limits() == [
        ClusterLimit(
            kind="concurrency",
            name="limited",
            tokens=2,
            set_at=(await store.cluster_limits())[0].set_at,
            set_by=(await store.cluster_limits())[0].set_by,
        )
    ]


async def test_the_limit_on_all_classes(
    autojump_clock: MockClock, clock: Callable[[], datetime]
) -> None:
    store = MemoryStore()
    async with open_scheduler(store, [Free], clock=clock, cluster_max_concurrent=3) as s:
        await s.schedule_many([(Free, None, 0)] * 6)
        await wait_for(lambda: len(Probe.starts) == 6)
    assert sorted(Probe.starts) == pytest.approx([0, 0, 0, 1, 1, 1], abs=0.05)
    (limit,) = await store.cluster_limits()
    assert (limit.name, limit.tokens) == (ALL_CLASSES, 3)


async def test_a_rate_limit_spreads_starts(
    autojump_clock: MockClock, clock: Callable[[], datetime]
) -> None:
    store = MemoryStore()
    async with open_scheduler(store, [Rated], clock=clock) as s:
        await s.schedule_many([(Rated, None, 0)] * 7)
        await wait_for(lambda: len(Probe.starts) == 7)
    # Three per 10 s window, each as soon as the window allows (no polling delay).
    assert Probe.starts == pytest.approx([0, 0, 0, 10, 10, 10, 20], abs=0.05)


async def test_the_last_value_set_wins_and_is_logged(
    autojump_clock: MockClock, clock: Callable[[], datetime], caplog: pytest.LogCaptureFixture
) -> None:
    store = MemoryStore()
    async with open_scheduler(store, [Free], clock=clock, cluster_max_concurrent=5):
        await trio.sleep(1)
    async with open_scheduler(store, [Free], clock=clock, cluster_max_concurrent=4):
        await trio.sleep(1)
    (limit,) = await store.cluster_limits()
    assert limit.tokens == 4
    assert "cluster-wide limit of all classes: 5 at once" in caplog.text
    # A scheduler that sets none leaves the stored limit as it is.
    async with open_scheduler(store, [Free], clock=clock):
        await trio.sleep(1)
    assert [lim.tokens for lim in await store.cluster_limits()] == [4]


async def test_tokens_go_back_when_calls_fail(
    autojump_clock: MockClock, clock: Callable[[], datetime]
) -> None:
    class Failing(FutureCall):
        name = "failing"
        max_concurrent = 5
        cluster_max_concurrent = 1

        async def invoke(self, session: Any, payload: Any) -> None:
            Probe.starts.append(trio.current_time() - Probe.t0)
            raise ValueError("no")

    store = MemoryStore()
    async with open_scheduler(store, [Failing], clock=clock) as s:
        await s.schedule_many([(Failing, None, 0)] * 3)
        await wait_for(lambda: len(Probe.starts) == 3)
    assert len(await store.dead_letters()) == 3
    assert all(t.call_id is None for t in store._cluster._tokens[("concurrency", "failing")])


@pytest.mark.parametrize("delivery", [Delivery.AT_MOST_ONCE, Delivery.AT_LEAST_ONCE])
async def test_shutdown_frees_the_tokens_of_every_call(
    autojump_clock: MockClock, clock: Callable[[], datetime], delivery: Delivery
) -> None:
    store = MemoryStore()
    async with open_scheduler(
        store, [Limited], clock=clock, grace_period=0.5, default_delivery=delivery
    ) as s:
        await s.schedule_many([(Limited, None, 0)] * 4)
        await wait_for(lambda: Probe.running == 2)
    # Interrupted at shutdown: the slots are free for the next worker.
    assert all(t.call_id is None for t in store._cluster._tokens[("concurrency", "limited")])
    async with open_scheduler(store, [Limited], clock=clock) as s:
        await wait_for(lambda: len(Probe.ends) >= 4)
    assert Probe.peak == 2


async def test_a_lapse_stops_the_calls_holding_slots(
    autojump_clock: MockClock, clock: Callable[[], datetime], caplog: pytest.LogCaptureFixture
) -> None:
    class Down(MemoryStore):
        down = False

        async def heartbeat(self, *args: Any) -> bool:
            if self.down:
                raise StoreUnavailableError("cut off")
            return await super().heartbeat(*args)

    class Long(FutureCall):
        name = "long"
        max_concurrent = 2
        cluster_max_concurrent = 2

        async def invoke(self, session: Any, payload: Any) -> None:
            Probe.starts.append(trio.current_time() - Probe.t0)
            await trio.sleep(1000)

    store = Down()
    async with open_scheduler(store, [Long, Free], clock=clock, worker_timeout=30) as s:
        await s.schedule_many([(Long, None, 0), (Free, None, 0)])
        await wait_for(lambda: len(Probe.starts) == 2)
        store.down = True
        await trio.sleep(40)
        # The slot-holding call was stopped before the store would count this worker
        # dead (27 s after its last heartbeat); the unlimited one ran on.
        stats = s.statistics().classes
        assert s.running() == []
        assert stats["free"].succeeded == 1
        store.down = False
    assert "lost its cluster-wide slot" in caplog.text


async def test_run_once_obeys_the_limits(
    autojump_clock: MockClock, clock: Callable[[], datetime]
) -> None:
    store = MemoryStore()
    async with open_scheduler(store, [Limited], clock=clock, execute=False) as s:
        await s.schedule_many([(Limited, None, 0)] * 4)
    await run_due_calls(store, [Limited], clock=clock)
    assert Probe.peak == 2
    assert len(Probe.ends) == 4

"""Presence: a scheduler that executes calls registers, heartbeats and deregisters.

All on the memory store (subclasses record what the scheduler asked, or inject
faults) under the autojump clock, with ``worker_timeout=30``: a heartbeat every 10 s,
and a lapse when nothing confirmed the row by 27 s after the last success.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable
from datetime import datetime
from typing import Any, ClassVar

import pytest
import trio
from trio.testing import MockClock

from trio_futurecalls import (
    Delivery,
    FutureCall,
    MemoryStore,
    NewCall,
    StoreUnavailableError,
    WorkerInfo,
    open_scheduler,
    run_due_calls,
)
from trio_futurecalls._presence import DEREGISTER_TIMEOUT


class Journal(MemoryStore):
    """Records the worker calls and claims (with Trio's time), and fails on demand."""

    def __init__(self) -> None:
        super().__init__()
        self.t0 = trio.current_time()
        self.log: list[tuple[str, float]] = []
        self.beats: list[tuple[float, int]] = []
        #: Operations that raise StoreUnavailableError while named here.
        self.down: set[str] = set()
        #: Operations that never answer while named here.
        self.hang: set[str] = set()

    def now(self) -> float:
        return trio.current_time() - self.t0

    async def _fault(self, what: str) -> None:
        self.log.append((what, self.now()))
        if what in self.hang:
            await trio.sleep_forever()
        if what in self.down:
            raise StoreUnavailableError(f"{what}: connection refused")

    async def register_worker(self, worker: WorkerInfo) -> None:
        await self._fault("register")
        await super().register_worker(worker)

    async def heartbeat(
        self, worker_id: str, now: datetime, expires_at: datetime, running: int
    ) -> bool:
        await self._fault("heartbeat")
        answer = await super().heartbeat(worker_id, now, expires_at, running)
        self.beats.append((self.now(), running))
        return answer

    async def deregister_worker(self, worker_id: str) -> None:
        await self._fault("deregister")
        await super().deregister_worker(worker_id)

    async def claim(self, *args: Any, **kwargs: Any) -> Any:
        self.log.append(("claim", self.now()))
        return await super().claim(*args, **kwargs)

    def first(self, what: str) -> float:
        return next(t for w, t in self.log if w == what)

    def times(self, what: str) -> list[float]:
        return [round(t, 3) for w, t in self.log if w == what]


class Nap(FutureCall):
    name = "nap"
    max_concurrent = 4
    ended: ClassVar[list[float]] = []

    async def invoke(self, session: Any, payload: Any) -> None:
        try:
            await trio.sleep(payload)
        finally:
            Nap.ended.append(trio.current_time())


class Leased(FutureCall):
    name = "leased"
    delivery = Delivery.AT_LEAST_ONCE
    max_concurrent = None

    async def invoke(self, session: Any, payload: Any) -> None:
        pass


def nap(clock: Callable[[], datetime], seconds: float) -> NewCall:
    now = clock()
    return NewCall(name=Nap.name, payload=str(seconds), due_at=now, scheduled_at=now)


async def test_it_registers_before_the_first_claim_and_shows_itself(
    autojump_clock: MockClock, clock: Callable[[], datetime]
) -> None:
    store = Journal()
    await store.schedule([nap(clock, 1)])
    async with open_scheduler(store, [Nap, Leased], clock=clock, max_concurrent=7) as s:
        # Registered as the block starts (startup waits for the first attempt).
        (me,) = await s.workers()
        await trio.sleep(2)
    assert store.first("register") <= store.first("claim")
    assert me.id == s.owner
    assert (me.host, me.pid) == (socket.gethostname(), os.getpid())
    assert me.started_at == me.heartbeat_at
    assert (me.expires_at - me.heartbeat_at).total_seconds() == 30
    assert me.limits == {
        "max_concurrent": 7,
        "classes": {
            "leased": {"max_concurrent": None, "delivery": "at_least_once"},
            "nap": {"max_concurrent": 4, "delivery": "at_most_once"},
        },
    }


async def test_it_heartbeats_every_third_of_the_timeout_with_its_running_calls(
    autojump_clock: MockClock, clock: Callable[[], datetime]
) -> None:
    store = Journal()
    await store.schedule([nap(clock, 25), nap(clock, 25)])
    async with open_scheduler(store, [Nap], clock=clock, worker_timeout=30):
        await trio.sleep(35)
        (me,) = await store.workers(clock())
    assert [round(t, 3) for t, _ in store.beats] == [10, 20, 30]
    assert [running for _, running in store.beats] == [2, 2, 0]
    assert me.running == 0
    assert round((me.heartbeat_at - clock()).total_seconds(), 3) == -5


async def test_heartbeats_failing_past_the_margin_fire_on_lapse_and_it_registers_again(
    autojump_clock: MockClock, clock: Callable[[], datetime], caplog: pytest.LogCaptureFixture
) -> None:
    store = Journal()
    lapses: list[float] = []
    async with open_scheduler(store, [Nap], clock=clock, worker_timeout=30) as s:
        s._engine.presence.on_lapse(lambda: lapses.append(store.now()))
        store.down.add("heartbeat")
        await trio.sleep(28)
        # Beats at 10 and 20 failed; at 27 (30 - 3) the row may be gone any moment.
        assert store.times("heartbeat") == [10, 20]
        assert [round(t, 3) for t in lapses] == [27]
        assert store.times("register") == [0, 27]
        assert s._engine.presence.live
        store.down.clear()
        await trio.sleep(10)
        assert store.times("heartbeat")[-1] == 37
        assert [w.id for w in await s.workers()] == [s.owner]
    assert "may have been declared dead" in caplog.text


async def test_a_heartbeat_that_hangs_is_given_up_at_the_lapse_point(
    autojump_clock: MockClock, clock: Callable[[], datetime]
) -> None:
    store = Journal()
    lapses: list[float] = []
    async with open_scheduler(store, [Nap], clock=clock, worker_timeout=30) as s:
        s._engine.presence.on_lapse(lambda: lapses.append(store.now()))
        store.hang.add("heartbeat")
        await trio.sleep(28)
        store.hang.clear()
    assert store.times("heartbeat") == [10]
    assert [round(t, 3) for t in lapses] == [27]


async def test_a_false_answer_fires_on_lapse_and_it_registers_again(
    autojump_clock: MockClock, clock: Callable[[], datetime]
) -> None:
    store = Journal()
    lapses: list[float] = []
    async with open_scheduler(store, [Nap], clock=clock, worker_timeout=30) as s:
        s._engine.presence.on_lapse(lambda: lapses.append(store.now()))
        await trio.sleep(5)
        store._workers.rows.clear()  # deleted behind its back (declared dead)
        await trio.sleep(6)
        assert [round(t, 3) for t in lapses] == [10]
        assert store.times("register") == [0, 10]
        (me,) = await s.workers()
        assert me.id == s.owner
        assert round((clock() - me.started_at).total_seconds(), 3) == 11  # kept


async def test_a_failing_lapse_callback_is_logged_and_changes_nothing(
    autojump_clock: MockClock, clock: Callable[[], datetime], caplog: pytest.LogCaptureFixture
) -> None:
    store = Journal()
    seen: list[str] = []

    def broken() -> None:
        raise RuntimeError("callback bug")

    async with open_scheduler(store, [Nap], clock=clock, worker_timeout=30) as s:
        s._engine.presence.on_lapse(broken)
        s._engine.presence.on_lapse(lambda: seen.append("second"))
        store._workers.rows.clear()
        await trio.sleep(11)
        assert seen == ["second"]
        assert len(await s.workers()) == 1
    assert "callback bug" in caplog.text


async def test_it_deregisters_at_shutdown_after_its_calls_ended(
    autojump_clock: MockClock, clock: Callable[[], datetime]
) -> None:
    store = Journal()
    Nap.ended = []
    await store.schedule([nap(clock, 15)])
    async with open_scheduler(store, [Nap], clock=clock, grace_period=60):
        await trio.sleep(1)
    assert [round(t - store.t0, 3) for t in Nap.ended] == [15]
    assert store.times("deregister") == [15]
    assert store._workers.rows == {}
    assert await store.workers(clock()) == []


async def test_a_store_error_at_shutdown_is_logged_and_does_not_hang(
    autojump_clock: MockClock, clock: Callable[[], datetime], caplog: pytest.LogCaptureFixture
) -> None:
    store = Journal()
    async with open_scheduler(store, [Nap], clock=clock):
        store.down.add("deregister")
    assert store.now() < 0.1
    assert "could not deregister worker" in caplog.text
    # A deregistration that never answers is given up after DEREGISTER_TIMEOUT.
    store = Journal()
    async with open_scheduler(store, [Nap], clock=clock):
        store.hang.add("deregister")
    assert round(store.now(), 3) == DEREGISTER_TIMEOUT
    assert "took over" in caplog.text


async def test_cancelled_from_outside_it_still_deregisters(
    autojump_clock: MockClock, clock: Callable[[], datetime]
) -> None:
    store = Journal()
    with trio.move_on_after(5):
        async with open_scheduler(store, [Nap], clock=clock):
            await trio.sleep_forever()
    assert store.times("deregister") == [5]
    assert store._workers.rows == {}


async def test_a_store_down_at_start_delays_dispatching_not_startup(
    autojump_clock: MockClock, clock: Callable[[], datetime], caplog: pytest.LogCaptureFixture
) -> None:
    store = Journal()
    Nap.ended = []
    store.down.add("register")
    await store.schedule([nap(clock, 1)])
    async with open_scheduler(store, [Nap], clock=clock) as s:
        # The block runs during the outage; the scheduler can schedule.
        assert store.now() == 0
        await s.schedule(Nap, 1)
        await trio.sleep(3)
        assert store.times("claim") == []
        assert Nap.ended == []
        store.down.clear()
        await trio.sleep(5)
        # Registered at the next attempt (backoff 50 ms doubling: ... 1.55, 3.15 s);
        # then both calls ran.
        assert len(store.times("register")) > 2
        registered = store.times("register")[-1]
        assert store.first("claim") >= registered
        assert len(Nap.ended) == 2
    assert "could not register worker" in caplog.text


async def test_a_scheduler_that_does_not_execute_does_not_register(
    autojump_clock: MockClock, clock: Callable[[], datetime]
) -> None:
    store = Journal()
    async with open_scheduler(store, [Nap], clock=clock, execute=False) as s:
        await trio.sleep(60)
        assert await s.workers() == []
    assert store.log == []


async def test_run_once_registers_and_deregisters(
    autojump_clock: MockClock, clock: Callable[[], datetime]
) -> None:
    store = Journal()
    await store.schedule([nap(clock, 2)])
    stats = await run_due_calls(store, [Nap], clock=clock)
    assert stats.total.succeeded == 1
    assert store.first("register") <= store.first("claim")
    assert store.times("deregister") == [2]
    assert store._workers.rows == {}


async def test_two_schedulers_see_each_other(
    autojump_clock: MockClock, clock: Callable[[], datetime]
) -> None:
    store = Journal()
    async with open_scheduler(store, [Nap], clock=clock) as a:
        await trio.sleep(1)
        async with open_scheduler(store, [Nap], clock=clock) as b:
            assert [w.id for w in await a.workers()] == [a.owner, b.owner]
        assert [w.id for w in await a.workers()] == [a.owner]

"""Cancelling running calls (memory store, autojump clock): ``invoke`` sees
``trio.Cancelled``, the call is not retried nor handed back, it counts as cancelled,
its dependents end, and ``cancel`` answers PENDING / RUNNING / NOT_FOUND."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any, ClassVar

import pytest
import trio
import trio.testing
from trio.testing import MockClock

from trio_futurecalls import (
    CancelOutcome,
    Delivery,
    FutureCall,
    MemoryStore,
    PendingQuery,
    open_scheduler,
)


def slow_class(delivery: Delivery, name: str = "slow") -> type[FutureCall]:
    """A class whose calls sleep an hour, recording each start and a Cancelled."""

    class Slow(FutureCall):
        max_concurrent = 10
        starts: ClassVar[list[int]] = []
        cancelled: ClassVar[list[int]] = []

        async def invoke(self, session: Any, payload: Any) -> None:
            type(self).starts.append(self.info.id)
            try:
                await trio.sleep(3600)
            except trio.Cancelled:
                type(self).cancelled.append(self.info.id)
                raise

    Slow.name = name
    Slow.delivery = delivery
    Slow.max_attempts = 3
    return Slow


def quick_class() -> type[FutureCall]:
    class Quick(FutureCall):
        name = "quick"
        ran: ClassVar[list[int]] = []

        async def invoke(self, session: Any, payload: Any) -> None:
            type(self).ran.append(self.info.id)

    return Quick


DELIVERIES = pytest.mark.parametrize("delivery", list(Delivery))


@DELIVERIES
async def test_a_running_call_is_cancelled_and_not_run_again(
    autojump_clock: MockClock, clock: Callable[[], datetime], delivery: Delivery
) -> None:
    slow = slow_class(delivery)
    store = MemoryStore()
    async with open_scheduler(store, [slow], clock=clock) as s:
        call_id = await s.schedule(slow, None)
        await trio.sleep(1)
        assert slow.starts == [call_id]  # type: ignore[attr-defined]
        before = trio.current_time()
        assert await s.cancel(call_id) is CancelOutcome.RUNNING
        await trio.testing.wait_all_tasks_blocked()
        assert slow.cancelled == [call_id]  # type: ignore[attr-defined]
        assert trio.current_time() - before < 0.1
        await trio.sleep(7200)  # leases expire, retries would be due: nothing runs
        assert slow.starts == [call_id]  # type: ignore[attr-defined]
        assert await store.pending(PendingQuery(now=clock())) == []
        assert await store.dead_letters() == []
        stats = s.statistics().classes[slow.name]
        assert (stats.started, stats.cancelled, stats.failed, stats.retried) == (1, 1, 0, 0)
        assert stats.running == 0
        # Once finished, it is nowhere.
        assert await s.cancel(call_id) is CancelOutcome.NOT_FOUND
        await s.shutdown()


async def test_pending_and_unknown_ids(
    autojump_clock: MockClock, clock: Callable[[], datetime]
) -> None:
    slow = slow_class(Delivery.AT_MOST_ONCE)
    async with open_scheduler(MemoryStore(), [slow], clock=clock) as s:
        later = await s.schedule(slow, None, delay=100)
        outcome = await s.cancel(later)
        assert outcome is CancelOutcome.PENDING
        assert outcome
        missing = await s.cancel(12345)
        assert missing is CancelOutcome.NOT_FOUND
        assert not missing
        await trio.sleep(200)
        assert slow.starts == []  # type: ignore[attr-defined]
        await s.shutdown()


async def test_no_live_worker_answers_not_found_at_once(
    autojump_clock: MockClock, clock: Callable[[], datetime]
) -> None:
    slow = slow_class(Delivery.AT_MOST_ONCE)
    async with open_scheduler(MemoryStore(), [slow], clock=clock, execute=False) as s:
        before = trio.current_time()
        assert await s.cancel(7) is CancelOutcome.NOT_FOUND
        assert trio.current_time() == before
        await s.shutdown()


@DELIVERIES
async def test_dependents_of_a_cancelled_running_call_become_dead_letters(
    autojump_clock: MockClock, clock: Callable[[], datetime], delivery: Delivery
) -> None:
    slow, quick = slow_class(delivery), quick_class()
    store = MemoryStore()
    async with open_scheduler(store, [slow, quick], clock=clock) as s:
        # A due time ahead, so that the dependent is linked before the call starts.
        first = await s.schedule(slow, None, delay=1)
        second = await s.schedule(quick, None, after=[first])
        await trio.sleep(2)
        assert slow.starts == [first]  # type: ignore[attr-defined]
        assert await s.cancel(first) is CancelOutcome.RUNNING
        await trio.sleep(10)
        assert quick.ran == []  # type: ignore[attr-defined]
        (dead,) = await store.dead_letters()
        assert dead.call_id == second
        assert "cancelled" in dead.error
        await s.shutdown()


async def test_cancel_identifier_counts_pending_and_running_calls(
    autojump_clock: MockClock, clock: Callable[[], datetime]
) -> None:
    most, least = slow_class(Delivery.AT_MOST_ONCE), slow_class(Delivery.AT_LEAST_ONCE, "least")
    async with open_scheduler(MemoryStore(), [most, least], clock=clock) as s:
        running = [
            await s.schedule(most, None, identifier="job"),
            await s.schedule(least, None, identifier="job"),
            await s.schedule(most, None, identifier="job"),
        ]
        other = await s.schedule(most, None, identifier="other")
        await s.schedule(most, None, identifier="job", delay=100)
        await trio.sleep(1)
        # 1 pending + 1 leased row + 2 at-most-once runs stopped.
        assert await s.cancel_identifier("job") == 4
        await trio.testing.wait_all_tasks_blocked()
        assert sorted(most.cancelled + least.cancelled) == sorted(running)  # type: ignore[attr-defined]
        assert other not in most.cancelled  # type: ignore[attr-defined]
        assert await s.cancel_identifier("job") == 0
        await trio.sleep(7200)
        assert sorted(most.starts + least.starts) == sorted([*running, other])  # type: ignore[attr-defined]
        await s.shutdown()


@DELIVERIES
async def test_a_call_cancelled_before_invoke_is_not_handed_back(
    autojump_clock: MockClock, clock: Callable[[], datetime], delivery: Delivery
) -> None:
    slow = slow_class(delivery)
    gate = trio.Event()

    class SlowSessions(MemoryStore):
        """Sessions open only once the gate opens: calls wait before invoke."""

        def open_session(self, call: Any) -> Any:
            inner = super().open_session(call)

            class Gated:
                async def __aenter__(self) -> Any:
                    await gate.wait()
                    return await inner.__aenter__()

                async def __aexit__(self, *exc: Any) -> None:
                    await inner.__aexit__(*exc)

            return Gated()

    store = SlowSessions()
    async with open_scheduler(store, [slow], clock=clock) as s:
        call_id = await s.schedule(slow, None)
        await trio.sleep(1)
        assert s.statistics().classes[slow.name].running == 1
        assert await s.cancel(call_id) is CancelOutcome.RUNNING
        gate.set()
        await trio.sleep(7200)
        assert slow.starts == []  # type: ignore[attr-defined]
        assert await store.pending(PendingQuery(now=clock())) == []
        assert s.statistics().classes[slow.name].cancelled == 1
        await s.shutdown()


@DELIVERIES
async def test_cancel_during_the_grace_period(
    autojump_clock: MockClock, clock: Callable[[], datetime], delivery: Delivery
) -> None:
    slow = slow_class(delivery)
    store = MemoryStore()
    async with open_scheduler(store, [slow], clock=clock, grace_period=60) as s:
        call_id = await s.schedule(slow, None)
        await trio.sleep(1)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(s.shutdown)
            await trio.sleep(1)  # shutting down: the call has its grace period
            assert await s.cancel(call_id) is CancelOutcome.RUNNING
        assert slow.cancelled == [call_id]  # type: ignore[attr-defined]
    # Cancelled, not interrupted: not released nor handed back for another worker.
    assert await store.pending(PendingQuery(now=clock())) == []
    assert s.statistics().classes[slow.name].cancelled == 1


async def test_a_call_that_ignores_the_cancel_finishes_and_is_not_retried(
    autojump_clock: MockClock, clock: Callable[[], datetime]
) -> None:
    class Stubborn(FutureCall):
        name = "stubborn"
        delivery = Delivery.AT_MOST_ONCE
        max_attempts = 3
        ends: ClassVar[list[str]] = []

        async def invoke(self, session: Any, payload: Any) -> None:
            try:
                await trio.sleep(10)
            except trio.Cancelled:
                type(self).ends.append("cancelled")
                raise RuntimeError("cleanup failed") from None

    store = MemoryStore()
    async with open_scheduler(store, [Stubborn], clock=clock) as s:
        call_id = await s.schedule(Stubborn, None)
        await trio.sleep(1)
        assert await s.cancel(call_id) is CancelOutcome.RUNNING
        await trio.sleep(100)
        assert Stubborn.ends == ["cancelled"]
        stats = s.statistics().classes["stubborn"]
        assert (stats.cancelled, stats.failed, stats.retried) == (1, 0, 0)
        assert await store.pending(PendingQuery(now=clock())) == []
        await s.shutdown()

"""Dependencies through the engine: chains, fan-in, failures that end the calls waiting
for them, shutdown in the middle, and the API (``after=``, ``chain``)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any, cast

import pytest
import trio
from helpers import BOTH, Recorder, make_call
from trio.testing import MockClock

from trio_futurecalls import (
    CallRequest,
    Delivery,
    FixedBackoff,
    FutureCall,
    InvalidArgumentError,
    Lease,
    MemoryStore,
    PrerequisiteError,
    QueueLength,
    open_scheduler,
    run_due_calls,
    schedule_chain,
)
from trio_futurecalls.stores._dependencies import ABANDONED


def step(
    name: str,
    rec: Recorder,
    delivery: Delivery = Delivery.AT_MOST_ONCE,
    *,
    max_concurrent: int | None = 1,
    max_attempts: int = 1,
) -> type[FutureCall]:
    base = make_call(name, rec, max_concurrent=max_concurrent)
    cls = type(
        base.__name__,
        (base,),
        {"delivery": delivery, "max_attempts": max_attempts, "retry_backoff": FixedBackoff(1.0)},
    )
    return cast(type[FutureCall], cls)


@pytest.mark.parametrize("delivery", BOTH)
async def test_a_three_step_chain_runs_in_order(
    autojump_clock: MockClock, clock: Callable[[], datetime], delivery: Delivery
) -> None:
    rec = Recorder()
    extract, transform, load = (step(n, rec, delivery) for n in ("extract", "transform", "load"))
    store = MemoryStore()
    t0 = trio.current_time()
    async with open_scheduler(store, [extract, transform, load], clock=clock) as s:
        e = await s.schedule(extract, {"tag": "e", "sleep": 5}, delay=1)
        t = await s.schedule(transform, {"tag": "t", "sleep": 3}, after=[e])
        await s.schedule(load, {"tag": "l", "sleep": 1}, after=[t], delay=60)
        # Due in 1 s, so nothing can start before the dependents are stored.
        lengths = await s.queue_lengths()
        assert lengths["transform"] == QueueLength(pending=1, due=0, waiting=1)
        await trio.sleep(100)
    assert rec.tags() == ["e", "t", "l"]
    # Each starts the moment its prerequisite ended, or at its own due time if later.
    assert rec.start_time("e") == pytest.approx(t0 + 1)
    assert rec.start_time("t") == pytest.approx(rec.finish_time("e"))
    assert rec.start_time("l") == pytest.approx(t0 + 60)
    assert await store.dead_letters() == []


@pytest.mark.parametrize("delivery", BOTH)
async def test_a_chain_can_start_at_once(
    autojump_clock: MockClock, clock: Callable[[], datetime], delivery: Delivery
) -> None:
    rec = Recorder()
    classes = [step(n, rec, delivery) for n in ("a", "b", "c")]
    store = MemoryStore()
    async with open_scheduler(store, classes, clock=clock) as s:
        t0 = trio.current_time()
        ids = await s.chain([(cls, {"tag": cls.name, "sleep": 2}) for cls in classes])
        assert len(ids) == 3
        await trio.sleep(20)
    assert rec.tags() == ["a", "b", "c"]
    assert [rec.start_time(t) for t in "abc"] == pytest.approx([t0, t0 + 2, t0 + 4])


@pytest.mark.parametrize("delivery", BOTH)
async def test_a_failing_middle_step_dead_letters_the_rest(
    autojump_clock: MockClock, clock: Callable[[], datetime], delivery: Delivery
) -> None:
    rec = Recorder()
    classes = [step(n, rec, delivery) for n in ("first", "middle", "third", "fourth")]
    store = MemoryStore()
    async with open_scheduler(store, classes, clock=clock) as s:
        first, middle, third, fourth = await s.chain(
            [
                (classes[0], {"tag": "first"}),
                (classes[1], {"tag": "middle", "fail": True}),
                (classes[2], {"tag": "third"}),
                (classes[3], {"tag": "fourth"}),
            ]
        )
        await trio.sleep(30)
        assert await s.pending() == []
    assert rec.tags() == ["first", "middle"]
    errors = {d.call_id: d.error for d in await store.dead_letters()}
    assert set(errors) == {middle, third, fourth}
    failure = "RuntimeError: call middle failed on purpose"
    assert errors[third] == f"prerequisite {middle} failed: {failure}"
    assert errors[fourth] == (
        f"prerequisite {third} did not run: prerequisite {middle} failed: {failure}"
    )
    assert first not in errors


@pytest.mark.parametrize("delivery", BOTH)
async def test_fan_in_starts_right_after_the_last_prerequisite(
    autojump_clock: MockClock, clock: Callable[[], datetime], delivery: Delivery
) -> None:
    rec = Recorder()
    worker = step("worker", rec, delivery, max_concurrent=10)
    join = step("join", rec, delivery)
    store = MemoryStore()
    async with open_scheduler(store, [worker, join], clock=clock) as s:
        ids = await s.schedule_many(
            CallRequest(call_class=worker, payload={"tag": k, "sleep": 1 + k % 7}, delay=1)
            for k in range(50)
        )
        await s.schedule(join, {"tag": "join"}, after=ids)
        (waiting,) = await s.pending(join)
        assert sorted(waiting.waiting_for) == sorted(ids)
        await trio.sleep(100)
    last_end = max(t for name, _, t in rec.finished if name == "worker")
    assert rec.tags()[-1] == "join"
    assert rec.start_time("join") == pytest.approx(last_end)
    assert len(rec.started) == 51


async def test_a_retried_prerequisite_holds_its_dependents_until_it_succeeds(
    autojump_clock: MockClock, clock: Callable[[], datetime]
) -> None:
    rec = Recorder()
    attempts: list[int] = []

    class Flaky(FutureCall):
        name = "flaky"
        delivery = Delivery.AT_MOST_ONCE
        max_attempts = 3
        retry_backoff = FixedBackoff(5.0)

        async def invoke(self, session: Any, payload: Any) -> None:
            attempts.append(self.info.attempt)
            if self.info.attempt < 3:
                raise RuntimeError("not yet")

    after = step("after", rec)
    store = MemoryStore()
    async with open_scheduler(store, [Flaky, after], clock=clock) as s:
        t0 = trio.current_time()
        await s.chain([(Flaky, None), (after, {"tag": "after"})])
        await trio.sleep(30)
    assert attempts == [1, 2, 3]
    assert rec.tags() == ["after"]
    assert rec.start_time("after") == pytest.approx(t0 + 10)


async def test_shutdown_interrupting_an_at_most_once_prerequisite_ends_its_dependents(
    autojump_clock: MockClock, clock: Callable[[], datetime]
) -> None:
    rec = Recorder()
    slow, after = step("slow", rec), step("after", rec)
    store = MemoryStore()
    async with open_scheduler(store, [slow, after], clock=clock, grace_period=1) as s:
        slow_id, after_id = await s.chain([(slow, {"sleep": 100}), (after, {"tag": "after"})])
        await trio.sleep(5)
    (dead,) = await store.dead_letters()
    assert dead.call_id == after_id
    assert dead.error.startswith(f"prerequisite {slow_id} failed: it was interrupted")


async def test_shutdown_interrupting_an_at_least_once_prerequisite_keeps_the_chain(
    autojump_clock: MockClock, clock: Callable[[], datetime]
) -> None:
    rec = Recorder()
    slow = step("slow", rec, Delivery.AT_LEAST_ONCE, max_attempts=3)
    after = step("after", rec, Delivery.AT_LEAST_ONCE)
    store = MemoryStore()
    async with open_scheduler(store, [slow, after], clock=clock, grace_period=1) as s:
        await s.chain([(slow, {"tag": "slow", "sleep": 10}), (after, {"tag": "after"})])
        await trio.sleep(5)
    assert rec.tags() == ["slow"]
    assert await store.dead_letters() == []
    # Another worker takes over: the chain goes on.
    async with open_scheduler(store, [slow, after], clock=clock):
        await trio.sleep(30)
    assert rec.tags() == ["slow", "slow", "after"]


async def test_run_once_runs_the_dependents_that_become_due(
    autojump_clock: MockClock, clock: Callable[[], datetime]
) -> None:
    rec = Recorder()
    classes = [step(n, rec) for n in ("a", "b", "c")]
    store = MemoryStore()
    steps = [(cls, {"tag": cls.name, "sleep": 1}) for cls in classes]
    await schedule_chain(store, steps, clock=clock)
    stats = await run_due_calls(store, classes, clock=clock)
    assert rec.tags() == ["a", "b", "c"]
    assert stats.total.succeeded == 3


async def test_after_names_calls_the_store_can_see(
    autojump_clock: MockClock, clock: Callable[[], datetime]
) -> None:
    rec = Recorder()
    quick, after = step("quick", rec), step("after", rec)
    async with open_scheduler(MemoryStore(), [quick, after], clock=clock) as s:
        with pytest.raises(PrerequisiteError) as caught:
            await s.schedule(after, {}, after=[424242])
        assert caught.value.call_id == 424242
        done = await s.schedule(quick, {})
        await trio.sleep(1)
        # It ran at-most-once with nobody waiting for it: nothing remembers it.
        with pytest.raises(PrerequisiteError):
            await s.schedule(after, {}, after=[done])
        for bad in ("12", 12, [0], [True], [1.0]):
            with pytest.raises(InvalidArgumentError):
                await s.schedule(after, {}, after=bad)  # type: ignore[arg-type]
        with pytest.raises(InvalidArgumentError):
            await s.schedule(after, {}, after=[done], unique_key="k")
        with pytest.raises(InvalidArgumentError):
            await s.chain([(quick, {}), "not a step"])  # type: ignore[list-item]
        assert await s.chain([]) == []
        assert await s.pending() == []
        # Any sized collection of ids will do, a set view of a dict's keys too.
        later = await s.schedule(quick, {}, delay=60)
        waiting = await s.schedule(after, {}, after={later: "x"}.keys())
        (listed,) = await s.pending(after)
        assert (listed.id, listed.waiting_for) == (waiting, (later,))
        with pytest.raises(InvalidArgumentError, match="not an iterator"):
            await s.schedule(after, {}, after=iter([later]))  # type: ignore[arg-type]


async def test_dependents_of_a_call_whose_worker_stopped_become_dead_letters(
    autojump_clock: MockClock, clock: Callable[[], datetime]
) -> None:
    rec = Recorder()
    first, after = step("first", rec), step("after", rec)
    store = MemoryStore()
    first_id, after_id = await schedule_chain(store, [(first, {}), (after, {})], clock=clock)
    # A worker claims the at-most-once prerequisite, then stops (killed): it never
    # renews the record its claim made, nor tells the call's end.
    expires_at = clock() + timedelta(seconds=60)
    lease = Lease(owner="dead-worker", expires_at=expires_at, names=frozenset())
    (claimed,) = (await store.claim(clock(), {"first": 1}, 1, lease)).calls
    assert claimed.dependents
    async with open_scheduler(store, [first, after], clock=clock, lease_duration=60):
        await trio.sleep(50)
        assert await store.dead_letters() == []  # the record has not expired yet
        await trio.sleep(40)  # it has, and a round of the lease keeper saw it
        (dead,) = await store.dead_letters()
    assert dead.call_id == after_id
    assert dead.error == (f"prerequisite {first_id} failed: {ABANDONED}")
    assert rec.tags() == []


async def test_a_long_at_most_once_prerequisite_keeps_its_record_alive(
    autojump_clock: MockClock, clock: Callable[[], datetime]
) -> None:
    rec = Recorder()
    slow, after = step("slow", rec), step("after", rec)
    store = MemoryStore()
    async with open_scheduler(store, [slow, after], clock=clock, lease_duration=10):
        steps = [(slow, {"tag": "slow", "sleep": 100}), (after, {"tag": "after"})]
        await schedule_chain(store, steps, clock=clock)
        await trio.sleep(120)
    # It ran ten leases long: its record was renewed, not taken for abandoned.
    assert rec.tags() == ["slow", "after"]
    assert await store.dead_letters() == []

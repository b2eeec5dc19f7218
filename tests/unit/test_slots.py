"""The limiter hierarchy: free-slot counting, tokens, and the doorbell a freed slot rings."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import trio
import trio.testing

from trio_futurecalls._slots import Doorbell, Slots

T0 = datetime(2030, 1, 1, tzinfo=UTC)


def asleep(bell: Doorbell) -> None:
    """Put the doorbell in the state of a dispatcher sleeping (its round is over)."""
    bell.arm()
    bell.awake = False


def test_free_counts_both_levels_and_caps_the_batch() -> None:
    slots = Slots(3, {"a": 1, "b": None}, max_batch=2)
    assert slots.free() == (2, {"a": 1, "b": 2})
    token = slots.take("a")
    assert slots.free() == (2, {"b": 2})  # "a" is saturated; "b" is not held back
    slots.take("b")
    slots.take("b")
    assert slots.free() == (0, {})  # the global limit is reached
    slots.give_back(token)
    assert slots.free() == (1, {"a": 1, "b": 1})
    assert slots.running("b") == 2


def test_unlimited_global_limit() -> None:
    slots = Slots(None, {"a": None}, max_batch=512)
    assert slots.free() == (512, {"a": 512})


def test_a_freed_slot_rings_only_when_a_limiter_was_full() -> None:
    slots = Slots(10, {"a": 2})
    first = slots.take("a")
    second = slots.take("a")
    asleep(slots.doorbell)
    slots.give_back(first)  # "a" was full: the dispatcher may start another
    assert slots.doorbell._event.is_set()
    asleep(slots.doorbell)
    slots.give_back(second)  # it had room already: no need to wake anyone
    assert not slots.doorbell._event.is_set()


def test_a_release_during_a_dispatch_round_rings() -> None:
    slots = Slots(10, {"a": 5})
    token = slots.take("a")
    slots.doorbell.arm()  # a round has begun: its count of free slots is stale now
    slots.give_back(token)
    assert slots.doorbell._event.is_set()


def test_run_once_mode_rings_on_every_release() -> None:
    slots = Slots(10, {"a": 5}, ring_on_every_release=True)
    token = slots.take("a")
    asleep(slots.doorbell)
    slots.give_back(token)
    assert slots.doorbell._event.is_set()


async def test_doorbell_rings_for_earlier_calls_only(
    autojump_clock: trio.testing.MockClock,
) -> None:
    bell = Doorbell()
    bell.arm()
    woke: list[float] = []

    async def sleeper() -> None:
        await bell.sleep(trio.current_time() + 100, T0 + timedelta(seconds=60))
        woke.append(trio.current_time())

    async with trio.open_nursery() as nursery:
        start = trio.current_time()
        nursery.start_soon(sleeper)
        await trio.testing.wait_all_tasks_blocked()
        bell.on_scheduled(T0 + timedelta(seconds=90))  # later than awaited: stay asleep
        await trio.testing.wait_all_tasks_blocked()
        assert not woke
        bell.on_scheduled(T0 + timedelta(seconds=30))  # earlier: wake up
    assert woke == [start]

"""Priorities on every store: among due calls with free slots, higher priority first,
then earlier due time, then lower id; limits hold as without priorities.

The ``store`` fixture (tests/conftest.py) runs each test once per adapter.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import attrs
import pytest
import trio

from trio_futurecalls import (
    MAX_PRIORITY,
    MIN_PRIORITY,
    InvalidArgumentError,
    Lease,
    NewCall,
    PendingQuery,
    Store,
)

T0 = datetime(2030, 1, 1, tzinfo=UTC)


def new(name: str = "a", due: float = 0.0, priority: int = 0, **more: Any) -> NewCall:
    return NewCall(
        name=name,
        payload="null",
        due_at=T0 + timedelta(seconds=due),
        scheduled_at=T0,
        priority=priority,
        **more,
    )


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


async def claimed_ids(store: Store, now: float, slots: dict[str, int], limit: int) -> list[int]:
    return [c.id for c in (await store.claim(at(now), slots, limit)).calls]


async def test_higher_priority_first_within_a_class(store: Store) -> None:
    low, high, mid, top_late = await store.schedule(
        [new(due=1, priority=-5), new(due=3, priority=10), new(due=2), new(due=4, priority=10)]
    )
    assert await claimed_ids(store, 10, {"a": 10}, 10) == [high, top_late, mid, low]


async def test_priority_order_under_the_class_slots(store: Store) -> None:
    low, high, mid = await store.schedule(
        [new(due=1, priority=-5), new(due=3, priority=10), new(due=2)]
    )
    assert await claimed_ids(store, 10, {"a": 2}, 10) == [high, mid]
    assert await claimed_ids(store, 10, {"a": 2}, 10) == [low]


async def test_priority_order_across_classes_under_the_limit(store: Store) -> None:
    a_low, a_high = await store.schedule([new("a", 1, 0), new("a", 5, 3)])
    b_mid, b_top = await store.schedule([new("b", 2, 1), new("b", 9, 7)])
    assert await claimed_ids(store, 10, {"a": 5, "b": 5}, 2) == [b_top, a_high]
    assert await claimed_ids(store, 10, {"a": 5, "b": 5}, 3) == [b_mid, a_low]


async def test_ties_are_broken_by_due_time_then_id(store: Store) -> None:
    ids = await store.schedule(
        [new("a", 2, 4), new("b", 1, 4), new("a", 1, 4), new("b", 1, 4), new("a", 0, 3)]
    )
    a2, b1, a1, b1_again, a0_lower = ids
    assert await claimed_ids(store, 5, {"a": 5, "b": 5}, 10) == [b1, a1, b1_again, a2, a0_lower]


async def test_a_saturated_class_does_not_hold_back_others(store: Store) -> None:
    await store.schedule([new("a", 0, MAX_PRIORITY)])
    (b_low,) = await store.schedule([new("b", 0, MIN_PRIORITY)])
    # "a" has no free slot: its high-priority call waits, b's low one starts.
    assert await claimed_ids(store, 1, {"b": 1}, 1) == [b_low]


async def test_per_class_slots_hold_whatever_the_priority(store: Store) -> None:
    a_ids = await store.schedule([new("a", i, 9) for i in range(3)])
    (b_low,) = await store.schedule([new("b", 0, 0)])
    assert await claimed_ids(store, 5, {"a": 1, "b": 1}, 5) == [a_ids[0], b_low]


async def test_future_high_priority_calls_do_not_hide_due_lower_ones(store: Store) -> None:
    await store.schedule([new("a", 100 + i, 50) for i in range(20)])
    await store.schedule([new("a", 200, 10)])
    due = await store.schedule([new("a", 1, 5), new("a", 2, -3)])
    claim = await store.claim(at(10), {"a": 5}, 5)
    assert [c.id for c in claim.calls] == due
    # The next due time is still the earliest, whatever its priority.
    assert claim.next_due == at(100)


async def test_next_due_is_the_earliest_among_names_with_room(store: Store) -> None:
    await store.schedule([new("a", 50, 9), new("a", 30, -9), new("b", 20, 100)])
    claim = await store.claim(at(0), {"a": 1}, 5)
    assert claim.calls == []
    assert claim.next_due == at(30)


async def test_priority_is_stored_listed_and_handed_over(store: Store) -> None:
    ids = await store.schedule([new("a", 5, 7), new("a", 1, -2)])
    listed = await store.pending(PendingQuery())
    # The listing stays earliest due first.
    assert [(c.id, c.priority) for c in listed] == [(ids[1], -2), (ids[0], 7)]
    claimed = (await store.claim(at(10), {"a": 5}, 5)).calls
    assert [(c.id, c.priority) for c in claimed] == [(ids[0], 7), (ids[1], -2)]


async def test_put_back_and_release_keep_the_priority(store: Store) -> None:
    (call_id,) = await store.schedule([new("a", 0, 42)])
    (call,) = (await store.claim(at(1), {"a": 1}, 1)).calls
    assert await store.put_back([call], None) == 1
    (pending,) = await store.pending(PendingQuery())
    assert pending.priority == 42
    lease = Lease(owner="w1", expires_at=at(60), names=frozenset({"a"}))
    (leased,) = (await store.claim(at(1), {"a": 1}, 1, lease)).calls
    assert leased.priority == 42
    assert await store.release("w1", call_id, at(2))
    (pending,) = await store.pending(PendingQuery())
    assert (pending.id, pending.priority) == (call_id, 42)


async def test_unique_key_replace_takes_the_new_priority(store: Store) -> None:
    (held,) = await store.schedule([new("a", 5, 1, unique_key="k")])
    again = await store.schedule([new("a", 6, 9, unique_key="k", on_conflict="replace")])
    assert again == [held]
    (pending,) = await store.pending(PendingQuery())
    assert pending.priority == 9
    ignored = await store.schedule([new("a", 6, -9, unique_key="k")])
    assert ignored == [held]
    (pending,) = await store.pending(PendingQuery())
    assert pending.priority == 9


async def test_requeued_dead_letters_have_priority_zero(store: Store) -> None:
    await store.schedule([new("a", 0, 30)])
    (call,) = (await store.claim(at(1), {"a": 1}, 1)).calls
    dead_id = await store.dead_letter(call, "boom", at(1))
    assert dead_id is not None
    assert await store.requeue_dead_letter(dead_id, at(2)) is not None
    (pending,) = await store.pending(PendingQuery())
    assert pending.priority == 0


@pytest.mark.parametrize(
    ("priority", "match"),
    [
        (MAX_PRIORITY + 1, "priority must be an int from -1000 to 1000"),
        (MIN_PRIORITY - 1, "priority must be an int from -1000 to 1000"),
        (True, "priority must be an int"),
        (1.0, "priority must be an int"),
        ("1", "priority must be an int"),
        (None, "priority must be an int"),
    ],
)
async def test_bad_priorities_are_refused(store: Store, priority: Any, match: str) -> None:
    with pytest.raises(InvalidArgumentError, match=match):
        await store.schedule([new(), attrs.evolve(new(), priority=priority)])
    assert await store.pending(PendingQuery()) == []
    # The bounds themselves are fine.
    assert len(await store.schedule([new(priority=MIN_PRIORITY), new(priority=MAX_PRIORITY)])) == 2


async def test_concurrent_claims_with_priorities_never_hand_out_a_call_twice(
    store: Store,
) -> None:
    await store.schedule([new("a", i / 100, (i % 3) * 4 - 4) for i in range(150)])
    batches: list[list[int]] = []

    async def claimer() -> None:
        while True:
            batch = (await store.claim(at(10), {"a": 7}, 7)).calls
            if not batch:
                return
            # Each batch is in claim order: priority down, then due time, then id.
            keys = [(-c.priority, c.due_at, c.id) for c in batch]
            assert keys == sorted(keys)
            batches.append([c.id for c in batch])

    async with trio.open_nursery() as nursery:
        for _ in range(4):
            nursery.start_soon(claimer)
    ids = [i for batch in batches for i in batch]
    assert len(ids) == 150
    assert len(set(ids)) == 150

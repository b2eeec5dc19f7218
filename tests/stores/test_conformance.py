"""The store conformance suite: every store adapter must pass all of it.

The ``store`` fixture (tests/conftest.py) runs each test once per adapter.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import attrs
import pytest
import trio

from trio_futurecalls import (
    EARLIEST_TIME,
    LATEST_TIME,
    Claim,
    DuplicateCallError,
    InvalidArgumentError,
    Lease,
    NewCall,
    OnConflict,
    PendingQuery,
    QueueLength,
    Store,
    StoredCall,
)

T0 = datetime(2030, 1, 1, tzinfo=UTC)
MAX_UTC = datetime.max.replace(tzinfo=UTC)


def new(
    name: str = "a",
    due: float = 0.0,
    *,
    identifier: str | None = None,
    payload: str = "null",
) -> NewCall:
    return NewCall(
        name=name,
        payload=payload,
        due_at=T0 + timedelta(seconds=due),
        identifier=identifier,
        scheduled_at=T0,
    )


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


async def test_schedule_returns_distinct_increasing_ids(store: Store) -> None:
    ids = await store.schedule([new(), new(), new("b")])
    assert len(ids) == 3
    assert len(set(ids)) == 3
    assert ids == sorted(ids)
    assert await store.schedule([]) == []


async def test_round_trip_of_every_field(store: Store) -> None:
    payload = '{"text":"h\\u00e9llo \u2603","n":[1,2.5,null]}'
    due = datetime(2031, 6, 7, 8, 9, 10, 123456, tzinfo=UTC)
    (call_id,) = await store.schedule(
        [
            NewCall(
                name="mail.send",
                payload=payload,
                due_at=due,
                identifier="user:42",
                scheduled_at=T0,
            )
        ]
    )
    (call,) = await store.pending(PendingQuery())
    assert call == StoredCall(
        id=call_id,
        name="mail.send",
        payload=payload,
        due_at=due,
        identifier="user:42",
        scheduled_at=T0,
    )
    assert call.due_at.tzinfo is not None
    assert call.due_at.utcoffset() == timedelta(0)


@pytest.mark.parametrize("rows", [1, 3])
async def test_a_batch_kept_as_columns_is_stored_as_its_rows(store: Store, rows: int) -> None:
    """schedule_many's plain batch (NewCallColumns): every row whole, ids in order,
    and the listeners hear its earliest due time, as for a list of calls."""
    from trio_futurecalls._new_call_columns import NewCallColumns

    heard: list[datetime] = []
    store.add_listener(heard.append)
    values = [
        ("mail.send", '{"to":"a@example.com"}', at(30), "user:1", 5),
        ("other", "null", at(-10), None, -2),
        ("mail.send", "[1,2.5,null]", at(30), None, 0),
    ][:rows]
    batch = NewCallColumns(
        names=[v[0] for v in values],
        payloads=[v[1] for v in values],
        due_ats=[v[2] for v in values],
        identifiers=[v[3] for v in values],
        priorities=[v[4] for v in values],
        scheduled_at=T0,
    )
    ids = await store.schedule(batch)
    assert len(ids) == rows
    assert ids == sorted(set(ids))
    stored = {c.id: c for c in await store.pending(PendingQuery())}
    assert [stored[i] for i in ids] == [
        StoredCall(
            id=i,
            name=name,
            payload=payload,
            due_at=due,
            identifier=identifier,
            scheduled_at=T0,
            priority=priority,
        )
        for i, (name, payload, due, identifier, priority) in zip(ids, values, strict=True)
    ]
    earliest = min(v[2] for v in values)
    with trio.move_on_after(5):
        while earliest not in heard:  # noqa: ASYNC110 - may come from another connection
            await trio.sleep(0.01)
    assert earliest in heard


async def test_claim_takes_only_due_calls_in_due_order(store: Store) -> None:
    late, early, future, middle = await store.schedule(
        [new(due=5), new(due=1), new(due=100), new(due=3)]
    )
    claimed = (await store.claim(at(10), {"a": 10}, 10)).calls
    assert [c.id for c in claimed] == [early, middle, late]
    # Claimed rows are gone; the future one stays.
    assert [c.id for c in await store.pending(PendingQuery())] == [future]
    assert (await store.claim(at(10), {"a": 10}, 10)).calls == []


async def test_claim_ties_are_broken_by_scheduling_order(store: Store) -> None:
    ids = await store.schedule([new(due=1) for _ in range(5)])
    claimed = (await store.claim(at(1), {"a": 10}, 10)).calls
    assert [c.id for c in claimed] == ids


async def test_claim_respects_per_name_slots_and_total_limit(store: Store) -> None:
    a_ids = await store.schedule([new("a", due=i) for i in range(5)])
    b_ids = await store.schedule([new("b", due=i + 0.5) for i in range(5)])
    claimed = (await store.claim(at(10), {"a": 2, "b": 3}, 4)).calls
    # Per name first (a: 0, 1; b: 0.5, 1.5, 2.5), then the earliest four overall.
    assert [c.id for c in claimed] == [a_ids[0], b_ids[0], a_ids[1], b_ids[1]]
    remaining = {c.id for c in await store.pending(PendingQuery())}
    assert remaining == set(a_ids[2:]) | set(b_ids[2:])


async def test_claim_leaves_names_without_slots_alone(store: Store) -> None:
    (a_id,) = await store.schedule([new("a")])
    (b_id,) = await store.schedule([new("b")])
    claimed = (await store.claim(at(1), {"b": 5}, 5)).calls
    assert [c.id for c in claimed] == [b_id]
    assert [c.id for c in await store.pending(PendingQuery())] == [a_id]
    assert (await store.claim(at(1), {}, 5)).calls == []
    assert (await store.claim(at(1), {"a": 5}, 0)).calls == []


async def test_claim_includes_calls_due_exactly_now(store: Store) -> None:
    (call_id,) = await store.schedule([new(due=7)])
    assert (await store.claim(at(6.999999), {"a": 1}, 1)).calls == []
    assert [c.id for c in (await store.claim(at(7), {"a": 1}, 1)).calls] == [call_id]


async def test_concurrent_claims_never_hand_out_a_call_twice(store: Store) -> None:
    await store.schedule([new(due=i / 100) for i in range(200)])
    results: list[list[StoredCall]] = []

    async def claimer() -> None:
        while True:
            batch = (await store.claim(at(10), {"a": 7}, 7)).calls
            if not batch:
                return
            results.append(batch)

    async with trio.open_nursery() as nursery:
        for _ in range(4):
            nursery.start_soon(claimer)
    ids = [c.id for batch in results for c in batch]
    assert len(ids) == 200
    assert len(set(ids)) == 200


async def test_claim_says_when_the_next_call_is_due(store: Store) -> None:
    assert await store.claim(at(0), {"a": 1, "b": 1}, 5) == Claim([], None)
    await store.schedule([new("a", due=50), new("b", due=20), new("c", due=1)])
    assert await store.claim(at(0), {"a": 1}, 5) == Claim([], at(50))
    assert await store.claim(at(0), {"a": 1, "b": 1}, 5) == Claim([], at(20))
    assert await store.claim(at(0), {"zzz": 3}, 5) == Claim([], None)
    assert await store.claim(at(0), {}, 5) == Claim([], None)


async def test_next_due_looks_only_at_names_that_still_have_room(store: Store) -> None:
    a1, a2, b1, _ = await store.schedule([new("a", 1), new("a", 2), new("b", 3), new("b", 60)])
    # "a" used its one slot; "b" has room: what matters next is b's call at 3.
    claim = await store.claim(at(1), {"a": 1, "b": 2}, 5)
    assert [c.id for c in claim.calls] == [a1]
    assert claim.next_due == at(3)
    # Both used up: nothing more can start, so there is nothing to wait for.
    claim = await store.claim(at(3), {"a": 1, "b": 1}, 5)
    assert [c.id for c in claim.calls] == [a2, b1]
    assert claim.next_due is None
    # The total limit used up: the same.
    (call_id,) = await store.schedule([new("a", 4)])
    claim = await store.claim(at(100), {"a": 5, "b": 5}, 1)
    assert [c.id for c in claim.calls] == [call_id]
    assert claim.next_due is None
    # Room left and more due now: next_due says so, so the claimer goes again.
    await store.schedule([new("b", 5), new("b", 6)])
    claim = await store.claim(at(100), {"b": 2}, 2)
    assert len(claim.calls) == 2
    assert claim.next_due is None  # "b" used both slots
    # Room left, nothing more due yet: next_due is the next wake-up.
    await store.schedule([new("b", 200)])
    claim = await store.claim(at(100), {"b": 5}, 5)
    assert [c.due_at for c in claim.calls] == [at(60)]
    assert claim.next_due == at(200)


async def test_next_due_counts_the_expiry_of_the_lease_just_taken(store: Store) -> None:
    (mine,) = await store.schedule([new("a", 1)])
    await store.schedule([new("b", 90)])
    claim = await store.claim(at(1), {"a": 5, "b": 5}, 5, lease("w1", 60, "a"))
    # If that lease is lost (renewals fail), the row is due again at 60.
    assert [c.id for c in claim.calls] == [mine]
    assert claim.next_due == at(60)
    # A lease held by someone else is a due time to wait for as well: it may expire.
    assert await store.claim(at(2), {"a": 5}, 5, lease("w2", 90, "a")) == Claim([], at(60))


async def test_cancel_by_id(store: Store) -> None:
    keep, drop = await store.schedule([new(), new()])
    assert await store.cancel(drop) is True
    assert await store.cancel(drop) is False
    assert await store.cancel(10**12) is False
    assert [c.id for c in await store.pending(PendingQuery())] == [keep]
    # A cancelled call is never claimed.
    assert [c.id for c in (await store.claim(at(1), {"a": 5}, 5)).calls] == [keep]


async def test_cancel_identifier_counts_and_spares_others(store: Store) -> None:
    await store.schedule(
        [new(identifier="x"), new("b", identifier="x"), new(identifier="y"), new()]
    )
    assert await store.cancel_identifier("x") == 2
    assert await store.cancel_identifier("x") == 0
    left = await store.pending(PendingQuery())
    assert sorted(str(c.identifier) for c in left) == ["None", "y"]


async def test_pending_filters(store: Store) -> None:
    await store.schedule(
        [
            new("a", due=1, identifier="i"),
            new("a", due=2),
            new("b", due=3, identifier="i"),
            new("b", due=4),
        ]
    )

    async def dues(query: PendingQuery) -> list[float]:
        return [(c.due_at - T0).total_seconds() for c in await store.pending(query)]

    assert await dues(PendingQuery()) == [1, 2, 3, 4]
    assert await dues(PendingQuery(name="b")) == [3, 4]
    assert await dues(PendingQuery(identifier="i")) == [1, 3]
    assert await dues(PendingQuery(due_after=at(2), due_before=at(4))) == [2, 3]
    assert await dues(PendingQuery(limit=2)) == [1, 2]
    assert await dues(PendingQuery(limit=0)) == []
    assert await dues(PendingQuery(name="b", identifier="i")) == [3]


async def test_pending_counts_in_one_query(store: Store) -> None:
    assert await store.pending_counts(at(100)) == {}
    await store.schedule([new("a", due=1), new("a", due=5), new("gone", due=9)])
    assert await store.pending_counts(at(100)) == {
        "a": QueueLength(pending=2, due=2),
        "gone": QueueLength(pending=1, due=1),
    }
    assert await store.pending_counts(at(5)) == {
        "a": QueueLength(pending=2, due=2),
        "gone": QueueLength(pending=1, due=0),
    }
    assert await store.pending_counts(at(4)) == {
        "a": QueueLength(pending=2, due=1),
        "gone": QueueLength(pending=1, due=0),
    }


async def test_dead_letter_due_moves_a_whole_name_at_once(store: Store) -> None:
    await store.schedule(
        [new("ghost", 1, payload='{"n": 1}'), new("ghost", 2), new("ghost", 90), new("a", 1)]
    )
    # A ghost call running elsewhere (leased until 50) is not touched.
    (running,) = (await store.claim(at(3), {"ghost": 1}, 1, lease("other", 50, "ghost"))).calls
    moved = await store.dead_letter_due("ghost", at(10), "no such class", at(10))
    assert moved == 1
    (dead,) = await store.dead_letters()
    assert (dead.name, dead.payload, dead.error, dead.failed_at) == (
        "ghost",
        "null",
        "no such class",
        at(10),
    )
    assert dead.call_id != running.id
    left = sorted((c.name, c.due_at) for c in await store.pending(PendingQuery()))
    assert left == [("a", at(1)), ("ghost", at(90))]
    # Once the lease expired, the row is due like any other, and moves too.
    assert await store.dead_letter_due("ghost", at(60), "no such class", at(60)) == 1
    assert await store.dead_letter_due("ghost", at(60), "no such class", at(60)) == 0
    assert len(await store.dead_letters()) == 2


async def test_listeners_hear_the_earliest_due_time(store: Store) -> None:
    heard: list[datetime] = []
    remove = store.add_listener(heard.append)
    await store.schedule([new(due=9), new(due=4)])
    with trio.move_on_after(5):
        while not heard:  # noqa: ASYNC110 - a store may deliver from another connection
            await trio.sleep(0.01)
    assert at(4) in heard
    remove()
    count = len(heard)
    await store.schedule([new(due=1)])
    await trio.sleep(0.2)
    assert len(heard) == count


async def test_dead_letters_keep_call_and_reason(store: Store) -> None:
    (call_id,) = await store.schedule([new("a", due=1, identifier="k", payload='{"x":1}')])
    (call,) = (await store.claim(at(1), {"a": 1}, 1)).calls
    dead_id = await store.dead_letter(call, "boom", at(2))
    (dead,) = await store.dead_letters()
    assert dead.id == dead_id
    assert dead.call_id == call_id
    assert (dead.name, dead.payload, dead.identifier) == ("a", '{"x":1}', "k")
    assert (dead.due_at, dead.failed_at, dead.error, dead.attempts) == (at(1), at(2), "boom", 1)
    assert await store.dead_letters(name="other") == []


async def test_requeue_dead_letter_makes_it_pending_again(store: Store) -> None:
    await store.schedule([new("a", payload="[1]")])
    (call,) = (await store.claim(at(1), {"a": 1}, 1)).calls
    dead_id = await store.dead_letter(call, "boom", at(1))
    assert dead_id is not None
    new_id = await store.requeue_dead_letter(dead_id, at(5))
    assert new_id is not None
    assert await store.dead_letters() == []
    (pending,) = await store.pending(PendingQuery())
    assert (pending.id, pending.name, pending.payload, pending.due_at) == (
        new_id,
        "a",
        "[1]",
        at(5),
    )
    assert await store.requeue_dead_letter(dead_id, at(5)) is None


async def test_purge_dead_letters(store: Store) -> None:
    await store.schedule([new(), new(), new()])
    calls = (await store.claim(at(1), {"a": 3}, 3)).calls
    dead_ids = [await store.dead_letter(c, "x", at(1)) for c in calls]
    assert dead_ids[0] is not None
    assert await store.purge_dead_letters([dead_ids[0], 10**12]) == 1
    assert len(await store.dead_letters()) == 2
    assert await store.purge_dead_letters() == 2
    assert await store.dead_letters() == []


async def test_sessions_are_distinct_and_closed_after(store: Store) -> None:
    call = StoredCall(id=1, name="a", payload="null", due_at=T0, identifier=None, scheduled_at=T0)
    async with store.open_session(call) as first, store.open_session(call) as second:
        assert first is not second
    assert getattr(first, "closed", True) is True
    assert getattr(second, "closed", True) is True


# -- at-least-once: leases ------------------------------------------------------------


def lease(owner: str, until: float, *names: str) -> Lease:
    return Lease(owner=owner, expires_at=at(until), names=frozenset(names or ("a",)))


async def test_claim_counts_attempts(store: Store) -> None:
    await store.schedule([new(), attrs.evolve(new(), attempts=2)])
    first, second = (await store.claim(at(1), {"a": 5}, 5)).calls
    assert (first.attempts, second.attempts) == (1, 3)


async def test_leased_rows_stay_but_are_not_pending(store: Store) -> None:
    (leased_id,) = await store.schedule([new("a", due=1)])
    (deleted_id,) = await store.schedule([new("b", due=2)])
    claimed = (await store.claim(at(5), {"a": 5, "b": 5}, 5, lease("w1", 100, "a"))).calls
    assert [(c.id, c.due_at, c.attempts) for c in claimed] == [
        (leased_id, at(1), 1),
        (deleted_id, at(2), 1),
    ]
    # Neither is pending while the lease holds; a leased row cannot be cancelled (its
    # call is running).
    assert await store.pending(PendingQuery()) == []
    assert await store.pending(PendingQuery(now=at(99))) == []
    assert await store.pending_counts(at(99)) == {}
    assert await store.cancel(leased_id) is False
    # Once the lease expired (its worker died), the row is pending, and due, again.
    assert await store.pending_counts(at(100)) == {"a": QueueLength(pending=1, due=1)}
    (expired,) = await store.pending(PendingQuery(now=at(100)))
    assert (expired.id, expired.due_at) == (leased_id, at(100))
    # Another worker cannot take it while the lease holds...
    # ...and the store knows when it could: at the lease's expiry.
    assert await store.claim(at(99), {"a": 5}, 5, lease("w2", 200)) == Claim([], at(100))


async def test_expired_lease_is_claimed_again_with_the_next_attempt(store: Store) -> None:
    (call_id,) = await store.schedule([new()])
    await store.claim(at(1), {"a": 1}, 1, lease("dead-worker", 30))
    (again,) = (await store.claim(at(30), {"a": 1}, 1, lease("w2", 60))).calls
    assert (again.id, again.attempts) == (call_id, 2)
    # The first owner lost it: it can neither renew, complete nor release it.
    assert await store.renew("dead-worker", [call_id], at(90)) == set()
    assert await store.complete("dead-worker", call_id) is False
    assert await store.release("dead-worker", call_id, at(1)) is False
    assert await store.complete("w2", call_id) is True
    assert (await store.claim(at(1000), {"a": 1}, 1, lease("w3", 2000))).calls == []


async def test_renew_extends_only_owned_leases(store: Store) -> None:
    ids = await store.schedule([new(), new()])
    await store.claim(at(1), {"a": 1}, 1, lease("w1", 30))
    await store.claim(at(1), {"a": 1}, 1, lease("w2", 30))
    assert await store.renew("w1", ids, at(90)) == {ids[0]}
    assert await store.renew("w1", [], at(90)) == set()
    # w2's lease expired at 30; w1's now runs to 90.
    (taken,) = (await store.claim(at(60), {"a": 5}, 5, lease("w3", 120))).calls
    assert taken.id == ids[1]


async def test_release_makes_the_call_pending_again(store: Store) -> None:
    (call_id,) = await store.schedule([new(identifier="k")])
    await store.claim(at(1), {"a": 1}, 1, lease("w1", 30))
    heard: list[datetime] = []
    store.add_listener(heard.append)
    assert await store.release("w1", call_id, at(5)) is True
    (pending,) = await store.pending(PendingQuery())
    assert (pending.id, pending.due_at, pending.attempts) == (call_id, at(5), 1)
    assert pending.identifier == "k"
    # A shutdown release gives the attempt back.
    await store.claim(at(5), {"a": 1}, 1, lease("w1", 30))
    assert await store.release("w1", call_id, at(6), refund_attempt=True) is True
    (pending,) = await store.pending(PendingQuery())
    assert pending.attempts == 1
    with trio.move_on_after(5):
        while not heard:  # noqa: ASYNC110 - a store may deliver from another connection
            await trio.sleep(0.01)
    assert heard


async def test_dead_letter_of_a_leased_call_removes_the_row(store: Store) -> None:
    (call_id,) = await store.schedule([new()])
    (call,) = (await store.claim(at(1), {"a": 1}, 1, lease("w1", 30))).calls
    await store.dead_letter(call, "gave up", at(2), owner="w1")
    (dead,) = await store.dead_letters()
    assert (dead.call_id, dead.attempts, dead.error) == (call_id, 1, "gave up")
    assert (await store.claim(at(1000), {"a": 1}, 1)).calls == []


async def test_dead_letter_after_the_lease_was_lost_writes_nothing(store: Store) -> None:
    (call_id,) = await store.schedule([new()])
    (stale,) = (await store.claim(at(1), {"a": 1}, 1, lease("w1", 30))).calls
    await store.claim(at(30), {"a": 1}, 1, lease("w2", 60))  # w1's lease expired
    assert await store.dead_letter(stale, "too late", at(31), owner="w1") is None
    assert await store.dead_letters() == []
    assert await store.complete("w2", call_id) is True


async def test_put_back_hands_back_calls_that_did_not_start(store: Store) -> None:
    heard: list[datetime] = []
    store.add_listener(heard.append)
    deleted_id, leased_id, other_id = await store.schedule(
        [new("a", 1, identifier="k"), new("b", 2), new("b", 3)]
    )
    (retried_id,) = await store.schedule([attrs.evolve(new("a", 4), attempts=2)])
    claim = await store.claim(at(10), {"a": 5, "b": 1}, 5, lease("w1", 100, "b"))
    taken = {c.id: c for c in claim.calls}
    assert set(taken) == {deleted_id, leased_id, retried_id}
    heard.clear()
    # As a scheduler hands back calls that did not start: the claim's attempt refunded.
    back = [attrs.evolve(c, attempts=c.attempts - 1) for c in claim.calls]
    assert await store.put_back(back, "w1") == 3
    # As if never claimed: same ids, due times and attempts; nothing leased.
    pending = {c.id: c for c in await store.pending(PendingQuery())}
    assert set(pending) == {deleted_id, leased_id, other_id, retried_id}
    assert pending[deleted_id] == attrs.evolve(taken[deleted_id], attempts=0)
    assert (pending[leased_id].due_at, pending[leased_id].attempts) == (at(2), 0)
    assert pending[retried_id].attempts == 2
    with trio.move_on_after(5):
        while not heard:  # noqa: ASYNC110 - a store may deliver from another connection
            await trio.sleep(0.01)
    assert heard
    assert min(heard) <= at(1)
    # They are claimed again in due order, as before.
    again = await store.claim(at(10), {"a": 5, "b": 5}, 10)
    assert [c.id for c in again.calls] == [deleted_id, leased_id, other_id, retried_id]


async def test_put_back_as_a_retry_keeps_the_id(store: Store) -> None:
    (call_id,) = await store.schedule([new("a", 1)])
    (call,) = (await store.claim(at(1), {"a": 1}, 1)).calls
    assert await store.put_back([attrs.evolve(call, due_at=at(50))], None) == 1
    (pending,) = await store.pending(PendingQuery())
    assert (pending.id, pending.due_at, pending.attempts) == (call_id, at(50), 1)
    assert await store.claim(at(10), {"a": 1}, 1) == Claim([], at(50))


async def test_put_back_leaves_calls_another_worker_holds(store: Store) -> None:
    (call_id,) = await store.schedule([new()])
    (stale,) = (await store.claim(at(1), {"a": 1}, 1, lease("w1", 30))).calls
    await store.claim(at(30), {"a": 1}, 1, lease("w2", 60))  # w1's lease expired
    assert await store.put_back([stale], "w1") == 0
    assert await store.complete("w2", call_id) is True
    # A pending row with that id is not stored twice either.
    (back_id,) = await store.schedule([new()])
    (call,) = (await store.claim(at(1), {"a": 1}, 1)).calls
    assert await store.put_back([call], None) == 1
    assert await store.put_back([call], None) == 0
    assert [c.id for c in await store.pending(PendingQuery())] == [back_id]
    assert await store.put_back([], None) == 0


# -- bad arguments: the same InvalidArgumentError on every store -----------------------

NAIVE = datetime(2030, 1, 1)
#: Past the largest id SQLite's INTEGER and PostgreSQL's bigint hold.
TOO_BIG = 2**63


def stored(call_id: int = 1, **changes: Any) -> StoredCall:
    call = StoredCall(
        id=call_id, name="a", payload="null", due_at=T0, identifier=None, scheduled_at=T0
    )
    return attrs.evolve(call, **changes)


#: (what, a call of the store that must raise InvalidArgumentError and change nothing).
BAD_CALLS: list[tuple[str, Callable[[Store], Awaitable[object]]]] = [
    ("schedule naive due_at", lambda s: s.schedule([attrs.evolve(new(), due_at=NAIVE)])),
    ("schedule str due_at", lambda s: s.schedule([attrs.evolve(new(), due_at="2030")])),  # type: ignore[arg-type]
    ("schedule past datetime.max", lambda s: s.schedule([attrs.evolve(new(), due_at=MAX_UTC)])),
    ("schedule a str", lambda s: s.schedule("abc")),  # type: ignore[arg-type]
    ("schedule not a NewCall", lambda s: s.schedule([object()])),  # type: ignore[list-item]
    ("schedule bad name", lambda s: s.schedule([new("has space")])),
    ("schedule bytes name", lambda s: s.schedule([attrs.evolve(new(), name=b"a")])),  # type: ignore[arg-type]
    ("schedule bytes payload", lambda s: s.schedule([new(payload=b"1")])),  # type: ignore[arg-type]
    ("schedule surrogate payload", lambda s: s.schedule([new(payload='"\ud800"')])),
    ("schedule empty identifier", lambda s: s.schedule([new(identifier="")])),
    ("schedule negative attempts", lambda s: s.schedule([attrs.evolve(new(), attempts=-1)])),
    ("schedule bool attempts", lambda s: s.schedule([attrs.evolve(new(), attempts=True)])),
    ("cancel bool", lambda s: s.cancel(True)),
    ("cancel str", lambda s: s.cancel("1")),  # type: ignore[arg-type]
    ("cancel zero", lambda s: s.cancel(0)),
    ("cancel beyond 64 bits", lambda s: s.cancel(TOO_BIG)),
    ("cancel_identifier None", lambda s: s.cancel_identifier(None)),  # type: ignore[arg-type]
    ("cancel_identifier empty", lambda s: s.cancel_identifier("")),
    ("pending not a query", lambda s: s.pending("a")),  # type: ignore[arg-type]
    ("pending negative limit", lambda s: s.pending(PendingQuery(limit=-1))),
    ("pending bool limit", lambda s: s.pending(PendingQuery(limit=True))),
    ("pending huge limit", lambda s: s.pending(PendingQuery(limit=TOO_BIG))),
    ("pending naive due_after", lambda s: s.pending(PendingQuery(due_after=NAIVE))),
    ("pending int name", lambda s: s.pending(PendingQuery(name=5))),  # type: ignore[arg-type]
    ("pending_counts naive", lambda s: s.pending_counts(NAIVE)),
    ("pending_counts str", lambda s: s.pending_counts("now")),  # type: ignore[arg-type]
    ("claim naive now", lambda s: s.claim(NAIVE, {"a": 1}, 1)),
    ("claim negative limit", lambda s: s.claim(at(1), {"a": 1}, -1)),
    ("claim str slots", lambda s: s.claim(at(1), {"a": "1"}, 1)),  # type: ignore[dict-item]
    (
        "claim naive lease",
        lambda s: s.claim(at(1), {"a": 1}, 1, attrs.evolve(lease("w", 9), expires_at=NAIVE)),
    ),
    ("put_back a str", lambda s: s.put_back("abc", None)),  # type: ignore[arg-type]
    ("put_back naive", lambda s: s.put_back([stored(due_at=NAIVE)], None)),
    ("put_back int owner", lambda s: s.put_back([stored()], 5)),  # type: ignore[arg-type]
    ("renew str ids", lambda s: s.renew("w", "12", at(9))),  # type: ignore[arg-type]
    ("renew bool id", lambda s: s.renew("w", [True], at(9))),
    ("renew naive", lambda s: s.renew("w", [1], NAIVE)),
    ("complete bool id", lambda s: s.complete("w", True)),
    ("complete int owner", lambda s: s.complete(5, 1)),  # type: ignore[arg-type]
    ("release naive", lambda s: s.release("w", 1, NAIVE)),
    ("release str refund", lambda s: s.release("w", 1, at(1), refund_attempt="no")),  # type: ignore[arg-type]
    ("dead_letter not a call", lambda s: s.dead_letter("call", "e", at(1))),  # type: ignore[arg-type]
    ("dead_letter int error", lambda s: s.dead_letter(stored(), 5, at(1))),  # type: ignore[arg-type]
    ("dead_letter naive", lambda s: s.dead_letter(stored(), "e", NAIVE)),
    ("dead_letter_due int name", lambda s: s.dead_letter_due(5, at(1), "e", at(1))),  # type: ignore[arg-type]
    ("dead_letter_due naive", lambda s: s.dead_letter_due("a", NAIVE, "e", at(1))),
    ("dead_letters negative limit", lambda s: s.dead_letters(limit=-1)),
    ("dead_letters str limit", lambda s: s.dead_letters(limit="2")),  # type: ignore[arg-type]
    ("dead_letters bytes name", lambda s: s.dead_letters(name=b"a")),  # type: ignore[arg-type]
    ("requeue naive", lambda s: s.requeue_dead_letter(1, NAIVE)),
    ("requeue str time", lambda s: s.requeue_dead_letter(1, "2030-01-01")),  # type: ignore[arg-type]
    ("requeue int time", lambda s: s.requeue_dead_letter(1, 1893456000)),  # type: ignore[arg-type]
    ("requeue bool id", lambda s: s.requeue_dead_letter(True, at(1))),
    ("requeue huge id", lambda s: s.requeue_dead_letter(TOO_BIG, at(1))),
    ("purge a str of digits", lambda s: s.purge_dead_letters("12")),  # type: ignore[arg-type]
    ("purge [True]", lambda s: s.purge_dead_letters([True])),
    ("purge ['1']", lambda s: s.purge_dead_letters(["1"])),  # type: ignore[list-item]
    ("purge an int", lambda s: s.purge_dead_letters(1)),  # type: ignore[arg-type]
    ("purge a huge id", lambda s: s.purge_dead_letters([TOO_BIG])),
]


@pytest.mark.parametrize(("what", "bad_call"), BAD_CALLS, ids=[what for what, _ in BAD_CALLS])
async def test_bad_arguments_raise_invalid_argument_and_change_nothing(
    store: Store, what: str, bad_call: Callable[[Store], Awaitable[object]]
) -> None:
    await store.schedule([new("a", 1)])
    (call,) = (await store.claim(at(1), {"a": 1}, 1)).calls
    dead_ids = [await store.dead_letter(call, "boom", at(1))]
    await store.schedule([new("a", 2, identifier="k")])
    before = (await store.pending(PendingQuery()), await store.dead_letters())
    assert dead_ids == [1]  # so that a typo like purge_dead_letters("12") could hit it
    with pytest.raises(InvalidArgumentError):
        await bad_call(store)
    assert (await store.pending(PendingQuery()), await store.dead_letters()) == before


async def test_bad_listener_and_session_arguments(store: Store) -> None:
    with pytest.raises(InvalidArgumentError):
        store.add_listener(5)  # type: ignore[arg-type]
    with pytest.raises(InvalidArgumentError):
        async with store.open_session("call"):  # type: ignore[arg-type]
            pass


async def test_times_in_other_zones_are_stored_as_utc(store: Store) -> None:
    zone = timezone(timedelta(hours=-5))
    local = T0.astimezone(zone)
    (call_id,) = await store.schedule([attrs.evolve(new(), due_at=local, scheduled_at=local)])
    (call,) = await store.pending(PendingQuery())
    assert (call.id, call.due_at, call.due_at.utcoffset()) == (call_id, T0, timedelta(0))


async def test_the_earliest_and_latest_storable_times(store: Store) -> None:
    await store.schedule(
        [attrs.evolve(new(), due_at=EARLIEST_TIME), attrs.evolve(new(), due_at=LATEST_TIME)]
    )
    assert [c.due_at for c in await store.pending(PendingQuery())] == [EARLIEST_TIME, LATEST_TIME]
    for outside in (
        EARLIEST_TIME - timedelta(microseconds=1),
        LATEST_TIME + timedelta(microseconds=1),
    ):
        with pytest.raises(InvalidArgumentError, match="between"):
            await store.schedule([attrs.evolve(new(), due_at=outside)])


# -- unique keys ---------------------------------------------------------------------------


def keyed(
    key: str,
    on_conflict: OnConflict = "ignore",
    *,
    name: str = "a",
    due: float = 0.0,
    payload: str = "null",
    identifier: str | None = None,
) -> NewCall:
    return attrs.evolve(
        new(name, due, identifier=identifier, payload=payload),
        unique_key=key,
        on_conflict=on_conflict,
    )


Row = tuple[int, str, str, datetime, str | None, str | None]


async def pending_rows(store: Store) -> list[Row]:
    return [
        (c.id, c.name, c.payload, c.due_at, c.identifier, c.unique_key)
        for c in await store.pending(PendingQuery(now=at(0)))
    ]


async def test_unique_key_ignore_returns_the_pending_call(store: Store) -> None:
    (first,) = await store.schedule([keyed("k", payload="1", due=5, identifier="x")])
    assert await store.schedule([keyed("k", payload="2", due=1)]) == [first]
    assert await store.schedule([keyed("k", "ignore", payload="3")]) == [first]
    # Nothing changed; the key shows in pending().
    assert await pending_rows(store) == [(first, "a", "1", at(5), "x", "k")]
    # The same key under another name, or another key, is another call.
    other_name, other_key = await store.schedule([keyed("k", name="b"), keyed("k2")])
    assert len({first, other_name, other_key}) == 3


async def test_unique_key_replace_changes_payload_due_time_and_identifier(store: Store) -> None:
    first, plain = await store.schedule([keyed("k", payload="1", due=50, identifier="x"), new()])
    assert await store.schedule([keyed("k", "replace", payload="2", due=5)]) == [first]
    (row,) = [r for r in await pending_rows(store) if r[0] == first]
    assert row == (first, "a", "2", at(5), None, "k")
    # The new due time is the one claims see (and the old one is gone).
    claim = await store.claim(at(5), {"a": 5}, 5)
    assert [c.id for c in claim.calls] == [plain, first]
    assert [c.payload for c in claim.calls] == ["null", "2"]
    assert await store.claim(at(100), {"a": 5}, 5) == Claim([], None)


async def test_unique_key_error_raises_and_stores_nothing_of_the_batch(store: Store) -> None:
    (first,) = await store.schedule([keyed("k", payload="1")])
    with pytest.raises(DuplicateCallError, match=rf"'k'.*{first}") as caught:
        await store.schedule([new("b"), keyed("k2"), keyed("k", "error", payload="2")])
    assert caught.value.call_id == first
    assert caught.value.unique_key == "k"
    assert isinstance(caught.value, InvalidArgumentError)
    # All or nothing: neither the plain call nor the other key of that batch is stored.
    assert await pending_rows(store) == [(first, "a", "1", at(0), None, "k")]
    (second,) = await store.schedule([keyed("k2", "error")])
    assert second != first


async def test_a_claim_frees_the_key(store: Store) -> None:
    (first,) = await store.schedule([keyed("k", payload="1")])
    (claimed,) = (await store.claim(at(0), {"a": 1}, 1)).calls
    assert claimed.id == first
    assert claimed.unique_key is None
    (second,) = await store.schedule([keyed("k", "error", payload="2")])
    assert second != first
    # Handed back (or stored again as a retry), the first call no longer holds the key.
    assert await store.put_back([claimed], None) == 1
    assert sorted(await pending_rows(store)) == [
        (first, "a", "1", at(0), None, None),
        (second, "a", "2", at(0), None, "k"),
    ]


async def test_a_lease_frees_the_key_and_the_released_call_has_none(store: Store) -> None:
    (first,) = await store.schedule([keyed("k", payload="1")])
    (claimed,) = (await store.claim(at(0), {"a": 1}, 1, lease("w1", 60))).calls
    assert claimed.unique_key is None
    (second,) = await store.schedule([keyed("k", "error", payload="2")])
    assert second != first
    assert await pending_rows(store) == [(second, "a", "2", at(0), None, "k")]
    # Once the lease expired, the row is pending again, without the key.
    expired = await store.pending(PendingQuery(now=at(60)))
    assert [(c.id, c.unique_key) for c in expired] == [(second, "k"), (first, None)]
    # Released (a retry, or shutdown): pending again, still without the key.
    assert await store.release("w1", first, at(3), refund_attempt=True)
    assert await store.schedule([keyed("k", payload="3")]) == [second]
    claimed_again = (await store.claim(at(3), {"a": 2}, 2, lease("w1", 60))).calls
    assert [c.id for c in claimed_again] == [second, first]
    # Both claimed: the key is free again.
    (third,) = await store.schedule([keyed("k", "error")])
    assert third not in (first, second)


async def test_an_expired_lease_does_not_take_the_key_back(store: Store) -> None:
    (first,) = await store.schedule([keyed("k")])
    await store.claim(at(0), {"a": 1}, 1, lease("w1", 10))
    (second,) = await store.schedule([keyed("k", due=20)])
    # The first call's lease expires; another worker claims it again, no conflict.
    (again,) = (await store.claim(at(10), {"a": 1}, 1, lease("w2", 100))).calls
    assert again.id == first
    assert again.attempts == 2
    assert await store.schedule([keyed("k", "replace", due=30)]) == [second]
    assert [(c.id, c.unique_key) for c in await store.pending(PendingQuery(now=at(50)))] == [
        (second, "k")
    ]


async def test_cancel_frees_the_key(store: Store) -> None:
    first, other = await store.schedule([keyed("k", identifier="x"), keyed("k2", identifier="x")])
    assert await store.cancel(first)
    (second,) = await store.schedule([keyed("k", "error")])
    assert second != first
    assert await store.cancel_identifier("x") == 1  # "other" only: "second" has none
    assert await store.schedule([keyed("k2", "error")]) != [other]
    assert await store.dead_letter_due("a", at(0), "gone", at(0)) == 2
    assert await store.pending(PendingQuery()) == []
    (third,) = await store.schedule([keyed("k", "error")])
    assert third not in (first, second)


async def test_repeated_keys_within_one_batch(store: Store) -> None:
    # A later request conflicts with the earlier one as with a pending call.
    ids = await store.schedule(
        [
            keyed("k", payload="1", due=5),
            new(),
            keyed("k", payload="2"),  # ignore
            keyed("j", payload="3", due=7),
            keyed("j", "replace", payload="4", due=2, identifier="y"),
        ]
    )
    assert ids[0] == ids[2]
    assert ids[3] == ids[4]
    assert len(set(ids)) == 3
    assert sorted(await pending_rows(store)) == sorted(
        [
            (ids[0], "a", "1", at(5), None, "k"),
            (ids[1], "a", "null", at(0), None, None),
            (ids[3], "a", "4", at(2), "y", "j"),
        ]
    )
    # ...with a pending holder: a later "replace" in the batch replaces the holder.
    assert await store.schedule([keyed("k", payload="5"), keyed("k", "replace", payload="6")]) == [
        ids[0],
        ids[0],
    ]
    (row,) = [r for r in await pending_rows(store) if r[0] == ids[0]]
    assert row[2] == "6"
    # "error" against an earlier request of the same batch: nothing stored.
    with pytest.raises(DuplicateCallError) as caught:
        await store.schedule([keyed("n"), new(), keyed("n", "error")])
    assert caught.value.call_id is None
    assert len(await store.pending(PendingQuery())) == 3


async def test_identifiers_are_not_unique_keys(store: Store) -> None:
    # Identifiers stay as they were: many calls may share one, with or without keys.
    ids = await store.schedule(
        [new(identifier="user:7"), keyed("k", identifier="user:7"), new(identifier="user:7")]
    )
    assert len(set(ids)) == 3
    found = await store.pending(PendingQuery(identifier="user:7"))
    assert [c.unique_key for c in found] == [None, "k", None]
    assert await store.cancel_identifier("user:7") == 3


@pytest.mark.parametrize(
    ("changes", "match"),
    [
        ({"unique_key": ""}, "unique_key must not be empty"),
        ({"unique_key": "k" * 256}, "unique_key is 256 characters long"),
        ({"unique_key": 7}, "unique_key must be a str"),
        ({"unique_key": "a\x00b"}, "NUL"),
        ({"unique_key": "\udc80"}, "lone surrogate"),
        ({"on_conflict": "update"}, "on_conflict must be one of"),
        ({"on_conflict": None}, "on_conflict must be one of"),
    ],
)
async def test_bad_unique_keys_are_refused(
    store: Store, changes: dict[str, Any], match: str
) -> None:
    with pytest.raises(InvalidArgumentError, match=match):
        await store.schedule([new(), attrs.evolve(keyed("k"), **changes)])
    assert await store.pending(PendingQuery()) == []
    # The longest key is fine.
    assert len(await store.schedule([keyed("k" * 255)])) == 1

"""Paused classes in every store: ``pause``, ``resume``, ``paused``, and the claim
leaving paused names out (rows not taken, not counted in ``next_due``).

The ``store`` fixture (tests/conftest.py) runs each test once per adapter.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from trio_futurecalls import InvalidArgumentError, Lease, NewCall, PendingQuery, Store

T0 = datetime(2030, 1, 1, tzinfo=UTC)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def new(name: str, due: float = 0.0) -> NewCall:
    return NewCall(name=name, payload="null", due_at=at(due), identifier=None, scheduled_at=T0)


async def test_pause_resume_and_paused(store: Store) -> None:
    assert await store.paused() == {}
    assert await store.pause("b", at(1)) is True
    assert await store.pause("a", at(2)) is True
    # Paused already: False, and it keeps the time it was first paused.
    assert await store.pause("b", at(3)) is False
    paused = await store.paused()
    assert paused == {"a": at(2), "b": at(1)}
    assert list(paused) == ["a", "b"]
    assert all(t.utcoffset() == timedelta(0) for t in paused.values())
    assert await store.resume("b") is True
    assert await store.resume("b") is False
    assert await store.resume("never") is False
    assert await store.paused() == {"a": at(2)}


async def test_pause_takes_any_time_zone_and_the_longest_name(store: Store) -> None:
    longest = "n" * 200
    two_hours_east = timezone(timedelta(hours=2))
    assert await store.pause(longest, T0.replace(tzinfo=two_hours_east))
    assert await store.paused() == {longest: T0 - timedelta(hours=2)}


@pytest.mark.parametrize(
    ("name", "now"),
    [
        ("", T0),
        ("n" * 201, T0),
        (3, T0),
        ("a\x00b", T0),
        ("a", datetime(2030, 1, 1)),  # naive
        ("a", "2030-01-01T00:00:00Z"),
    ],
)
async def test_pause_refuses_bad_arguments(store: Store, name: object, now: object) -> None:
    with pytest.raises(InvalidArgumentError):
        await store.pause(name, now)  # type: ignore[arg-type]
    assert await store.paused() == {}


@pytest.mark.parametrize("name", ["", "n" * 201, None, b"a"])
async def test_resume_refuses_bad_names(store: Store, name: object) -> None:
    with pytest.raises(InvalidArgumentError):
        await store.resume(name)  # type: ignore[arg-type]


@pytest.mark.parametrize("leased", [(), ("a",), ("b",), ("a", "b")])
async def test_claim_skips_paused_names(store: Store, leased: tuple[str, ...]) -> None:
    """Whichever claim statement runs (delete, lease, both)."""
    a_ids = await store.schedule([new("a", 1), new("a", 2)])
    b_ids = await store.schedule([new("b", 3), new("b", 4)])
    await store.pause("a", T0)
    lease = Lease(owner="w1", expires_at=at(600), names=frozenset(leased))
    claim = await store.claim(at(10), {"a": 5, "b": 5}, 10, lease)
    assert [c.id for c in claim.calls] == b_ids
    # Paused rows stay pending (and due), untouched.
    pending = await store.pending(PendingQuery(name="a"))
    assert [(c.id, c.attempts) for c in pending] == [(a_ids[0], 0), (a_ids[1], 0)]
    counts = await store.pending_counts(at(10))
    assert (counts["a"].pending, counts["a"].due) == (2, 2)
    # Not in next_due either (only a leased b row's lease expiry, if any).
    assert claim.next_due == (at(600) if "b" in leased else None)

    assert await store.resume("a")
    claim = await store.claim(at(10), {"a": 5, "b": 5}, 10, lease)
    assert [c.id for c in claim.calls] == a_ids


async def test_next_due_ignores_paused_names(store: Store) -> None:
    await store.schedule([new("a", 5), new("b", 20), new("c", 1)])
    await store.pause("a", T0)
    claim = await store.claim(at(0), {"a": 1, "b": 1, "c": 1}, 3)
    assert claim.calls == []
    assert claim.next_due == at(1)
    await store.pause("c", T0)
    assert (await store.claim(at(0), {"a": 1, "b": 1, "c": 1}, 3)).next_due == at(20)
    # Only paused names asked for: nothing taken, nothing coming.
    claim = await store.claim(at(100), {"a": 1, "c": 1}, 2)
    assert (claim.calls, claim.next_due) == ([], None)
    await store.resume("a")
    assert (await store.claim(at(0), {"a": 1, "c": 1}, 2)).next_due == at(5)


async def test_pausing_one_name_leaves_the_others_whole(store: Store) -> None:
    """With the global limit shared, a paused name's due rows take none of it."""
    await store.schedule([new("a", i) for i in range(5)])
    b_ids = await store.schedule([new("b", 10 + i) for i in range(3)])
    await store.pause("a", T0)
    claim = await store.claim(at(20), {"a": 3, "b": 3}, 3)
    assert [c.id for c in claim.calls] == b_ids


async def test_resume_notifies_listeners(store: Store) -> None:
    woken: list[datetime] = []
    remove = store.add_listener(woken.append)
    try:
        await store.pause("a", T0)
        assert await store.resume("never paused") is False
        assert woken == []  # (pause and a resume that did nothing wake no one)
        await store.schedule([new("a", 1_000_000)])
        woken.clear()
        assert await store.resume("a") is True
        # At once, and earlier than anything a dispatcher could be sleeping towards.
        assert woken
        assert min(woken) < T0
    finally:
        remove()

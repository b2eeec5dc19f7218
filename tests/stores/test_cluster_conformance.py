"""Cluster-wide limits on every store: tokens taken in the claim, never more than the
limit, freed by the holder or by its worker's death; rate windows; the limit on all
classes; next_due when a limit holds calls back.

The ``store`` fixture (tests/conftest.py) runs each test once per adapter. Workers are
registered directly (``register_worker``): a concurrency token is taken only by a
live worker.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from trio_futurecalls import (
    ALL_CLASSES,
    ClusterLimit,
    InvalidArgumentError,
    Lease,
    NewCall,
    RateLimit,
    Store,
    WorkerInfo,
)

T0 = datetime(2030, 1, 1, tzinfo=UTC)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def new(name: str = "a", due: float = 0.0, **more: Any) -> NewCall:
    return NewCall(name=name, payload="null", due_at=at(due), scheduled_at=T0, **more)


def lease(owner: str, names: frozenset[str] = frozenset()) -> Lease:
    return Lease(owner=owner, expires_at=at(3600), names=names)


def concurrency(name: str, tokens: int) -> ClusterLimit:
    return ClusterLimit(kind="concurrency", name=name, tokens=tokens, set_at=T0, set_by="test")


def rate(name: str, tokens: int, per: float) -> ClusterLimit:
    return ClusterLimit(
        kind="rate", name=name, tokens=tokens, per=timedelta(seconds=per), set_at=T0
    )


async def register(store: Store, worker: str, until: float = 100.0) -> None:
    await store.register_worker(
        WorkerInfo(id=worker, host="h", pid=1, started_at=T0, heartbeat_at=T0, expires_at=at(until))
    )


async def claim(
    store: Store,
    now: float,
    worker: str | None = "w1",
    slots: dict[str, int] | None = None,
    limit: int = 100,
) -> tuple[list[int], frozenset[int], datetime | None]:
    taken = await store.claim(
        at(now), slots or {"a": 100, "b": 100}, limit, None if worker is None else lease(worker)
    )
    return [c.id for c in taken.calls], taken.holding, taken.next_due


async def test_no_limit_means_no_tokens(store: Store) -> None:
    await register(store, "w1")
    ids = await store.schedule([new("a"), new("a")])
    got, holding, _ = await claim(store, 1)
    assert got == ids
    assert holding == frozenset()


async def test_a_concurrency_limit_holds_across_workers(store: Store) -> None:
    await register(store, "w1")
    await register(store, "w2")
    assert await store.set_cluster_limit(concurrency("a", 2)) is None
    ids = await store.schedule([new("a", due=i) for i in range(5)])
    got, holding, _ = await claim(store, 10, "w1", {"a": 1})
    assert got == ids[:1]
    assert holding == {ids[0]}
    got, holding, _next_due = await claim(store, 10, "w2")
    assert got == ids[1:2]
    assert holding == {ids[1]}
    # Both tokens are held by live workers: nothing more, anywhere, and the claim says
    # to look again when a holder would expire (here both at 100 s).
    assert await claim(store, 10, "w1") == ([], frozenset(), at(100))
    assert await claim(store, 10, "w2") == ([], frozenset(), at(100))
    # The holder frees its token: the next call may start (on any worker).
    assert await store.free_tokens("w2", [ids[1], 999]) == 1
    assert await store.free_tokens("w2", [ids[1]]) == 0  # freeing twice is harmless
    got, holding, _ = await claim(store, 10, "w1")
    assert got == ids[2:3]
    assert holding == {ids[2]}


async def test_only_the_holder_frees_a_token(store: Store) -> None:
    await register(store, "w1")
    await register(store, "w2")
    await store.set_cluster_limit(concurrency("a", 1))
    ids = await store.schedule([new("a"), new("a")])
    assert (await claim(store, 1, "w1"))[0] == ids[:1]
    assert await store.free_tokens("w2", [ids[0]]) == 0
    assert (await claim(store, 1, "w2"))[0] == []


async def test_a_dead_workers_tokens_are_free(store: Store) -> None:
    await register(store, "w1", until=20)
    await register(store, "w2", until=1000)
    await store.set_cluster_limit(concurrency("a", 1))
    ids = await store.schedule([new("a"), new("a")])
    assert (await claim(store, 1, "w1"))[0] == ids[:1]
    assert await claim(store, 19, "w2") == ([], frozenset(), at(20))
    # w1 did not renew by 20 s: it is dead, and its token goes to the next claimer.
    got, holding, _ = await claim(store, 20, "w2")
    assert got == ids[1:]
    assert holding == {ids[1]}


async def test_no_live_worker_no_concurrency_token(store: Store) -> None:
    await store.set_cluster_limit(concurrency("a", 3))
    await register(store, "w1", until=5)
    ids = await store.schedule([new("a"), new("b")])
    # Without a lease, or with a worker that is not registered or expired, calls of a
    # limited class are not taken (their token would not be known as held); others are.
    assert (await claim(store, 1, None))[0] == ids[1:]
    assert (await claim(store, 1, "stranger"))[0] == []
    assert (await claim(store, 6, "w1"))[0] == []
    got, holding, _ = await claim(store, 1, "w1")
    assert got == ids[:1]
    assert holding == {ids[0]}


async def test_the_limit_on_all_classes(store: Store) -> None:
    await register(store, "w1")
    await store.set_cluster_limit(concurrency(ALL_CLASSES, 3))
    a = await store.schedule([new("a", due=i) for i in range(3)])
    b = await store.schedule([new("b", due=i + 0.5) for i in range(3)])
    got, holding, next_due = await claim(store, 10)
    # The best three across classes, each holding a token of the limit on all.
    assert got == [a[0], b[0], a[1]]
    assert holding == set(got)
    # It took the last tokens itself: their calls' ends wake it (free_tokens).
    assert next_due is None
    assert await claim(store, 10) == ([], frozenset(), at(100))
    assert await store.free_tokens("w1", [b[0]]) == 1
    got, holding, _ = await claim(store, 10)
    assert got == [b[1]]


async def test_class_and_global_limits_together(store: Store) -> None:
    await register(store, "w1")
    await store.set_cluster_limit(concurrency(ALL_CLASSES, 3))
    await store.set_cluster_limit(concurrency("a", 1))
    a = await store.schedule([new("a", due=i) for i in range(3)])
    b = await store.schedule([new("b", due=i + 0.5) for i in range(3)])
    got, _, _ = await claim(store, 10)
    # a may run one at a time: it does not take the places of b's calls.
    assert got == [a[0], b[0], b[1]]


async def test_a_rate_limit_spreads_starts_over_windows(store: Store) -> None:
    await store.set_cluster_limit(rate("a", 2, per=10))
    ids = await store.schedule([new("a", due=i * 0.1) for i in range(5)])
    got, holding, _next_due = await claim(store, 1, None)
    assert got == ids[:2]
    assert holding == frozenset()  # rate tokens are not held: nothing to free
    # No token until the window after the first start ends; the claim says when.
    assert await claim(store, 5, None) == ([], frozenset(), at(11))
    assert (await claim(store, 11, None))[0] == ids[2:4]
    assert (await claim(store, 20.9, None))[0] == []
    assert (await claim(store, 21, None))[0] == ids[4:]


async def test_rate_limit_counts_every_worker(store: Store) -> None:
    await register(store, "w1")
    await register(store, "w2")
    await store.set_cluster_limit(rate("a", 3, per=60))
    ids = await store.schedule([new("a") for _ in range(6)])
    got1 = (await claim(store, 1, "w1", {"a": 2}))[0]
    got2 = (await claim(store, 2, "w2"))[0]
    assert len(got1) == 2
    assert len(got2) == 1
    assert (await claim(store, 30, "w1"))[0] == []
    assert sorted(got1 + got2) == ids[:3]


async def test_rate_and_concurrency_on_one_class(store: Store) -> None:
    await register(store, "w1")
    await store.set_cluster_limit(rate("a", 2, per=10))
    await store.set_cluster_limit(concurrency("a", 5))
    ids = await store.schedule([new("a") for _ in range(4)])
    got, holding, _ = await claim(store, 1)
    assert got == ids[:2]
    assert holding == set(ids[:2])
    await store.free_tokens("w1", ids[:2])
    assert (await claim(store, 2))[0] == []  # the rate, not the concurrency, holds them


async def test_raising_and_lowering_a_limit(store: Store) -> None:
    await register(store, "w1")
    await store.set_cluster_limit(concurrency("a", 1))
    ids = await store.schedule([new("a", due=i) for i in range(6)])
    assert (await claim(store, 10))[0] == ids[:1]
    previous = await store.set_cluster_limit(concurrency("a", 3))
    assert previous is not None
    assert previous.tokens == 1
    assert (await claim(store, 10))[0] == ids[1:3]
    # Lowered below what runs: nothing is stopped, and nothing new starts until
    # fewer than the new limit run.
    await store.set_cluster_limit(concurrency("a", 2))
    assert (await claim(store, 10))[0] == []
    await store.free_tokens("w1", [ids[0]])
    assert (await claim(store, 10))[0] == []  # still two running
    await store.free_tokens("w1", [ids[1]])
    assert (await claim(store, 10))[0] == ids[3:4]


async def test_removing_a_limit_lets_calls_start(store: Store) -> None:
    await register(store, "w1")
    await store.set_cluster_limit(concurrency("a", 1))
    ids = await store.schedule([new("a"), new("a")])
    assert (await claim(store, 1))[0] == ids[:1]
    assert await store.remove_cluster_limit("concurrency", "a")
    assert not await store.remove_cluster_limit("concurrency", "a")
    assert (await claim(store, 1))[0] == ids[1:]
    assert await store.free_tokens("w1", [ids[0]]) == 0  # its token went with the limit


async def test_cluster_limits_lists_what_is_stored(store: Store) -> None:
    assert await store.cluster_limits() == []
    await store.set_cluster_limit(rate("b", 5, per=1.5))
    await store.set_cluster_limit(concurrency("b", 2))
    await store.set_cluster_limit(concurrency(ALL_CLASSES, 7))
    limits = await store.cluster_limits()
    assert [(lim.kind, lim.name, lim.tokens, lim.per) for lim in limits] == [
        ("concurrency", "*", 7, None),
        ("concurrency", "b", 2, None),
        ("rate", "b", 5, timedelta(seconds=1.5)),
    ]
    assert limits[1].set_by == "test"
    assert limits[1].set_at == T0


async def test_setting_a_limit_wakes_listeners(store: Store) -> None:
    woken: list[datetime] = []
    store.add_listener(woken.append)
    await store.set_cluster_limit(concurrency("a", 1))
    assert woken


async def test_freeing_a_token_wakes_listeners(store: Store) -> None:
    await register(store, "w1")
    await store.set_cluster_limit(concurrency("a", 1))
    (call_id,) = await store.schedule([new("a")])
    await claim(store, 1)
    woken: list[datetime] = []
    store.add_listener(woken.append)
    await store.free_tokens("w1", [call_id])
    assert woken


async def test_leased_calls_hold_tokens_too(store: Store) -> None:
    await register(store, "w1")
    await store.set_cluster_limit(concurrency("a", 1))
    ids = await store.schedule([new("a"), new("a")])
    taken = await store.claim(at(1), {"a": 5}, 5, lease("w1", frozenset({"a"})))
    assert [c.id for c in taken.calls] == ids[:1]
    assert taken.holding == {ids[0]}
    assert await store.complete("w1", ids[0])
    assert (await claim(store, 2))[0] == []  # completing does not free the token
    await store.free_tokens("w1", [ids[0]])
    assert (await claim(store, 2))[0] == ids[1:]


@pytest.mark.parametrize(
    "make",
    [
        lambda: ClusterLimit(kind="concurrency", name="a", tokens=0, set_at=T0),
        lambda: ClusterLimit(kind="rate", name="a", tokens=1, set_at=T0),
        lambda: ClusterLimit(
            kind="concurrency", name="a", tokens=1, per=timedelta(seconds=1), set_at=T0
        ),
        lambda: ClusterLimit(kind="bogus", name="a", tokens=1, set_at=T0),  # type: ignore[arg-type]
        lambda: ClusterLimit(
            kind="rate", name=ALL_CLASSES, tokens=1, per=timedelta(seconds=1), set_at=T0
        ),
        lambda: ClusterLimit(kind="concurrency", name="a b", tokens=1, set_at=T0),
        lambda: RateLimit(0, 1),
        lambda: RateLimit(1, 0),
        lambda: RateLimit(1, timedelta(days=99999)),
        lambda: RateLimit(True, 1),
    ],
)
def test_bad_limits_are_refused(make: Any) -> None:
    with pytest.raises(InvalidArgumentError):
        make()


async def test_bad_store_arguments_are_refused(store: Store) -> None:
    with pytest.raises(InvalidArgumentError):
        await store.set_cluster_limit("a")  # type: ignore[arg-type]
    with pytest.raises(InvalidArgumentError):
        await store.remove_cluster_limit("rate", ALL_CLASSES)
    with pytest.raises(InvalidArgumentError):
        await store.free_tokens("", [1])

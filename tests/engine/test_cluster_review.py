"""Review of the cluster-wide limits on the engine (memory store, autojump clock).

Each test states the promise it checks: a cluster-wide concurrency limit is never
exceeded (calls whose ``invoke`` overlap), whatever the store's failures.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any, ClassVar

import trio
from trio.testing import MockClock

from trio_futurecalls import (
    Delivery,
    ExponentialBackoff,
    FutureCall,
    MemoryStore,
    NewCall,
    StoreError,
    open_scheduler,
)


class Overlap:
    """Counts the calls of one class running at once, and the most ever seen."""

    def __init__(self) -> None:
        self.now = 0
        self.most = 0

    def enter(self) -> None:
        self.now += 1
        self.most = max(self.most, self.now)

    def leave(self) -> None:
        self.now -= 1


class FreeFailsOnce(MemoryStore):
    """free_tokens fails (a store error that is not retried) the first time."""

    def __init__(self) -> None:
        super().__init__()
        self.failed = False

    async def free_tokens(self, owner: str, call_ids: Any) -> int:
        if not self.failed:
            self.failed = True
            raise StoreError("free_tokens: the store said no")
        return await super().free_tokens(owner, call_ids)


class Limited(FutureCall):
    """At most 2 at once across the cluster; the payload says what to do."""

    name = "limited"
    max_concurrent = None
    cluster_max_concurrent = 2
    delivery = Delivery.AT_LEAST_ONCE
    max_attempts = 2
    retry_backoff = ExponentialBackoff(base=1.0, jitter=0)
    overlap: ClassVar[Overlap] = Overlap()
    failed: ClassVar[set[str]] = set()

    async def invoke(self, session: Any, payload: Any) -> None:
        Limited.overlap.enter()
        try:
            if payload["fail_first"] and payload["tag"] not in Limited.failed:
                Limited.failed.add(payload["tag"])
                raise RuntimeError("first attempt fails")
            await trio.sleep(payload["sleep"])
        finally:
            Limited.overlap.leave()


class Other(FutureCall):
    """Another class under its own cluster-wide limit (its calls hold tokens too)."""

    name = "other"
    max_concurrent = None
    cluster_max_concurrent = 5

    async def invoke(self, session: Any, payload: Any) -> None:
        await trio.sleep(0.5)


def call(clock: Callable[[], datetime], name: str, payload: Any, after: float) -> NewCall:
    now = clock()
    return NewCall(
        name=name,
        payload=json.dumps(payload),
        due_at=now + timedelta(seconds=after),
        scheduled_at=now,
    )


async def test_a_token_left_unfreed_is_not_freed_again_under_the_calls_next_run(
    autojump_clock: MockClock, clock: Callable[[], datetime]
) -> None:
    # Call X fails its first attempt, and freeing its token then fails: the id goes
    # to CallWrites._unfreed. Its retry (same id, same worker) takes a new token. When
    # another call's end frees tokens, the retried id is freed with it: "owner = me
    # AND call_id = X" matches the token X's running retry holds, so the limit of 2
    # lets two more calls start while X still runs (3 at once).
    Limited.overlap = Overlap()
    Limited.failed = set()
    store = FreeFailsOnce()
    async with open_scheduler(
        store, [Limited, Other], clock=clock, max_concurrent=10, worker_timeout=30
    ):
        await store.schedule(
            [
                call(clock, Limited.name, {"tag": "x", "fail_first": True, "sleep": 20}, 0),
                call(clock, Other.name, None, 4),
                call(clock, Limited.name, {"tag": "z1", "fail_first": False, "sleep": 5}, 5),
                call(clock, Limited.name, {"tag": "z2", "fail_first": False, "sleep": 5}, 5),
            ]
        )
        await trio.sleep(60)
    assert store.failed
    assert Limited.overlap.most <= 2


class CutOff(MemoryStore):
    """The heartbeats and registrations of the workers named in ``cut_off`` fail (their
    claims still go through: a store slow or failing for some statements only)."""

    def __init__(self) -> None:
        super().__init__()
        self.cut_off: set[str] = set()

    async def register_worker(self, worker: Any) -> None:
        if worker.id in self.cut_off:
            raise StoreError("register: the store said no")
        await super().register_worker(worker)

    async def heartbeat(self, worker_id: str, *args: Any) -> bool:
        if worker_id in self.cut_off:
            raise StoreError("heartbeat: the store said no")
        return await super().heartbeat(worker_id, *args)


class One(FutureCall):
    """At most 1 at once across the cluster."""

    name = "one"
    max_concurrent = None
    cluster_max_concurrent = 1
    overlap: ClassVar[Overlap] = Overlap()

    async def invoke(self, session: Any, payload: Any) -> None:
        One.overlap.enter()
        try:
            await trio.sleep(payload)
        finally:
            One.overlap.leave()


async def test_a_call_claimed_after_a_lapse_does_not_run_past_its_workers_expiry(
    autojump_clock: MockClock, clock: Callable[[], datetime]
) -> None:
    # Worker 1's heartbeats fail from the start (timeout 30: lapse at 27, its row
    # expires at 30) and so do its registrations after the lapse. At the lapse, its
    # calls holding tokens are stopped (lose_slots). But its dispatcher goes on
    # claiming: a claim at 28 still finds the row alive (until 30), takes the token,
    # and starts the call; nothing stops that one. From 30 the row is dead and worker
    # 2 takes the same token: two calls of a class limited to 1 run at once.
    One.overlap = Overlap()
    store = CutOff()
    async with open_scheduler(store, [One], clock=clock, worker_timeout=30) as s1:
        store.cut_off.add(s1.owner)
        await store.schedule([call(clock, One.name, 100, 28)])
        await trio.sleep(29)
        async with open_scheduler(store, [One], clock=clock, worker_timeout=30):
            await store.schedule([call(clock, One.name, 10, 2)])
            await trio.sleep(10)
            assert One.overlap.most <= 1

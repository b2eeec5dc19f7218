"""Group commit on every store: concurrent one-call schedules share one batch, and a
failing call of a batch fails only its own caller (``_group_commit.py``).

Run on memory, SQLite and PostgreSQL (the ``store`` fixture). Behaviour only: how
many batches were written and who got what, never how fast.
"""

from __future__ import annotations

from typing import Any

import pytest
import trio
import trio.lowlevel

from trio_futurecalls import (
    CallRequest,
    DuplicateCallError,
    FutureCall,
    PendingQuery,
    PrerequisiteError,
    SchedulerClosedError,
    Store,
    open_scheduler,
    schedule_call,
    schedule_many,
)
from trio_futurecalls._group_commit import group_for


class Job(FutureCall):
    name = "job"
    max_concurrent = None

    async def invoke(self, session: Any, payload: Any) -> None:
        pass


async def _pending_ids(store: Store) -> set[int]:
    return {c.id for c in await store.pending(PendingQuery(name="job"))}


async def test_concurrent_callers_share_one_batch_and_each_gets_its_own_id(
    store: Store,
) -> None:
    group = group_for(store)
    assert group is not None
    ids: dict[int, int] = {}

    async def one(k: int) -> None:
        ids[k] = await schedule_call(store, "job", k, delay=3600)

    async with trio.open_nursery() as nursery:
        for k in range(50):
            nursery.start_soon(one, k)
    assert group.batches == 1
    assert group.calls == 50
    assert len(set(ids.values())) == 50
    pending = {c.id: c.payload for c in await store.pending(PendingQuery(name="job"))}
    assert pending == {call_id: str(k) for k, call_id in ids.items()}


async def test_a_lone_caller_writes_a_batch_of_one(store: Store) -> None:
    group = group_for(store)
    assert group is not None
    first = await schedule_call(store, "job", 1, delay=3600)
    second = await schedule_call(store, "job", 2, delay=3600)
    assert (group.batches, group.calls) == (2, 2)
    assert await _pending_ids(store) == {first, second}


async def test_a_conflicting_error_key_fails_only_its_caller(store: Store) -> None:
    # (Through schedule_many, which is not grouped: the burst below is the first the
    # batcher sees, so its first caller waits for the others.)
    (holder,) = await schedule_many(
        store, [CallRequest(call_class="job", payload="holder", unique_key="k", delay=3600)]
    )
    group = group_for(store)
    assert group is not None
    ids: dict[int, int] = {}
    errors: dict[int, BaseException] = {}

    async def one(k: int) -> None:
        try:
            if k == 3:
                ids[k] = await schedule_call(
                    store, "job", k, unique_key="k", on_conflict="error", delay=3600
                )
            else:
                ids[k] = await schedule_call(store, "job", k, delay=3600)
        except DuplicateCallError as exc:
            errors[k] = exc

    before = group.batches
    async with trio.open_nursery() as nursery:
        for k in range(10):
            nursery.start_soon(one, k)
    assert group.batches == before + 1  # one batch, replayed call by call
    assert set(errors) == {3}
    assert isinstance(errors[3], DuplicateCallError)
    assert errors[3].call_id == holder
    assert set(ids) == set(range(10)) - {3}
    assert await _pending_ids(store) == {holder, *ids.values()}


async def test_two_callers_with_one_ignore_key_get_one_call(store: Store) -> None:
    ids: list[int] = []

    async def one(k: int) -> None:
        ids.append(await schedule_call(store, "job", k, unique_key="same", delay=3600))

    async with trio.open_nursery() as nursery:
        for k in range(5):
            nursery.start_soon(one, k)
    assert len(set(ids)) == 1  # as if scheduled one after another
    assert await _pending_ids(store) == set(ids)


async def test_a_missing_prerequisite_fails_only_its_caller(store: Store) -> None:
    ids: dict[int, int] = {}
    errors: list[int] = []

    async def one(k: int) -> None:
        after = (987_654_321,) if k == 0 else ()
        try:
            ids[k] = await schedule_call(store, "job", k, after=after, delay=3600)
        except PrerequisiteError:
            errors.append(k)

    async with trio.open_nursery() as nursery:
        for k in range(6):
            nursery.start_soon(one, k)
    assert errors == [0]
    assert set(ids) == {1, 2, 3, 4, 5}
    assert await _pending_ids(store) == set(ids.values())


async def test_scheduler_schedule_shares_the_producers_batches(store: Store) -> None:
    group = group_for(store)
    assert group is not None
    ids: list[int] = []
    async with open_scheduler(store, [Job], execute=False) as scheduler:
        before = group.batches

        async def one(k: int) -> None:
            ids.append(await scheduler.schedule(Job, k, delay=3600))

        async def producer(k: int) -> None:
            ids.append(await schedule_call(store, Job, k, delay=3600))

        async with trio.open_nursery() as nursery:
            for k in range(10):
                nursery.start_soon(one if k % 2 else producer, k)
        assert group.batches == before + 1
    assert await _pending_ids(store) == set(ids)
    assert len(ids) == 10


async def test_closing_the_scheduler_mid_batch_loses_and_duplicates_nothing(
    store: Store,
) -> None:
    """Callers still scheduling when the scheduler closes: each gets an id (its row is
    stored) or SchedulerClosedError (nothing stored); the batch in flight completes."""
    ids: list[int] = []
    refused: list[int] = []

    async def one(scheduler: Any, k: int) -> None:
        while True:  # until the scheduler refuses
            try:
                ids.append(await scheduler.schedule(Job, k, delay=3600))
            except SchedulerClosedError:
                refused.append(k)
                return

    async with (
        trio.open_nursery() as callers,
        open_scheduler(store, [Job], execute=False) as scheduler,
    ):
        for k in range(20):
            callers.start_soon(one, scheduler, k)
        await trio.lowlevel.checkpoint()  # the first batch is on its way
    assert sorted(refused) == list(range(20))
    assert len(ids) == len(set(ids))
    assert await _pending_ids(store) == set(ids)


@pytest.mark.parametrize("cancel_after", [0, 1, 2])
async def test_cancelled_callers_are_stored_exactly_when_told_their_id(
    store: Store, cancel_after: int
) -> None:
    """Cancelled at various points: a caller that returned an id has its row; one that
    saw Cancelled has none; nothing is stored twice."""
    results: dict[int, int] = {}

    async def one(k: int, scope: trio.CancelScope) -> None:
        with scope:
            results[k] = await schedule_call(store, "job", k, delay=3600)

    scopes = [trio.CancelScope() for _ in range(30)]
    async with trio.open_nursery() as nursery:
        for k, scope in enumerate(scopes):
            nursery.start_soon(one, k, scope)
        for _ in range(cancel_after):
            await trio.lowlevel.checkpoint()
        for scope in scopes[::3]:
            scope.cancel()
    stored = await store.pending(PendingQuery(name="job"))
    assert {c.id: c.payload for c in stored} == {i: str(k) for k, i in results.items()}

"""Group commit, the hostile cases, step by step (``_group_commit.py``).

A store whose ``schedule`` waits at a gate the test opens: the test decides what is
queued, what is in flight and when the write ends, then checks who was told what and
what was stored. Deterministic (``wait_all_tasks_blocked``), no real time.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, cast

import pytest
import trio
import trio.testing

from trio_futurecalls import (
    MemoryStore,
    NewCall,
    PendingQuery,
    Store,
    StoreError,
    StoreUnavailableError,
)
from trio_futurecalls._group_commit import GroupCommit

T0 = datetime(2030, 1, 1, tzinfo=UTC)


def _call(k: int) -> NewCall:
    return NewCall(name="job", payload=str(k), due_at=T0, scheduled_at=T0)


class GatedStore:
    """``schedule`` waits for :attr:`gate`, then fails with :attr:`fail` (once) or
    stores the calls in a memory store."""

    def __init__(self) -> None:
        self.inner = MemoryStore()
        self.gate = trio.Event()
        self.batches: list[list[str]] = []
        self.fail: Exception | None = None

    async def schedule(self, calls: Sequence[NewCall]) -> list[int]:
        # Sorted: Trio runs the tasks of one batch of its run loop in random order.
        self.batches.append(sorted(c.payload for c in calls))
        await self.gate.wait()
        if self.fail is not None:
            fail, self.fail = self.fail, None
            raise fail
        return await self.inner.schedule(calls)

    async def stored(self) -> dict[int, str]:
        return {c.id: c.payload for c in await self.inner.pending(PendingQuery())}


@pytest.fixture
def gated() -> GatedStore:
    return GatedStore()


def _group(store: GatedStore) -> GroupCommit:
    return GroupCommit(cast(Store, store))


async def _start(
    nursery: trio.Nursery,
    group: GroupCommit,
    k: int,
    results: dict[int, Any],
    scope: trio.CancelScope | None = None,
) -> None:
    """Start a caller; it has queued its call (in start order) when this returns."""

    async def run(task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        with scope or trio.CancelScope():
            task_status.started()  # no checkpoint before schedule() queues the call
            try:
                results[k] = await group.schedule(_call(k))
            except trio.Cancelled:
                results[k] = "cancelled"
                raise
            except Exception as exc:
                results[k] = exc

    await nursery.start(run)


def _spawn(nursery: trio.Nursery, group: GroupCommit, k: int, results: dict[int, Any]) -> None:
    """Start a caller that runs when the test next blocks (callers spawned together
    join one batch)."""

    async def run() -> None:
        try:
            results[k] = await group.schedule(_call(k))
        except Exception as exc:
            results[k] = exc

    nursery.start_soon(run)


async def test_callers_arriving_during_a_write_form_the_next_batch(gated: GatedStore) -> None:
    group = _group(gated)
    results: dict[int, Any] = {}
    async with trio.open_nursery() as nursery:
        await _start(nursery, group, 0, results)
        await trio.testing.wait_all_tasks_blocked()
        assert gated.batches == [["0"]]  # the first caller writes alone
        for k in range(1, 6):
            await _start(nursery, group, k, results)
        await trio.testing.wait_all_tasks_blocked()
        assert gated.batches == [["0"]]  # one batch in flight at a time
        gated.gate.set()
    assert gated.batches == [["0"], ["1", "2", "3", "4", "5"]]
    stored = await gated.stored()
    assert {results[k]: str(k) for k in range(6)} == stored


async def test_a_caller_cancelled_while_queued_is_not_stored(gated: GatedStore) -> None:
    group = _group(gated)
    results: dict[int, Any] = {}
    scopes = {k: trio.CancelScope() for k in range(4)}
    async with trio.open_nursery() as nursery:
        await _start(nursery, group, 0, results, scopes[0])
        await trio.testing.wait_all_tasks_blocked()
        for k in (1, 2, 3):
            await _start(nursery, group, k, results, scopes[k])
        await trio.testing.wait_all_tasks_blocked()
        scopes[1].cancel()  # it would have led the next batch
        scopes[3].cancel()
        await trio.testing.wait_all_tasks_blocked()
        gated.gate.set()
    assert results[1] == results[3] == "cancelled"
    assert gated.batches == [["0"], ["2"]]  # leadership passed on to caller 2
    assert await gated.stored() == {results[0]: "0", results[2]: "2"}


async def test_a_leader_cancelled_before_its_write_hands_the_batch_over(
    gated: GatedStore,
) -> None:
    group = _group(gated)
    results: dict[int, Any] = {}
    scopes = {k: trio.CancelScope() for k in range(3)}

    async def first() -> None:
        results[9] = await group.schedule(_call(9))
        # Caller 0 was just asked to lead the next batch: cancel it before it writes.
        scopes[0].cancel()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(first)
        await trio.testing.wait_all_tasks_blocked()
        for k in range(3):
            await _start(nursery, group, k, results, scopes[k])
        await trio.testing.wait_all_tasks_blocked()
        gated.gate.set()
    assert results[0] == "cancelled"
    assert gated.batches == [["9"], ["1", "2"]]
    assert await gated.stored() == {results[9]: "9", results[1]: "1", results[2]: "2"}


async def test_callers_cancelled_mid_write_are_told_their_id(gated: GatedStore) -> None:
    """Trio's rule: Cancelled means "did not happen". A call already in a batch being
    written is stored, so its caller gets its id (the cancel comes at its next
    checkpoint), the leader included."""
    group = _group(gated)
    results: dict[int, Any] = {}
    scopes = {k: trio.CancelScope() for k in range(3)}
    async with trio.open_nursery() as nursery:
        await _start(nursery, group, 9, results)
        await trio.testing.wait_all_tasks_blocked()
        for k in range(3):
            await _start(nursery, group, k, results, scopes[k])
        first_gate, gated.gate = gated.gate, trio.Event()
        first_gate.set()
        await trio.testing.wait_all_tasks_blocked()
        written = list(gated.batches)
        scopes[0].cancel()  # the leader, mid-write
        scopes[2].cancel()
        await trio.testing.wait_all_tasks_blocked()
        gated.gate.set()
    assert written == [["9"], ["0", "1", "2"]]
    assert all(isinstance(results[k], int) for k in range(3))
    assert await gated.stored() == {results[k]: str(k) for k in (9, 0, 1, 2)}


async def test_an_outage_mid_batch_fails_every_caller_and_is_not_replayed(
    gated: GatedStore,
) -> None:
    """The commit may have happened: replaying could store calls twice."""
    gated.fail = StoreUnavailableError("connection lost at commit")
    group = _group(gated)
    results: dict[int, Any] = {}
    async with trio.open_nursery() as nursery:
        for k in range(4):
            _spawn(nursery, group, k, results)
        await trio.testing.wait_all_tasks_blocked()
        gated.gate.set()
    assert gated.batches == [["0", "1", "2", "3"]]
    errors = [results[k] for k in range(4)]
    assert all(isinstance(e, StoreUnavailableError) for e in errors)
    assert len({id(e) for e in errors}) == 4  # each caller raises its own
    # The next callers are served as usual.
    assert isinstance(await group.schedule(_call(9)), int)


async def test_another_failure_is_replayed_call_by_call(gated: GatedStore) -> None:
    """Nothing of a failed batch was stored: each call runs again on its own."""
    gated.fail = StoreError("a bad batch")
    group = _group(gated)
    results: dict[int, Any] = {}
    async with trio.open_nursery() as nursery:
        for k in range(3):
            _spawn(nursery, group, k, results)
        await trio.testing.wait_all_tasks_blocked()
        gated.gate.set()
    assert gated.batches[0] == ["0", "1", "2"]
    assert sorted(gated.batches[1:]) == [["0"], ["1"], ["2"]]
    assert await gated.stored() == {results[k]: str(k) for k in range(3)}


async def test_a_failure_of_a_lone_call_is_its_callers(gated: GatedStore) -> None:
    gated.fail = StoreError("bad")
    gated.gate.set()
    group = _group(gated)
    with pytest.raises(StoreError, match="bad"):
        await group.schedule(_call(0))
    assert gated.batches == [["0"]]


async def test_after_a_batch_of_one_a_lone_caller_writes_at_once(gated: GatedStore) -> None:
    """One call at a time: no checkpoint to wait for others who never come. The first
    caller of a burst that follows writes alone; the rest form the next batch."""
    gated.gate.set()
    group = _group(gated)
    first = await group.schedule(_call(0))
    second = await group.schedule(_call(1))
    assert gated.batches == [["0"], ["1"]]
    gated.gate = trio.Event()
    results: dict[int, Any] = {}
    async with trio.open_nursery() as nursery:
        for k in range(2, 6):
            _spawn(nursery, group, k, results)
        await trio.testing.wait_all_tasks_blocked()
        assert len(gated.batches) == 3
        assert len(gated.batches[2]) == 1
        gated.gate.set()
    assert sorted(len(b) for b in gated.batches[2:]) == [1, 3]
    assert await gated.stored() == {
        first: "0",
        second: "1",
        **{results[k]: str(k) for k in range(2, 6)},
    }

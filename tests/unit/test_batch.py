"""GroupCommit: concurrent requests share store round trips; errors reach every caller."""

from __future__ import annotations

from collections.abc import Sequence

import pytest
import trio
import trio.testing

from trio_futurecalls import StoreError
from trio_futurecalls.stores._batch import Failed, GroupCommit


async def test_concurrent_submits_are_batched_and_answered_in_order() -> None:
    batches: list[list[int]] = []

    async def run(items: Sequence[int]) -> list[int]:
        batches.append(list(items))
        await trio.sleep(0.01)
        return [i * 10 for i in items]

    group: GroupCommit[int, int] = GroupCommit(run)
    results: dict[int, int] = {}

    async def submit(i: int) -> None:
        results[i] = await group.submit(i)

    async with trio.open_nursery() as nursery:
        for i in range(20):
            nursery.start_soon(submit, i)
    assert results == {i: i * 10 for i in range(20)}
    assert sorted(i for batch in batches for i in batch) == list(range(20))
    assert len(batches) < 20  # the first runs alone; the rest share batches
    assert await group.submit(7) == 70


async def test_a_failed_batch_fails_every_caller_in_it() -> None:
    async def run(items: Sequence[int]) -> list[int]:
        await trio.sleep(0.01)
        raise RuntimeError("disk full")

    group: GroupCommit[int, int] = GroupCommit(run)
    errors: list[BaseException] = []

    async def submit(i: int) -> None:
        try:
            await group.submit(i)
        except StoreError as exc:
            errors.append(exc)

    async with trio.open_nursery() as nursery:
        for i in range(5):
            nursery.start_soon(submit, i)
    assert len(errors) == 5
    assert all("disk full" in str(e) for e in errors)


async def test_cancelled_runner_hands_the_queue_over() -> None:
    release = trio.Event()

    async def run(items: Sequence[int]) -> list[int]:
        await release.wait()
        return list(items)

    group: GroupCommit[int, int] = GroupCommit(run)
    got: list[int] = []
    cancelled_scope = trio.CancelScope()

    async def runner() -> None:
        with cancelled_scope:
            await group.submit(1)

    async def waiter() -> None:
        got.append(await group.submit(2))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(runner)
        await trio.testing.wait_all_tasks_blocked()
        nursery.start_soon(waiter)  # queued behind the runner's batch
        await trio.testing.wait_all_tasks_blocked()
        cancelled_scope.cancel()  # the runner dies mid-batch; the waiter takes over
        await trio.testing.wait_all_tasks_blocked()
        release.set()
    assert cancelled_scope.cancelled_caught
    assert got == [2]


@pytest.mark.parametrize("n", [1, 3])
async def test_sequential_submits_run_one_batch_each(n: int) -> None:
    calls: list[Sequence[int]] = []

    async def run(items: Sequence[int]) -> list[bool]:
        calls.append(items)
        return [True for _ in items]

    group: GroupCommit[int, bool] = GroupCommit(run)
    for i in range(n):
        assert await group.submit(i) is True
    assert [list(c) for c in calls] == [[i] for i in range(n)]


async def test_a_waiter_that_gives_up_does_not_strand_the_ones_behind_it() -> None:
    release = trio.Event()

    async def run(items: Sequence[int]) -> list[int]:
        if 1 in items:
            await release.wait()
        return list(items)

    group: GroupCommit[int, int] = GroupCommit(run)
    got: list[int] = []
    quitter = trio.CancelScope()

    async def submit(i: int) -> None:
        got.append(await group.submit(i))

    async def give_up() -> None:
        with quitter:
            await group.submit(2)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(submit, 1)  # runs the first batch, which waits
        await trio.testing.wait_all_tasks_blocked()
        nursery.start_soon(give_up)  # first in the queue behind it...
        await trio.testing.wait_all_tasks_blocked()
        nursery.start_soon(submit, 3)  # ...then this one
        await trio.testing.wait_all_tasks_blocked()
        quitter.cancel()
        await trio.testing.wait_all_tasks_blocked()
        release.set()
        with trio.fail_after(5):
            while len(got) < 2:  # noqa: ASYNC110 - waiting on tasks of this nursery
                await trio.sleep(0.01)
    assert sorted(got) == [1, 3]


async def test_an_interrupted_batch_is_run_again_for_the_callers_still_waiting() -> None:
    # The runner's own deadline ends its batch half-way (the PostgreSQL store's writes
    # are bounded by the engine, not shielded): the others in that batch are not
    # failed, they are served by the next batch, within their own deadlines.
    batches: list[list[int]] = []
    first = trio.Event()

    async def run(items: Sequence[int]) -> list[int]:
        batches.append(list(items))
        if items[0] == 0:
            await first.wait()
        elif 1 in items:
            await trio.sleep_forever()  # a write stuck on the server
        return [i * 10 for i in items]

    group: GroupCommit[int, int] = GroupCommit(run)
    got: dict[int, int] = {}
    runner = trio.CancelScope()
    quitter = trio.CancelScope()

    async def submit(i: int) -> None:
        got[i] = await group.submit(i)

    async def bounded(i: int, scope: trio.CancelScope) -> None:
        with scope:
            await group.submit(i)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(submit, 0)  # runs the first batch, alone
        await trio.testing.wait_all_tasks_blocked()
        nursery.start_soon(bounded, 1, runner)  # will run the second batch...
        await trio.testing.wait_all_tasks_blocked()
        for i in (2, 3):  # ...which these share (queued in this order: one at a time)
            nursery.start_soon(submit, i)
            await trio.testing.wait_all_tasks_blocked()
        nursery.start_soon(bounded, 4, quitter)  # and this one, which gives up first
        await trio.testing.wait_all_tasks_blocked()
        first.set()
        await trio.testing.wait_all_tasks_blocked()
        assert batches[1] == [1, 2, 3, 4]
        quitter.cancel()
        await trio.testing.wait_all_tasks_blocked()
        runner.cancel()  # the runner's deadline: the batch is interrupted
    assert runner.cancelled_caught
    assert quitter.cancelled_caught
    assert got == {0: 0, 2: 20, 3: 30}
    assert batches[2] == [2, 3]  # run again, without the two that left


async def test_an_item_that_failed_alone_fails_only_its_caller() -> None:
    async def run(items: Sequence[int]) -> list[int | Failed]:
        await trio.sleep(0.01)
        return [Failed(StoreError(f"{i} is odd")) if i % 2 else i for i in items]

    group: GroupCommit[int, int] = GroupCommit(run)
    answers: dict[int, object] = {}

    async def submit(i: int) -> None:
        try:
            answers[i] = await group.submit(i)
        except StoreError as exc:
            answers[i] = str(exc)

    async with trio.open_nursery() as nursery:
        for i in range(6):
            nursery.start_soon(submit, i)
    assert answers == {0: 0, 1: "1 is odd", 2: 2, 3: "3 is odd", 4: 4, 5: "5 is odd"}


async def test_joining_the_round_puts_calls_finishing_together_in_one_batch() -> None:
    for join_round, sizes in ((False, [1, 4]), (True, [5])):
        batches: list[list[int]] = []

        async def run(items: Sequence[int], batches: list[list[int]] = batches) -> list[int]:
            batches.append(list(items))
            await trio.lowlevel.checkpoint()
            return list(items)

        group: GroupCommit[int, int] = GroupCommit(run, join_round=join_round)
        async with trio.open_nursery() as nursery:
            for i in range(5):  # five tasks of one scheduling round
                nursery.start_soon(group.submit, i)
        assert [len(b) for b in batches] == sizes, join_round
        assert sorted(i for b in batches for i in b) == list(range(5))


async def test_cancelled_while_joining_the_round_writes_nothing_and_hands_over() -> None:
    batches: list[list[int]] = []

    async def run(items: Sequence[int]) -> list[int]:
        batches.append(list(items))
        return list(items)

    group: GroupCommit[int, int] = GroupCommit(run, join_round=True)
    results: list[int] = []

    async def served() -> None:
        results.append(await group.submit(2))

    async def cancelled(nursery: trio.Nursery) -> None:
        # The first caller, so the one to take the batch; another queues while it
        # waits its checkpoint, where it is cancelled.
        nursery.start_soon(served)
        with trio.CancelScope() as scope:
            scope.cancel()
            await group.submit(1)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(cancelled, nursery)
    assert results == [2]
    assert all(1 not in b for b in batches)  # nothing of the cancelled caller was written
    assert await group.submit(3) == 3  # and the group is not left busy

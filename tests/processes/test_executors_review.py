"""Review of the executors: what a call waiting for a thread or a worker process,
an abandoned thread or a dead worker must not break (memory store, real time).

Orderings are checked by events and statistics, never by how long something took.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from pathlib import Path
from typing import Any

import pytest
import trio
from executor_checks import alive, wait_for
from executor_review_calls import Doze, Exits, getpid

from trio_futurecalls import (
    Delivery,
    Executor,
    FixedBackoff,
    FutureCall,
    InvalidArgumentError,
    MemoryStore,
    PendingQuery,
    open_scheduler,
    run_due_calls,
)


async def test_a_thread_call_waiting_for_a_thread_at_shutdown_goes_back() -> None:
    """The pool's one thread is taken; the second call waits for it when shutdown
    comes. It never ran: its row goes back (at-most-once), it is not lost."""
    release = threading.Event()
    ran: list[int] = []

    class Gate(FutureCall):
        name = "gate"
        executor = Executor.THREAD
        max_concurrent = 2

        def run(self, payload: Any) -> None:
            ran.append(payload)
            release.wait(timeout=30)

    store = MemoryStore()
    try:
        async with open_scheduler(store, [Gate], grace_period=0, max_threads=1) as s:
            await s.schedule(Gate, 1)
            await s.schedule(Gate, 2)
            await wait_for(lambda: s.statistics().classes["gate"].running == 2)
            assert s.statistics().threads.busy == 1
            await s.shutdown()
        assert len(ran) == 1
        pending = await store.pending(PendingQuery())
        assert [p.payload for p in pending] == [str(3 - ran[0])]
        stats = s.statistics().classes["gate"]
        assert (stats.started, stats.cancelled) == (1, 1)
    finally:
        release.set()


async def test_a_process_call_waiting_for_a_worker_at_shutdown_goes_back(tmp_path: Path) -> None:
    """The one worker process is busy; the second call waits for it when shutdown
    comes. It never ran: its row goes back (at-most-once), it is not lost."""
    store = MemoryStore()
    async with open_scheduler(store, [Doze], grace_period=0, max_processes=1) as s:
        for i in range(2):
            await s.schedule(Doze, {"out": str(tmp_path / f"d{i}"), "sleep": 60})
        await wait_for(lambda: s.statistics().classes["doze"].running == 2)
        await wait_for(lambda: len(list(tmp_path.iterdir())) == 1)
        await s.shutdown()
    ran = [p.name for p in tmp_path.iterdir()]  # noqa: ASYNC240
    assert len(ran) == 1
    pending = await store.pending(PendingQuery())
    assert len(pending) == 1
    assert ran[0] not in pending[0].payload
    stats = s.statistics().classes["doze"]
    assert (stats.started, stats.cancelled) == (1, 1)


async def test_an_idle_worker_killed_from_outside_does_not_fail_the_shutdown() -> None:
    """The OOM killer (or an operator) kills an idle worker process: the scheduler
    still closes cleanly (the next call would get a new worker)."""
    pids: list[int] = []

    class Ask(FutureCall):
        name = "ask"

        async def invoke(self, session: Any, payload: Any) -> None:
            pids.append(await self.to_process(getpid))

    async with open_scheduler(MemoryStore(), [Ask], max_processes=1) as s:
        await s.schedule(Ask, None)
        await wait_for(lambda: s.statistics().classes["ask"].succeeded == 1)
        os.kill(pids[0], signal.SIGKILL)
        await wait_for(lambda: not alive(pids[0]))
    assert s.statistics().classes["ask"].succeeded == 1


async def test_an_abandoned_thread_does_not_free_the_token_of_its_calls_next_run() -> None:
    """Attempt 1 abandons a thread and fails; attempt 2 (the retry) starts here
    while that thread still runs, with a token of the cluster-wide limit of its
    own. When the thread ends, attempt 1 frees its token: attempt 2's must stay
    taken (the store frees by worker and call id), or the limit could be exceeded."""
    stuck = threading.Event()
    second_started = trio.Event()
    second_release = trio.Event()

    class Twice(FutureCall):
        name = "twice"
        delivery = Delivery.AT_LEAST_ONCE
        max_concurrent = 2
        cluster_max_concurrent = 2
        max_attempts = 2
        retry_backoff = FixedBackoff(0.01)

        async def invoke(self, session: Any, payload: Any) -> None:
            if self.info.attempt == 1:
                with trio.move_on_after(0.05):  # the thread runs on, abandoned
                    await self.to_thread(stuck.wait, 30)
                raise RuntimeError("gave up waiting for the thread")
            second_started.set()
            await second_release.wait()

    def held() -> list[int | None]:
        return [t.call_id for t in store._cluster._tokens[("concurrency", "twice")] if t.call_id]

    store = MemoryStore()
    try:
        async with open_scheduler(store, [Twice], grace_period=2) as s:
            call_id = await s.schedule(Twice, None)
            with trio.fail_after(30):
                await second_started.wait()
            assert s.statistics().threads.abandoned == 1
            assert held() == [call_id, call_id]  # one per run
            stuck.set()  # attempt 1's thread ends: its run ends and frees its token
            await wait_for(lambda: s.statistics().classes["twice"].running == 1)
            assert s.statistics().threads.busy == 0
            # Attempt 2 still holds one (attempt 1's may stay taken with it: the
            # store frees a call's tokens together, when its last run here ends).
            assert call_id in held()
            second_release.set()
            await wait_for(lambda: s.statistics().classes["twice"].succeeded == 1)
        assert held() == []
    finally:
        stuck.set()


async def test_sys_exit_in_a_process_call_is_that_calls_failure() -> None:
    """SystemExit raised in the worker process is the call's failure (a dead letter
    with the worker's traceback), not an exit of the scheduler's process."""
    store = MemoryStore()
    async with open_scheduler(store, [Exits], max_processes=1) as s:
        await s.schedule(Exits, 2)
        await wait_for(lambda: s.statistics().classes["exits"].finished == 1)
        assert s.statistics().classes["exits"].failed == 1
    dead = await store.dead_letters()
    assert len(dead) == 1
    assert dead[0].error.strip().splitlines()[-1] == "SystemExit: 2"


async def test_sys_exit_in_to_process_is_that_calls_failure() -> None:
    """The same through ``to_process``: the call fails, the scheduler goes on."""

    class Delegates(FutureCall):
        name = "delegates"

        async def invoke(self, session: Any, payload: Any) -> None:
            await self.to_process(sys.exit, 3)

    store = MemoryStore()
    async with open_scheduler(store, [Delegates], max_processes=1) as s:
        await s.schedule(Delegates, None)
        await wait_for(lambda: s.statistics().classes["delegates"].finished == 1)
        assert s.statistics().classes["delegates"].failed == 1
    dead = await store.dead_letters()
    assert len(dead) == 1
    assert "SystemExit" in dead[0].error


async def test_run_once_mode_does_not_wait_for_an_abandoned_thread_beyond_grace() -> None:
    """run_due_calls (maintenance mode) with a THREAD call that times out while its
    thread stays stuck: the call is over (a dead letter); the run returns within
    the grace period, as a shutdown would, rather than when the thread ends."""
    stuck = threading.Event()

    class Hangs(FutureCall):
        name = "hangs"
        executor = Executor.THREAD
        timeout = 0.1

        def run(self, payload: Any) -> None:
            stuck.wait(timeout=60)

    store = MemoryStore()
    async with open_scheduler(store, [Hangs], execute=False) as s:
        await s.schedule(Hangs, None)
    try:
        with trio.fail_after(20):
            stats = await run_due_calls(store, [Hangs], grace_period=0.5)
        assert stats.classes["hangs"].failed == 1
        assert stats.threads.abandoned == 1
        assert len(await store.dead_letters()) == 1
    finally:
        stuck.set()


async def test_run_once_mode_runs_the_calls_queued_behind_a_thread_that_ends_in_grace() -> None:
    """The other side: when the abandoned thread ends within the grace period, the
    calls its slot held back still run in the same run."""
    slow = threading.Event()
    ran: list[int] = []

    class Slow(FutureCall):
        name = "slow"
        executor = Executor.THREAD
        timeout = 0.1

        def run(self, payload: int) -> None:
            ran.append(payload)
            if payload == 0:
                slow.wait(timeout=60)  # set once the call timed out

    store = MemoryStore()
    async with open_scheduler(store, [Slow], execute=False) as s:
        for i in range(3):
            await s.schedule(Slow, i)

    async def end_the_thread() -> None:
        await wait_for(lambda: len(ran) == 1)
        await trio.sleep(0.3)  # (past the call's timeout: its thread is abandoned)
        slow.set()

    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(end_the_thread)
            with trio.fail_after(20):
                stats = await run_due_calls(store, [Slow], grace_period=10)
        assert sorted(ran) == [0, 1, 2]
        assert (stats.classes["slow"].failed, stats.classes["slow"].succeeded) == (1, 2)
    finally:
        slow.set()


def test_a_process_class_with_an_inherited_async_run_is_refused_when_defined() -> None:
    """Otherwise its calls "succeed" without running: the worker calls run, gets a
    coroutine and drops it."""
    with pytest.raises(InvalidArgumentError, match="plain function"):
        import executor_async_mixin_calls  # noqa: F401

"""Executors in real time: calls in worker threads and processes (memory store).

Real time because threads and processes are real: the autojump clock would jump
while a thread or a worker process runs. Orderings are checked by events the calls
set, never by how long something took; the few time bounds are generous limits
against a hang, not speed targets.
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import trio
from executor_calls import Crunch, Failing, Napper, Point, Sleeper, Typed, burn, pid_and_sum
from executor_checks import alive, read, wait_for

from trio_futurecalls import (
    CancelOutcome,
    Delivery,
    Executor,
    FixedBackoff,
    FutureCall,
    InvalidArgumentError,
    MemoryStore,
    PendingQuery,
    Store,
    UnregisteredCallError,
    open_scheduler,
)
from trio_futurecalls.metrics import SchedulerCollector

# -- threads ----------------------------------------------------------------------


async def test_a_blocking_thread_call_does_not_delay_an_async_call() -> None:
    """The thread call blocks until the async call has run: were the loop blocked,
    the async call could not run and the test would hang (and fail)."""
    async_ran = threading.Event()
    thread_saw: list[bool] = []

    class Block(FutureCall):
        name = "block"
        executor = Executor.THREAD

        def run(self, payload: Any) -> None:
            thread_saw.append(async_ran.wait(timeout=20))

    class Quick(FutureCall):
        name = "quick"

        async def invoke(self, session: Any, payload: Any) -> None:
            async_ran.set()

    async with open_scheduler(MemoryStore(), [Block, Quick]) as s:
        await s.schedule(Block, None)
        await wait_for(lambda: s.statistics().threads.busy == 1)
        await s.schedule(Quick, None)
        await wait_for(lambda: s.statistics().total.succeeded == 2)
    assert thread_saw == [True]


async def test_thread_call_errors_are_the_calls_failure_and_are_retried() -> None:
    attempts: list[int] = []

    class Flaky(FutureCall):
        name = "flaky"
        executor = Executor.THREAD
        delivery = Delivery.AT_LEAST_ONCE
        max_attempts = 3
        retry_backoff = FixedBackoff(0.01)

        def run(self, payload: Any) -> None:
            attempts.append(self.info.attempt)
            if len(attempts) < 3:
                raise RuntimeError("not yet")

    async with open_scheduler(MemoryStore(), [Flaky]) as s:
        await s.schedule(Flaky, None)
        await wait_for(lambda: s.statistics().classes["flaky"].succeeded == 1)
        stats = s.statistics().classes["flaky"]
    assert attempts == [1, 2, 3]
    assert (stats.failed, stats.retried) == (2, 2)


async def test_an_abandoned_thread_keeps_its_slot_until_it_ends() -> None:
    """A THREAD call that times out is abandoned; the class limit (1) still counts
    it, so the next call starts only after the thread really ended."""
    release = threading.Event()
    ended_at: list[float] = []
    started_at: list[float] = []

    class Stuck(FutureCall):
        name = "stuck"
        executor = Executor.THREAD
        timeout = 0.2
        max_concurrent = 1

        def run(self, payload: dict[str, Any]) -> None:
            started_at.append(time.monotonic())
            if payload["block"]:
                release.wait(timeout=20)
                ended_at.append(time.monotonic())

    store = MemoryStore()
    async with open_scheduler(store, [Stuck], grace_period=5) as s:
        await s.schedule(Stuck, {"block": True})
        await wait_for(lambda: s.statistics().threads.abandoned == 1)
        await s.schedule(Stuck, {"block": False})
        # The first call timed out (a failure, counted), but its thread runs on: its
        # slot is still taken, so the second call waits although it is due.
        await wait_for(lambda: s.statistics().classes["stuck"].failed == 1)
        await trio.sleep(0.3)
        stats = s.statistics()
        assert stats.classes["stuck"].running == 1
        assert stats.threads.busy == 1
        assert len(started_at) == 1
        assert len(await store.pending(PendingQuery())) == 1
        gauges = {
            (family.name, sample.labels["executor"]): sample.value
            for family in SchedulerCollector(s).collect()
            if family.name.startswith("futurecalls_executor")
            for sample in family.samples
        }
        assert gauges == {
            ("futurecalls_executor_capacity", "thread"): 40,
            ("futurecalls_executor_capacity", "process"): s.options.max_processes,
            ("futurecalls_executor_busy", "thread"): 1,
            ("futurecalls_executor_busy", "process"): 0,
            ("futurecalls_executor_abandoned", "thread"): 1,
            ("futurecalls_executor_abandoned", "process"): 0,
        }
        release.set()
        await wait_for(lambda: s.statistics().classes["stuck"].succeeded == 1)
        stats = s.statistics()
    assert stats.threads.abandoned == 0
    assert stats.threads.busy == 0
    assert len(started_at) == 2
    assert started_at[1] > ended_at[0]


async def test_cancel_of_a_running_thread_call_abandons_it() -> None:
    release = threading.Event()

    class Wait(FutureCall):
        name = "wait"
        executor = Executor.THREAD

        def run(self, payload: Any) -> None:
            release.wait(timeout=20)

    async with open_scheduler(MemoryStore(), [Wait]) as s:
        call_id = await s.schedule(Wait, None)
        await wait_for(lambda: s.statistics().threads.busy == 1)
        assert await s.cancel(call_id) is CancelOutcome.RUNNING
        await wait_for(lambda: s.statistics().classes["wait"].cancelled == 1)
        assert s.statistics().threads.abandoned == 1
        release.set()
        await wait_for(lambda: s.statistics().threads.busy == 0)
        assert s.statistics().classes["wait"].running == 0


async def test_to_thread_and_to_process_from_an_async_invoke(tmp_path: Path) -> None:
    seen: list[Any] = []

    class Mixed(FutureCall):
        name = "mixed"

        async def invoke(self, session: Any, payload: Any) -> None:
            seen.append(session is not None)
            seen.append(await self.to_thread(burn, 1000))
            seen.append(await self.to_process(pid_and_sum, 2, 3))

    async with open_scheduler(MemoryStore(), [Mixed], max_processes=1) as s:
        await s.schedule(Mixed, None)
        await wait_for(lambda: s.statistics().classes["mixed"].finished == 1)
        assert s.statistics().classes["mixed"].succeeded == 1
    assert seen[:2] == [True, burn(1000)]
    pid, total = seen[2]
    assert total == 5
    assert pid != os.getpid()


# -- processes --------------------------------------------------------------------


async def test_process_calls_run_in_other_processes(tmp_path: Path) -> None:
    store = MemoryStore()
    async with open_scheduler(store, [Crunch], max_processes=2) as s:
        for i in range(4):
            await s.schedule(Crunch, {"n": 10_000 + i, "out": str(tmp_path / f"c{i}")})
        await wait_for(lambda: s.statistics().classes["crunch"].finished == 4)
        stats = s.statistics()
    assert stats.classes["crunch"].succeeded == 4
    assert stats.processes.capacity == 2
    pids = set()
    for i in range(4):
        got = read(tmp_path / f"c{i}")
        assert got["result"] == burn(10_000 + i)
        assert got["attempt"] == 1
        pids.add(got["pid"])
    assert os.getpid() not in pids
    assert 1 <= len(pids) <= 2


async def test_an_attrs_payload_is_decoded_in_the_worker(tmp_path: Path) -> None:
    out = tmp_path / "typed.json"
    async with open_scheduler(MemoryStore(), [Typed], max_processes=1) as s:
        await s.schedule(Typed, Point(3, 4), identifier=str(out))
        await wait_for(lambda: s.statistics().classes["typed"].finished == 1)
        assert s.statistics().classes["typed"].succeeded == 1
    assert read(out) | {"pid": 0} == {"pid": 0, "x": 3, "y": 4, "name": "typed"}


async def test_a_timed_out_process_call_is_killed_and_the_pool_goes_on(tmp_path: Path) -> None:
    """One worker process: a first call starts it (so that the timeout does not count
    the worker's start-up), the Sleeper times out in it and kills it, and the next
    call runs in a new worker."""
    store = MemoryStore()
    async with open_scheduler(store, [Sleeper, Crunch], max_processes=1) as s:
        await s.schedule(Crunch, {"n": 10, "out": str(tmp_path / "c0")})
        await wait_for(lambda: s.statistics().classes["crunch"].succeeded == 1)
        pid = read(tmp_path / "c0")["pid"]
        await s.schedule(Sleeper, {"out": str(tmp_path / "s"), "sleep": 60})
        await wait_for(lambda: s.statistics().classes["sleeper"].failed == 1)
        await wait_for(lambda: not alive(pid))
        await s.schedule(Crunch, {"n": 10, "out": str(tmp_path / "c1")})
        await wait_for(lambda: s.statistics().classes["crunch"].succeeded == 2)
    dead = await store.dead_letters()
    assert len(dead) == 1
    assert "timed out after 1.0 s" in dead[0].error
    assert read(tmp_path / "c1")["pid"] not in (pid, os.getpid())


async def test_shutdown_kills_running_process_calls_within_grace(tmp_path: Path) -> None:
    store = MemoryStore()
    async with open_scheduler(store, [Napper], grace_period=0.5, max_processes=1) as s:
        await s.schedule(Napper, {"out": str(tmp_path / "s"), "sleep": 60})
        await wait_for(lambda: (tmp_path / "s").exists())
        began = time.monotonic()
        await s.shutdown()
    took = time.monotonic() - began
    pid = read(tmp_path / "s")["pid"]
    assert took < 15, f"shutdown took {took:.1f} s with a grace of 0.5 s"
    assert not alive(pid)
    assert s.statistics().classes["napper"].cancelled == 1


async def test_cancel_of_a_running_process_call_kills_its_worker(tmp_path: Path) -> None:
    store = MemoryStore()
    async with open_scheduler(store, [Napper], max_processes=1) as s:
        call_id = await s.schedule(Napper, {"out": str(tmp_path / "n"), "sleep": 60})
        await wait_for(lambda: (tmp_path / "n").exists())
        assert await s.cancel(call_id) is CancelOutcome.RUNNING
        await wait_for(lambda: s.statistics().classes["napper"].cancelled == 1)
        pid = read(tmp_path / "n")["pid"]
        await wait_for(lambda: not alive(pid))
        await wait_for(lambda: s.statistics().processes.busy == 0)
    assert await store.dead_letters() == []


@pytest.mark.parametrize(
    ("kind", "attempts", "last_line"),
    [
        ("value", 3, "ValueError: boom value"),
        ("key", 1, "KeyError: 'no retry for this one'"),
        ("unpicklable", 3, "ValueError: cannot cross"),
        ("exit", 3, "trio_futurecalls.ProcessCallError: the worker process died"),
    ],
)
async def test_process_call_failures_come_back_as_text(
    tmp_path: Path, kind: str, attempts: int, last_line: str
) -> None:
    """A raised error's traceback crosses back as text (also when the exception
    cannot be pickled); ``no_retry_on`` is matched in the worker; a worker that dies
    under its call is a failed attempt, and the pool starts a new worker."""
    store = MemoryStore()
    out = str(tmp_path / "f")
    async with open_scheduler(store, [Failing], max_processes=1) as s:
        await s.schedule(Failing, {"kind": kind, "out": out})
        await wait_for(lambda: s.statistics().classes["failing"].dead_lettered == 1)
    dead = await store.dead_letters()
    assert len(dead) == 1
    assert dead[0].error.strip().splitlines()[-1].startswith(last_line)
    assert dead[0].attempts == attempts
    tried = sorted(p.name for p in tmp_path.iterdir())  # noqa: ASYNC240
    assert tried == [f"f.{i}" for i in range(1, attempts + 1)]


async def test_thread_and_process_calls_on_every_store(store: Store, tmp_path: Path) -> None:
    """No session is opened for THREAD and PROCESS calls; both delivery modes finish
    their rows on every store."""
    ran: list[int] = []

    class Blocking(FutureCall):
        name = "blocking"
        executor = Executor.THREAD
        delivery = Delivery.AT_LEAST_ONCE

        def run(self, payload: dict[str, int]) -> None:
            time.sleep(0.01)
            ran.append(payload["i"])

    async with open_scheduler(store, [Blocking, Crunch], max_processes=1) as s:
        for i in range(3):
            await s.schedule(Blocking, {"i": i})
            await s.schedule(Crunch, {"n": 100, "out": str(tmp_path / f"c{i}")})
        await wait_for(lambda: s.statistics().total.finished == 6)
        assert s.statistics().total.succeeded == 6
        assert await store.pending(PendingQuery()) == []
    assert sorted(ran) == [0, 1, 2]
    assert {read(tmp_path / f"c{i}")["result"] for i in range(3)} == {burn(100)}


# -- definitions ------------------------------------------------------------------


def test_executor_classes_are_checked_when_defined() -> None:
    with pytest.raises(InvalidArgumentError, match="must be an Executor"):

        class BadKind(FutureCall):
            name = "bad-kind"
            executor = "thread"  # type: ignore[assignment]

    with pytest.raises(InvalidArgumentError, match="implement run"):

        class InvokeInThread(FutureCall):
            name = "invoke-in-thread"
            executor = Executor.THREAD

            async def invoke(self, session: Any, payload: Any) -> None: ...

    with pytest.raises(InvalidArgumentError, match="plain function"):

        class AsyncRun(FutureCall):
            name = "async-run"
            executor = Executor.THREAD

            async def run(self, payload: Any) -> None:  # type: ignore[override]
                ...

    with pytest.raises(InvalidArgumentError, match="module level"):

        class Local(FutureCall):
            name = "local"
            executor = Executor.PROCESS

            def run(self, payload: Any) -> None: ...

    with pytest.raises(InvalidArgumentError, match="set executor"):

        class RunWithoutExecutor(FutureCall):
            name = "run-without-executor"

            def run(self, payload: Any) -> None: ...


async def test_a_thread_class_without_run_is_not_registered() -> None:
    class NoRun(FutureCall):
        name = "no-run"
        executor = Executor.THREAD

    with pytest.raises(UnregisteredCallError, match="does not implement run"):
        async with open_scheduler(MemoryStore(), [NoRun]):
            pass


@pytest.mark.parametrize("bad", [0, -1, 1.5, True, "4", None])
async def test_pool_sizes_are_validated(bad: object) -> None:
    with pytest.raises(InvalidArgumentError, match="max_threads"):
        async with open_scheduler(MemoryStore(), [], max_threads=bad):  # type: ignore[arg-type]
            pass
    with pytest.raises(InvalidArgumentError, match="max_processes"):
        async with open_scheduler(MemoryStore(), [], max_processes=bad):  # type: ignore[arg-type]
            pass


async def test_pool_capacity_shows_in_statistics() -> None:
    async with open_scheduler(MemoryStore(), [], max_threads=7, max_processes=3) as s:
        stats = s.statistics()
    assert (stats.threads.capacity, stats.threads.busy, stats.threads.abandoned) == (7, 0, 0)
    assert (stats.processes.capacity, stats.processes.busy) == (3, 0)


async def test_shutdown_abandons_a_stuck_thread_call_after_grace() -> None:
    release = threading.Event()

    class Stuck(FutureCall):
        name = "stuck"
        executor = Executor.THREAD

        def run(self, payload: Any) -> None:
            release.wait(timeout=30)

    try:
        async with open_scheduler(MemoryStore(), [Stuck], grace_period=0.3) as s:
            await s.schedule(Stuck, None)
            await wait_for(lambda: s.statistics().threads.busy == 1)
            began = time.monotonic()
            await s.shutdown()
        took = time.monotonic() - began
        assert took < 15, f"shutdown took {took:.1f} s with a grace of 0.3 s"
        assert s.statistics().classes["stuck"].cancelled == 1
        assert s.statistics().threads.abandoned == 1
    finally:
        release.set()


async def test_worker_processes_start_with_the_scheduler(tmp_path: Path) -> None:
    """PROCESS classes that may run 2 calls at once: 2 workers start with the
    scheduler, so the first calls wait for no worker (nor do their timeouts count
    its start-up), and every call runs in one of those two."""
    async with open_scheduler(MemoryStore(), [Crunch], max_processes=2) as s:
        executors = s._engine.executors  # (private: the test looks inside the pool)
        await wait_for(
            lambda: (
                executors._context is not None and executors._context.statistics().idle_workers == 2
            )
        )
        # (trio-parallel's cache of idle workers: a deque of workers, each a process)
        started = {worker.proc.pid for worker in executors._context._worker_cache}
        assert len(started) == 2
        await s.schedule_many(
            [(Crunch, {"n": 10, "out": str(tmp_path / f"c{i}")}, 0) for i in range(4)]
        )
        await wait_for(lambda: s.statistics().classes["crunch"].succeeded == 4)
    assert {read(tmp_path / f"c{i}")["pid"] for i in range(4)} <= started


async def test_no_worker_process_starts_without_process_classes() -> None:
    class Plain(FutureCall):
        name = "plain"

        async def invoke(self, session: Any, payload: Any) -> None:
            pass

    async with open_scheduler(MemoryStore(), [Plain]) as s:
        await s.schedule(Plain, None)
        await wait_for(lambda: s.statistics().classes["plain"].succeeded == 1)
        assert s._engine.executors._context is None

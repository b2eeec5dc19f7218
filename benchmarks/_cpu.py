"""The ``cpu`` workload: CPU-heavy calls beside a stream of tiny async calls, with the
CPU calls run as ``Executor.TASK`` (in the event loop) and as ``Executor.PROCESS``.

40 calls of ~0.2 s of pure-Python work (calibrated on this machine) are due at once,
with a class limit of 2 (the cores here); tiny async calls are due every 10 ms from
just after them. Measured per executor: the seconds until every CPU call finished
(with the worker processes up, and again from a cold start: the scheduler starts its
workers as it opens, and the clock starts right after),
and the lateness (start minus due) of the tiny calls due while CPU calls ran.

The call classes live at module level: a PROCESS class's worker imports it by name.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Final

import trio

from trio_futurecalls import Executor, FutureCall, MemoryStore, open_scheduler

if TYPE_CHECKING:
    from benchmarks._stores import StoreConfig
    from benchmarks._workloads import Sizes

#: CPU-heavy calls, seconds of work each, and how many run at once (cores here).
CPU_CALLS: Final = 40
CPU_SECONDS: Final = 0.2
CPU_LIMIT: Final = 2
#: A tiny call is due every this many seconds.
TINY_EVERY: Final = 0.01

_tiny_lateness: list[tuple[datetime, float]] = []


def burn(n: int) -> int:
    """Pure-Python CPU work: ``n`` rounds of integer arithmetic."""
    total = 0
    for i in range(n):
        total = (total + i * i) % 1_000_003
    return total


def calibrate(seconds: float = CPU_SECONDS) -> int:
    """The ``n`` for which ``burn(n)`` takes ``seconds`` here (the fastest of 5 probes:
    other load only ever slows a probe down)."""
    probe = 200_000
    took = []
    for _ in range(5):
        began = time.perf_counter()
        burn(probe)
        took.append(time.perf_counter() - began)
    return round(probe * seconds / min(took))


class CpuInTask(FutureCall):
    name = "cpu"
    max_concurrent = CPU_LIMIT

    async def invoke(self, session: Any, payload: dict[str, int]) -> None:
        burn(payload["n"])


class CpuInProcess(FutureCall):
    name = "cpu"
    executor = Executor.PROCESS
    max_concurrent = CPU_LIMIT

    def run(self, payload: dict[str, int]) -> None:
        burn(payload["n"])


class Tiny(FutureCall):
    name = "tiny"
    max_concurrent = None

    async def invoke(self, session: Any, payload: Any) -> None:
        now = datetime.now(UTC)
        _tiny_lateness.append((self.info.due_at, (now - self.info.due_at).total_seconds()))


def _p99(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))]


def run_once(executor: Executor, n: int, *, warm: bool = False) -> tuple[float, float, int]:
    """(seconds until every CPU call finished, p99 tiny lateness in s, tiny calls counted).

    ``warm``: the clock starts once two short CPU calls ran (worker processes up);
    otherwise right after the scheduler opened (its workers still starting)."""
    cpu = CpuInProcess if executor is Executor.PROCESS else CpuInTask
    expected = CPU_CALLS * CPU_SECONDS / CPU_LIMIT * (2 if executor is Executor.TASK else 1)
    tiny_n = round(expected * 1.5 / TINY_EVERY)

    async def main() -> tuple[float, float, int]:
        _tiny_lateness.clear()
        store = MemoryStore()
        async with open_scheduler(
            store, [cpu, Tiny], max_concurrent=None, max_processes=CPU_LIMIT, grace_period=5
        ) as scheduler:
            if warm:
                await scheduler.schedule_many([(cpu, {"n": 1}, 0.0)] * CPU_LIMIT)
                while scheduler.statistics().classes["cpu"].finished < CPU_LIMIT:  # noqa: ASYNC110
                    await trio.sleep(0.005)
            done_before = scheduler.statistics().classes["cpu"].finished
            began = time.perf_counter()
            start = datetime.now(UTC)
            await scheduler.schedule_many([(cpu, {"n": n}, 0.0)] * CPU_CALLS)
            await scheduler.schedule_many(
                [
                    (Tiny, None, start + timedelta(seconds=0.05 + i * TINY_EVERY))
                    for i in range(tiny_n)
                ]
            )
            with trio.fail_after(300):
                # (PROCESS calls end in other processes: statistics are what tells.)
                while scheduler.statistics().classes["cpu"].finished < done_before + CPU_CALLS:  # noqa: ASYNC110
                    await trio.sleep(0.005)
            elapsed = time.perf_counter() - began
            done = start + timedelta(seconds=elapsed)
            failed = scheduler.statistics().classes["cpu"].failed
            if failed:
                raise RuntimeError(f"{failed} CPU calls failed")
            await scheduler.shutdown(grace_period=0)
        during = [late for due, late in _tiny_lateness if due <= done]
        return elapsed, _p99(during), len(during)

    return trio.run(main)


def cpu(kind: str, config: StoreConfig, sizes: Sizes) -> dict[str, float]:
    """One repeat: TASK then PROCESS."""
    n = calibrate()
    task_s, task_p99, _ = run_once(Executor.TASK, n)
    cold_s, cold_p99, _ = run_once(Executor.PROCESS, n)
    warm_s, warm_p99, _ = run_once(Executor.PROCESS, n, warm=True)
    return {
        "TASK seconds": task_s,
        "PROCESS seconds": warm_s,
        "PROCESS cold seconds": cold_s,
        "PROCESS / TASK": warm_s / task_s,
        "PROCESS cold / TASK": cold_s / task_s,
        "TASK tiny p99": task_p99 * 1000,
        "PROCESS tiny p99": warm_p99 * 1000,
        "PROCESS cold tiny p99": cold_p99 * 1000,
    }

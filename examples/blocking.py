"""Blocking and CPU-heavy calls: work in worker threads and processes, so the event
loop (and every other call) keeps going.

Three kinds of call on the embedded SQLite store:

* ``count-primes`` (``Executor.PROCESS``): pure-Python CPU work in worker processes,
  two at a time; one of them never ends, and cancelling it kills its worker.
* ``archive`` (``Executor.THREAD``): a blocking ``time.sleep`` standing in for a
  synchronous library, in a worker thread.
* ``heartbeat`` (the default ``Executor.TASK``): a tiny async call due every 0.1 s. It
  keeps starting on time while the others run; its lateness is printed at the end.

Run it with:  python examples/blocking.py
"""

from __future__ import annotations

import logging
import os
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import trio

from trio_futurecalls import Executor, FutureCall, SQLiteSession, open_scheduler, open_sqlite_store

LATENESS: list[float] = []


def count_primes(below: int) -> int:
    """Deliberately slow: trial division in pure Python."""
    return sum(1 for n in range(2, below) if all(n % d for d in range(2, int(n**0.5) + 1)))


class CountPrimes(FutureCall):
    name = "count-primes"
    executor = Executor.PROCESS  # a plain run(); the class is imported by the worker
    max_concurrent = 2
    timeout = 60.0

    def run(self, payload: dict[str, int]) -> None:
        below = payload["below"]
        if below < 0:
            time.sleep(3600)  # stuck: only killing its worker process stops it
        found = count_primes(below)
        print(f"  primes below {below:,}: {found:,} (worker process {os.getpid()})", flush=True)


class Archive(FutureCall):
    name = "archive"
    executor = Executor.THREAD

    def run(self, payload: dict[str, str]) -> None:
        time.sleep(0.5)  # a blocking call: it would freeze the loop in an async invoke
        print(f"  archived {payload['file']} in a thread", flush=True)


class Heartbeat(FutureCall):
    name = "heartbeat"
    max_concurrent = None

    async def invoke(self, session: SQLiteSession, payload: Any) -> None:
        LATENESS.append((datetime.now(UTC) - self.info.due_at).total_seconds())


async def main(path: Path) -> None:
    async with (
        open_sqlite_store(path) as store,
        open_scheduler(store, [CountPrimes, Archive, Heartbeat], max_processes=2) as scheduler,
    ):
        print(f"this process is {os.getpid()}")
        stuck = await scheduler.schedule(CountPrimes, {"below": -1})
        for below in (100_000, 110_000, 120_000, 130_000):
            await scheduler.schedule(CountPrimes, {"below": below})
        await scheduler.schedule(Archive, {"file": "2026-11.tar"})
        await scheduler.schedule_many([(Heartbeat, None, 0.1 * i) for i in range(1, 41)])
        await trio.sleep(4.5)
        # (The work ends in other processes: the statistics tell when.)
        while scheduler.statistics().classes["count-primes"].succeeded < 4:  # noqa: ASYNC110
            await trio.sleep(0.1)
        outcome = await scheduler.cancel(stuck)
        print(f"cancel the stuck call: {outcome.name} (its worker process is killed)")
        while scheduler.statistics().classes["count-primes"].cancelled < 1:  # noqa: ASYNC110
            await trio.sleep(0.1)
        stats = scheduler.statistics()
    primes = stats.classes["count-primes"]
    print(f"count-primes: {primes.succeeded} succeeded, {primes.cancelled} cancelled")
    print(f"archive: {stats.classes['archive'].succeeded} succeeded")
    worst = max(LATENESS) * 1000
    print(f"heartbeat: {len(LATENESS)} ran, worst lateness {worst:.0f} ms")


if __name__ == "__main__":  # required: worker processes import this module
    logging.basicConfig(level=logging.CRITICAL)
    with tempfile.TemporaryDirectory() as folder:
        trio.run(main, Path(folder) / "calls.sqlite3")

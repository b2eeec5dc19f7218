"""Cluster-wide coordination: three workers on one store share a concurrency limit and
a rate limit; a class is paused and resumed; a running call is cancelled from
another scheduler. Runs on the embedded SQLite store, in a temporary file (three
schedulers in this process stand in for three machines on one PostgreSQL schema).

Run it with:  python examples/cluster.py
"""

from __future__ import annotations

import tempfile
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import trio

from trio_futurecalls import FutureCall, RateLimit, open_scheduler, open_sqlite_store

RUNNING = {"charge": 0, "peak": 0}
STARTS: list[float] = []


class Charge(FutureCall):
    """The payment provider allows 2 requests at once, account-wide."""

    name = "charge"
    max_concurrent = 2  # per worker: alone, each could run 2, so 3 workers 6
    cluster_max_concurrent = 2  # across every worker on the store

    async def invoke(self, session: Any, payload: Any) -> None:
        RUNNING["charge"] += 1
        RUNNING["peak"] = max(RUNNING["peak"], RUNNING["charge"])
        try:
            await trio.sleep(0.1)
        finally:
            RUNNING["charge"] -= 1


class Notify(FutureCall):
    """The partner API allows 5 calls per second."""

    name = "notify"
    max_concurrent = None
    rate_limit = RateLimit(5, per=timedelta(seconds=1))

    async def invoke(self, session: Any, payload: Any) -> None:
        STARTS.append(self.info.started_at.timestamp())


class Export(FutureCall):
    """A long job, cancelled while it runs."""

    name = "export"

    async def invoke(self, session: Any, payload: Any) -> None:
        try:
            await trio.sleep(3600)
        except trio.Cancelled:
            print("  export: cancelled while running")
            raise


async def wait_until_idle(scheduler: Any) -> None:
    for _ in range(1200):
        if not await scheduler.pending() and not scheduler.running():
            return
        await trio.sleep(0.05)
    raise TimeoutError("calls still pending after a minute")


async def main() -> None:
    classes = [Charge, Notify, Export]
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "calls.sqlite3"
        async with (
            open_sqlite_store(path, recheck_interval=0.05) as store,
            open_scheduler(store, classes) as a,
            open_scheduler(store, classes) as b,
            open_scheduler(store, classes) as c,
        ):
            print(f"workers: {len(await a.workers())}")

            began = time.monotonic()
            await a.schedule_many([(Charge, None, 0)] * 10)
            await wait_until_idle(a)
            took = time.monotonic() - began
            print(f"charge: 10 calls of 0.1 s, at most {RUNNING['peak']} at once ({took:.1f} s)")

            await b.schedule_many([(Notify, None, 0)] * 12)
            await wait_until_idle(b)
            spans = [STARTS[i + 5] - STARTS[i] for i in range(len(STARTS) - 5)]
            print(f"notify: 12 calls, any 6 starts span >= 1 s: {min(spans) >= 1.0}")

            await a.pause(Charge)
            await c.schedule(Charge, None)
            await trio.sleep(0.5)
            print(f"charge paused: {len(await a.pending())} pending, none started")
            await c.resume(Charge)
            await wait_until_idle(c)
            print("charge resumed: it ran")

            export_id = await a.schedule(Export, None)
            while not any(i.id == export_id for s in (a, b, c) for i in s.running()):  # noqa: ASYNC110
                await trio.sleep(0.01)
            outcome = await b.cancel(export_id)
            print(f"cancel export: {outcome.name}")
            await wait_until_idle(a)


if __name__ == "__main__":
    trio.run(main)

"""Recurring calls: two workers share one SQLite file, and each tick runs once.

Both workers register the same schedules at start-up (the normal way to deploy them):
a heartbeat every second and a cron job every two seconds (a six-field cron
expression has its seconds first). Whichever worker fires a tick, it runs once.

Run it with:  python examples/recurring.py
"""

from __future__ import annotations

import tempfile
from collections import Counter
from datetime import datetime
from pathlib import Path
from typing import Any

import trio

from trio_futurecalls import FutureCall, open_scheduler, open_sqlite_store

RAN: Counter[tuple[str, datetime]] = Counter()


class Heartbeat(FutureCall):
    name = "heartbeat"

    async def invoke(self, session: Any, payload: Any) -> None:
        key, tick = self.info.recurring_key, self.info.tick_at  # set for recurring runs
        RAN[(str(key), tick or self.info.due_at)] += 1
        print(f"{key:>9} tick {tick:%H:%M:%S} ({payload['who']})")


async def worker(path: Path, who: str, seconds: float) -> None:
    async with (
        open_sqlite_store(path) as store,
        open_scheduler(store, [Heartbeat]) as scheduler,
    ):
        await scheduler.schedule_recurring(Heartbeat, {"who": "every"}, key="every-1s", every=1)
        await scheduler.schedule_recurring(
            Heartbeat, {"who": "cron"}, key="cron-2s", cron="*/2 * * * * *"
        )
        await trio.sleep(seconds)


async def main() -> None:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "calls.sqlite3"
        async with trio.open_nursery() as nursery:
            nursery.start_soon(worker, path, "a", 5.5)
            nursery.start_soon(worker, path, "b", 5.5)
        async with open_sqlite_store(path) as store:
            for info in await store.recurring_schedules():
                print(f"{info.key}: {info.runs} runs, next tick {info.next_tick:%H:%M:%S}")
    twice = [tick for tick, n in RAN.items() if n > 1]
    print("every tick ran once" if not twice else f"ran twice: {twice}")


if __name__ == "__main__":
    trio.run(main)

"""A worker process for the recurring tests: registers two schedules, runs their ticks.

Usage: python recurring_worker.py STORE RECORD CLOCK_OFFSET
  STORE         sqlite:///PATH  or  postgresql://...#SCHEMA
  RECORD        SQLite: a file each execution appends one line to (O_APPEND, one
                write per line); PostgreSQL: a table of SCHEMA each execution
                inserts a row into through its session.
  CLOCK_OFFSET  seconds added to this worker's clock (skew between processes).

Every worker registers the same two schedules at start-up (``EVERY_KEY``: every
half second; ``CRON_KEY``: every second, a six-field cron), prints "ready" and runs
until killed (short intervals: many ticks in a short test). An execution records
(schedule key, tick, call id, pid): two call ids for one tick would be a tick fired
twice; one call id twice is an at-least-once redelivery after a kill.
"""

from __future__ import annotations

import os
import sys
from datetime import UTC, datetime, timedelta
from typing import Any

import trio

from trio_futurecalls import Delivery, FutureCall, open_scheduler, open_store

EVERY_KEY = "every-0.5s"
EVERY = 0.5
CRON_KEY = "cron-1s"
CRON = "* * * * * *"
#: How long a run takes: long enough that a kill can catch runs in flight.
RUN_SECONDS = 0.2
LEASE_SECONDS = 1.5


class Recorder:
    target = ""
    fd = -1


class Tick(FutureCall):
    name = "recurring.tick"
    delivery = Delivery.AT_LEAST_ONCE
    max_concurrent = 4

    async def invoke(self, session: Any, payload: Any) -> None:
        info = self.info
        assert info.recurring_key is not None
        assert info.tick_at is not None
        if Recorder.fd >= 0:
            line = f"{info.recurring_key} {info.tick_at.isoformat()} {info.id} {os.getpid()}\n"
            os.write(Recorder.fd, line.encode())
        else:
            await session.execute(
                f"INSERT INTO {Recorder.target} (key, tick_at, call_id, pid) "
                "VALUES ($1, $2, $3, $4)",
                info.recurring_key,
                info.tick_at,
                info.id,
                os.getpid(),
            )
        await trio.sleep(RUN_SECONDS)


async def main(url: str, record: str, offset: float) -> None:
    skew = timedelta(seconds=offset)

    def clock() -> datetime:
        return datetime.now(UTC) + skew

    if url.startswith("sqlite:"):
        Recorder.fd = os.open(record, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        opened = open_store(url, recheck_interval=0.2)
    else:
        dsn, _, schema = url.partition("#")
        Recorder.target = f'"{schema}".{record}'
        opened = open_store(
            dsn,
            schema=schema,
            recheck_interval=0.5,
            max_pool_size=6,
            application_name=f"fc-{schema}:{os.getpid()}",
        )
    async with (
        opened as store,
        open_scheduler(
            store,
            [Tick],
            max_concurrent=4,
            clock=clock,
            lease_duration=LEASE_SECONDS,
            lease_renew_interval=0.3,
        ) as scheduler,
    ):
        # misfire="all": every tick must become a run, so a missing tick is a bug,
        # never the "once" policy folding late ticks into one.
        await scheduler.schedule_recurring(Tick, key=EVERY_KEY, every=EVERY, misfire="all")
        await scheduler.schedule_recurring(Tick, key=CRON_KEY, cron=CRON, misfire="all")
        print("ready", flush=True)
        await trio.sleep_forever()


if __name__ == "__main__":
    trio.run(main, sys.argv[1], sys.argv[2], float(sys.argv[3]))

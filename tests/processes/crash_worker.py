"""A worker process for the crash tests: runs `Work` calls until killed.

Usage: python crash_worker.py STORE DELIVERY LOG
  STORE     sqlite:PATH  or  postgresql://...#SCHEMA
  DELIVERY  at_most_once | at_least_once
  LOG       a file every call appends "start ID" and "done ID" lines to (O_APPEND,
            one write per line), so executions are counted outside the workers.
"""

from __future__ import annotations

import os
import random
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import trio

from trio_futurecalls import Delivery, FutureCall, Store, open_scheduler, open_sqlite_store

LOG_FD = -1


def log(line: str) -> None:
    os.write(LOG_FD, f"{line}\n".encode())


class Work(FutureCall):
    name = "work"
    max_concurrent = 8

    async def invoke(self, session: Any, payload: Any) -> None:
        log(f"start {payload}")
        await trio.sleep(random.uniform(0, 0.02))
        log(f"done {payload}")


@asynccontextmanager
async def open_store(url: str) -> AsyncIterator[Store]:
    if url.startswith("sqlite:"):
        async with open_sqlite_store(url.removeprefix("sqlite:"), recheck_interval=0.2) as store:
            yield store
    else:
        from trio_futurecalls.stores.postgres import open_postgres_store

        dsn, _, schema = url.partition("#")
        async with open_postgres_store(dsn, schema=schema, recheck_interval=0.5) as pg:
            yield pg


async def main(url: str, delivery: str, log_path: str) -> None:
    global LOG_FD
    LOG_FD = os.open(log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    async with (
        open_store(url) as store,
        open_scheduler(
            store,
            [Work],
            max_concurrent=16,
            default_delivery=Delivery(delivery),
            lease_duration=2.0,
            lease_renew_interval=0.5,
        ),
    ):
        print("ready", flush=True)
        await trio.sleep_forever()


if __name__ == "__main__":
    trio.run(main, sys.argv[1], sys.argv[2], sys.argv[3])

"""A worker process for the crash tests: runs `Work` calls until killed.

Usage: python crash_worker.py STORE DELIVERY LOG
  STORE     sqlite:///PATH  or  postgresql://...#SCHEMA
  DELIVERY  at_most_once | at_least_once
  LOG       a file every call appends "start ID" and "done ID" lines to (O_APPEND,
            one write per line), so executions are counted outside the workers.
"""

from __future__ import annotations

import os
import random
import sys
from contextlib import AbstractAsyncContextManager
from typing import Any

import trio

from trio_futurecalls import Delivery, FutureCall, Store, open_scheduler, open_store

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


def open_worker_store(target: str) -> AbstractAsyncContextManager[Store]:
    """``open_store`` for ``sqlite:///PATH`` or ``DSN#SCHEMA``, with short rechecks."""
    if target.startswith("sqlite:"):
        return open_store(target, recheck_interval=0.2)
    dsn, _, schema = target.partition("#")
    return open_store(dsn, schema=schema, recheck_interval=0.5)


async def main(url: str, delivery: str, log_path: str) -> None:
    global LOG_FD
    LOG_FD = os.open(log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    async with (
        open_worker_store(url) as store,
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

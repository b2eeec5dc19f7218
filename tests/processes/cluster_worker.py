"""A worker process for the cluster-wide tests: runs their calls until killed.

Usage: python cluster_worker.py STORE LOG DELIVERY WORKER_TIMEOUT
  STORE           sqlite:///PATH  or  postgresql://...#SCHEMA
  LOG             a file every call appends lines to (O_APPEND, one write per line):
                  "start ID T", "end ID T" with T the wall-clock time (time.time()),
                  and "claimed ID T" with T the call's start time (``info.started_at``:
                  the claim's time, which rate windows count).
  DELIVERY        at_most_once | at_least_once
  WORKER_TIMEOUT  seconds before a silent worker counts as dead

Classes: ``cluster.slow`` (at most 3 at once across the cluster, 50 ms each) and
``cluster.rated`` (at most 20 starts per second across the cluster, instant).
"""

from __future__ import annotations

import os
import sys
import time
from contextlib import AbstractAsyncContextManager
from datetime import timedelta
from typing import Any

import trio

from trio_futurecalls import Delivery, FutureCall, RateLimit, Store, open_scheduler, open_store

LOG_FD = -1


def log(line: str) -> None:
    os.write(LOG_FD, f"{line}\n".encode())


class Slow(FutureCall):
    name = "cluster.slow"
    max_concurrent = 3
    cluster_max_concurrent = 3

    async def invoke(self, session: Any, payload: Any) -> None:
        log(f"start {self.info.id} {time.time():.6f}")
        await trio.sleep(0.05)
        log(f"end {self.info.id} {time.time():.6f}")


class Rated(FutureCall):
    name = "cluster.rated"
    max_concurrent = None
    rate_limit = RateLimit(20, per=timedelta(seconds=1))

    async def invoke(self, session: Any, payload: Any) -> None:
        log(f"claimed {self.info.id} {self.info.started_at.timestamp():.6f}")


def open_worker_store(target: str) -> AbstractAsyncContextManager[Store]:
    """``open_store`` for ``sqlite:///PATH`` or ``DSN#SCHEMA``, with short rechecks."""
    if target.startswith("sqlite:"):
        return open_store(target, recheck_interval=0.05)
    dsn, _, schema = target.partition("#")
    return open_store(dsn, schema=schema, recheck_interval=0.5, max_pool_size=8)


async def main(url: str, log_path: str, delivery: str, worker_timeout: str) -> None:
    global LOG_FD
    LOG_FD = os.open(log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    async with (
        open_worker_store(url) as store,
        open_scheduler(
            store,
            [Slow, Rated],
            max_concurrent=6,
            default_delivery=Delivery(delivery),
            lease_duration=3.0,
            lease_renew_interval=0.5,
            worker_timeout=float(worker_timeout),
        ),
    ):
        print("ready", flush=True)
        await trio.sleep_forever()


if __name__ == "__main__":
    trio.run(main, sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4])

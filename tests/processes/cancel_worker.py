"""A worker process for the cancel tests: runs ``cancel.long`` calls until killed.

Usage: python cancel_worker.py STORE LOG
  STORE  sqlite:///PATH  or  postgresql://...#SCHEMA (see cluster_worker.py)
  LOG    a file each call appends lines to (O_APPEND, one write per line):
         "start ID T" when invoke begins, "cancelled ID T" when it sees
         trio.Cancelled, "end ID T" if it ever finishes (T: time.time()).

``cancel.long`` sleeps ten minutes, at-most-once; ``cancel.long_leased`` the same,
at-least-once.
"""

from __future__ import annotations

import os
import sys
import time
from typing import Any

import trio
from cluster_worker import open_worker_store

from trio_futurecalls import Delivery, FutureCall, open_scheduler

LOG_FD = -1


def log(line: str) -> None:
    os.write(LOG_FD, f"{line}\n".encode())


class Long(FutureCall):
    name = "cancel.long"
    max_concurrent = 10
    delivery = Delivery.AT_MOST_ONCE

    async def invoke(self, session: Any, payload: Any) -> None:
        log(f"start {self.info.id} {time.time():.6f}")
        try:
            await trio.sleep(600)
        except trio.Cancelled:
            log(f"cancelled {self.info.id} {time.time():.6f}")
            raise
        log(f"end {self.info.id} {time.time():.6f}")


class LongLeased(Long):
    name = "cancel.long_leased"
    delivery = Delivery.AT_LEAST_ONCE


async def main(url: str, log_path: str) -> None:
    global LOG_FD
    LOG_FD = os.open(log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    async with (
        open_worker_store(url) as store,
        open_scheduler(store, [Long, LongLeased], lease_duration=3.0, lease_renew_interval=0.5),
    ):
        print("ready", flush=True)
        await trio.sleep_forever()


if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(__file__))
    trio.run(main, sys.argv[1], sys.argv[2])

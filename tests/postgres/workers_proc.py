"""A worker process for the workers-registry test: registers, heartbeats, runs nothing.

    python tests/postgres/workers_proc.py DSN SCHEMA WORKER_TIMEOUT

Prints its worker id (the scheduler's owner) as one JSON line once the scheduler
runs, then idles until SIGTERM (graceful shutdown: it deregisters) or SIGKILL.
"""

from __future__ import annotations

import json
import signal
import sys
from typing import Any

import trio

from trio_futurecalls import FutureCall, open_scheduler
from trio_futurecalls.stores.postgres import open_postgres_store


class Idle(FutureCall):
    name = "pg.idle"

    async def invoke(self, session: Any, payload: Any) -> None:
        pass


async def main(dsn: str, schema: str, worker_timeout: float) -> None:
    with trio.open_signal_receiver(signal.SIGTERM) as signals:
        async with (
            open_postgres_store(dsn, schema=schema, application_name=f"fc-{schema}-proc") as store,
            open_scheduler(store, [Idle], worker_timeout=worker_timeout) as scheduler,
        ):
            print(json.dumps({"id": scheduler.owner}), flush=True)
            async for _ in signals:
                break


if __name__ == "__main__":
    trio.run(main, sys.argv[1], sys.argv[2], float(sys.argv[3]))

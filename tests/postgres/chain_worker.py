"""A worker process for the PostgreSQL dependency test (test_pg_dependencies.py).

    python tests/postgres/chain_worker.py DSN SCHEMA WORKER_ID MAX_CONCURRENT

Runs the STEP_CLASSES (one per step of a chain; even steps at-most-once, odd steps
at-least-once) until the schema has nothing pending and nothing runs here. Each call
records in ``SCHEMA.runs`` when it started and when it ended (the server's clock, so
that both processes share one), through its own session. The recheck interval is a
minute: a dependent can only start promptly on a NOTIFY. Prints one JSON line.
"""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime
from typing import Any, ClassVar

import trio

from trio_futurecalls import Delivery, FutureCall, open_scheduler
from trio_futurecalls.stores.postgres import PostgresSession, open_postgres_store

STEPS = 5


class _Step(FutureCall):
    step: ClassVar[int]
    schema: ClassVar[str] = ""
    worker: ClassVar[int] = 0
    ran: ClassVar[int] = 0

    async def invoke(self, session: PostgresSession, payload: Any) -> None:
        table = f'"{_Step.schema}".runs'
        await session.execute(
            f"INSERT INTO {table} (call_id, chain, step, worker, started_at) "
            "VALUES ($1, $2, $3, $4, clock_timestamp())",
            self.info.id,
            payload["chain"],
            self.step,
            _Step.worker,
        )
        await trio.sleep(0.001 * (1 + payload["chain"] % 4))
        await session.execute(
            f"UPDATE {table} SET ended_at = clock_timestamp() WHERE call_id = $1", self.info.id
        )
        _Step.ran += 1


def _make(step: int) -> type[FutureCall]:
    delivery = Delivery.AT_MOST_ONCE if step % 2 == 0 else Delivery.AT_LEAST_ONCE
    return type(
        f"Step{step}",
        (_Step,),
        {"name": f"chain.s{step}", "step": step, "delivery": delivery, "max_concurrent": 4},
    )


STEP_CLASSES = [_make(step) for step in range(STEPS)]


async def run(dsn: str, schema: str, worker: int, max_concurrent: int) -> None:
    _Step.schema = schema
    _Step.worker = worker
    async with open_postgres_store(
        dsn,
        schema=schema,
        max_pool_size=max_concurrent + 2,
        recheck_interval=60,
        application_name=f"fc-{schema}-w{worker}",
        migrate=False,
    ) as store:
        with trio.fail_after(120):
            async with open_scheduler(
                store, STEP_CLASSES, max_concurrent=max_concurrent, grace_period=10
            ) as scheduler:
                idle = 0
                while idle < 3:
                    await trio.sleep(0.2)
                    counts = await store.pending_counts(datetime.now(UTC))
                    pending = sum(c.pending for c in counts.values())
                    idle = idle + 1 if pending == 0 and not scheduler.running() else 0
                stats = scheduler.statistics()
    print(json.dumps({"worker": worker, "ran": _Step.ran, "failed": stats.total.failed}))


if __name__ == "__main__":
    dsn, schema, worker, max_concurrent = sys.argv[1:]
    trio.run(run, dsn, schema, int(worker), int(max_concurrent))

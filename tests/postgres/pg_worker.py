"""A separate process for the PostgreSQL multi-process tests.

    python tests/postgres/pg_worker.py migrate  DSN SCHEMA
    python tests/postgres/pg_worker.py schedule DSN SCHEMA NAME COUNT
    python tests/postgres/pg_worker.py run      DSN SCHEMA WORKER_ID MAX_CONCURRENT
    python tests/postgres/pg_worker.py keyed    DSN SCHEMA WORKER_ID COUNT

``run`` executes calls of the WORKER_CLASSES below until the schema has nothing pending
and nothing runs here; each call inserts ``(call_id, worker)`` into ``SCHEMA.runs``
through its session. It prints one JSON line: how many calls it ran and the highest
concurrency it saw, per class and in total.
"""

from __future__ import annotations

import json
import sys
from collections import Counter
from datetime import UTC, datetime
from typing import Any, ClassVar

import trio

from trio_futurecalls import FutureCall, OnConflict, open_scheduler, schedule_call
from trio_futurecalls.stores.postgres import PostgresSession, open_postgres_store

#: Per-class limits of the ``run`` command (name -> max_concurrent).
WORKER_LIMITS: dict[str, int | None] = {"pg.alpha": 2, "pg.beta": 3, "pg.gamma": None}


class _Tracker:
    running: ClassVar[Counter[str]] = Counter()
    peak: ClassVar[Counter[str]] = Counter()
    total = 0
    total_peak = 0
    ran = 0
    worker = 0
    schema = ""


class _WorkerCall(FutureCall):
    name: ClassVar[str]

    async def invoke(self, session: PostgresSession, payload: Any) -> None:
        t = _Tracker
        t.running[self.name] += 1
        t.total += 1
        t.peak[self.name] = max(t.peak[self.name], t.running[self.name])
        t.total_peak = max(t.total_peak, t.total)
        try:
            await session.execute(
                f'INSERT INTO "{t.schema}".runs (call_id, worker) VALUES ($1, $2)',
                self.info.id,
                t.worker,
            )
            await trio.sleep(0.001)
            t.ran += 1
        finally:
            t.running[self.name] -= 1
            t.total -= 1


def _make(name: str, limit: int | None) -> type[FutureCall]:
    return type(
        f"Worker_{name.replace('.', '_')}",
        (_WorkerCall,),
        {"name": name, "max_concurrent": limit},
    )


WORKER_CLASSES = [_make(name, limit) for name, limit in WORKER_LIMITS.items()]


class Wake(FutureCall):
    """Scheduled by ``schedule`` for the notification test (runs in the test process)."""

    name = "pg.wake"

    async def invoke(self, session: Any, payload: Any) -> None:
        raise AssertionError("runs in the test process, not here")


async def migrate(dsn: str, schema: str) -> None:
    async with open_postgres_store(dsn, schema=schema, max_pool_size=3, min_pool_size=0):
        pass
    print(json.dumps({"migrated": schema}))


async def schedule(dsn: str, schema: str, name: str, count: int) -> None:
    cls = Wake if name == Wake.name else next(c for c in WORKER_CLASSES if c.name == name)
    ids = []
    async with open_postgres_store(dsn, schema=schema, max_pool_size=3, min_pool_size=0) as store:
        for i in range(count):
            ids.append(await schedule_call(store, cls, {"i": i}, delay=0))
    print(json.dumps({"ids": ids}))


async def keyed(dsn: str, schema: str, worker: int, count: int) -> None:
    """Schedule ``count`` calls from 10 concurrent tasks, alternately with the unique
    key "ignored" (on_conflict="ignore") and "replaced" ("replace"); print the ids."""
    modes: tuple[OnConflict, OnConflict] = ("ignore", "replace")
    ids: dict[str, set[int]] = {mode: set() for mode in modes}
    tasks = 10

    async def task(k: int) -> None:
        for i in range(k, count, tasks):
            mode = modes[i % 2]
            call_id = await schedule_call(
                store,
                WORKER_CLASSES[0],
                {"worker": worker, "i": i},
                delay=3600,
                unique_key=f"{mode}d",
                on_conflict=mode,
            )
            ids[mode].add(call_id)

    async with (
        open_postgres_store(
            dsn, schema=schema, max_pool_size=tasks, application_name=f"fc-{schema}", migrate=False
        ) as store,
        trio.open_nursery() as nursery,
    ):
        for k in range(tasks):
            nursery.start_soon(task, k)
    print(json.dumps({mode: sorted(found) for mode, found in ids.items()}))


async def run(dsn: str, schema: str, worker: int, max_concurrent: int) -> None:
    _Tracker.worker = worker
    _Tracker.schema = schema
    async with open_postgres_store(
        dsn, schema=schema, max_pool_size=max_concurrent + 2, recheck_interval=0.5
    ) as store:
        assert store.check_pool_size(max_concurrent)
        with trio.fail_after(90):
            async with open_scheduler(
                store, WORKER_CLASSES, max_concurrent=max_concurrent, grace_period=10
            ) as scheduler:
                idle = 0
                while idle < 3:
                    await trio.sleep(0.1)
                    counts = await store.pending_counts(datetime.now(UTC))
                    pending = sum(c.pending for c in counts.values())
                    idle = idle + 1 if pending == 0 and not scheduler.running() else 0
                stats = scheduler.statistics()
    print(
        json.dumps(
            {
                "worker": worker,
                "ran": _Tracker.ran,
                "peak": dict(_Tracker.peak),
                "total_peak": _Tracker.total_peak,
                "failed": sum(c.failed for c in stats.classes.values()),
            }
        )
    )


def main(argv: list[str]) -> None:
    command, dsn, schema, *rest = argv
    if command == "migrate":
        trio.run(migrate, dsn, schema)
    elif command == "schedule":
        trio.run(schedule, dsn, schema, rest[0], int(rest[1]))
    elif command == "keyed":
        trio.run(keyed, dsn, schema, int(rest[0]), int(rest[1]))
    elif command == "run":
        trio.run(run, dsn, schema, int(rest[0]), int(rest[1]))
    else:
        raise SystemExit(f"unknown command {command!r}")


if __name__ == "__main__":
    main(sys.argv[1:])

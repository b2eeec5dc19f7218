"""How soon a dependent starts after its prerequisite ended, on PostgreSQL.

Not part of ``python -m benchmarks``: run it from a checkout::

    python -m benchmarks.dependency_gaps --dsn postgresql://127.0.0.1:5432/test

Two workers (two stores: two pools, two LISTEN connections) in this process share a
fresh schema (``bench_gaps_<pid>``, dropped at the end) and run CHAINS chains of
STEPS no-op steps, scheduled up front with ``schedule_chain``; even steps are
at-most-once, odd steps at-least-once, as in tests/postgres/test_pg_dependencies.py.
The workers re-check only every 60 s, so a dependent starts on a wake-up: the local
listener of the worker that ran its prerequisite, or the other's NOTIFY. Prints the
gap (a step's start minus its prerequisite's end, both on Trio's clock) as median,
p90, p99 and max, and the whole run's time.
"""

from __future__ import annotations

import argparse
import itertools
import os
import statistics
from typing import Any, ClassVar

import trio
import trio.lowlevel

from benchmarks._stores import drop_schema
from trio_futurecalls import Delivery, FutureCall, open_scheduler, schedule_chain
from trio_futurecalls.stores.postgres import open_postgres_store

STEPS = 5

STARTED: dict[int, float] = {}
ENDED: dict[int, float] = {}


class _Step(FutureCall):
    max_concurrent: ClassVar[int | None] = 20

    async def invoke(self, session: Any, payload: Any) -> None:
        STARTED[self.info.id] = trio.current_time()
        await trio.lowlevel.checkpoint()
        ENDED[self.info.id] = trio.current_time()


STEP_CLASSES = [
    type(
        f"GapStep{k}",
        (_Step,),
        {
            "name": f"gaps.s{k}",
            "delivery": Delivery.AT_MOST_ONCE if k % 2 == 0 else Delivery.AT_LEAST_ONCE,
        },
    )
    for k in range(STEPS)
]


async def run(dsn: str, schema: str, chains: int) -> None:
    options: dict[str, Any] = {"schema": schema, "recheck_interval": 60, "max_pool_size": 12}
    async with open_postgres_store(dsn, **options) as first:
        chain_ids = [
            await schedule_chain(first, [(cls, None) for cls in STEP_CLASSES])
            for _ in range(chains)
        ]
        want = chains * STEPS
        began = trio.current_time()
        async with (
            open_postgres_store(dsn, **options) as second,
            open_scheduler(first, STEP_CLASSES, max_concurrent=10),
            open_scheduler(second, STEP_CLASSES, max_concurrent=10),
        ):
            with trio.fail_after(300):
                for _ in range(30000):  # every 10 ms
                    if len(ENDED) >= want:
                        break
                    await trio.sleep(0.01)
        took = trio.current_time() - began
    gaps = sorted(
        (STARTED[after] - ENDED[before]) * 1000
        for ids in chain_ids
        for before, after in itertools.pairwise(ids)
    )
    print(f"{chains} chains of {STEPS} steps, two workers: {took:.2f} s")
    print(
        "gap, prerequisite end to dependent start (ms): "
        f"median {statistics.median(gaps):.2f}, p90 {gaps[int(len(gaps) * 0.9)]:.2f}, "
        f"p99 {gaps[int(len(gaps) * 0.99)]:.2f}, max {gaps[-1]:.2f}"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dsn", default="postgresql://postgres@127.0.0.1:5432/test")
    parser.add_argument("--chains", type=int, default=200)
    args = parser.parse_args()
    schema = f"bench_gaps_{os.getpid()}"
    try:
        trio.run(run, args.dsn, schema, args.chains)
    finally:
        drop_schema(args.dsn, schema)

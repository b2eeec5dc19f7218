"""The producer workload (issue 16): scheduling with no scheduler, against its ceilings.

A process that only schedules (``schedule_call`` / ``schedule_many`` on a store), each
rate next to the ceiling measured in the same run (``_producer_ceilings.py``), on a
fresh schema each (same table, same indexes, same size):

* one at a time: ``schedule_call`` N times from one task / a bare asyncpg insert loop
  through trio-asyncio (target >= 0.9);
* 50 concurrent tasks calling ``schedule_call`` (a web app's request handlers: group
  commit) / the one-at-a-time rate of this run (target >= 4);
* ``schedule_many`` in batches of 1,000 / the server's own multi-row insert via asyncpg
  (target >= 0.85).

SQLite runs the first two, without ceilings (no target).

PostgreSQL then runs the three again on a store opened with
``schedule_commit="asynchronous"`` (the producers' opt-in: schedules commit with
``synchronous_commit = off``). Those rows are reported apart ("async commit"), each
against the same ceiling on a connection with ``synchronous_commit = off``, and judged
by no target: issue 16's targets are for durable schedules.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any, Final

import trio

from benchmarks._calls import NOOP_NAME, Counter, counting_call
from benchmarks._harness import Target
from benchmarks._producer_ceilings import insert_loop_rate, multi_row_rate
from benchmarks._stores import StoreConfig, open_store, pg_schema
from benchmarks._workloads import Sizes
from trio_futurecalls import Store, schedule_call, schedule_many

#: Concurrent producer tasks in one process.
TASKS: Final = 50
#: Rows of the batched phase, in schedule_batch statements: enough to last a second.
BATCH_ROWS_FACTOR: Final = 5
ONE_OF_CEILING: Final = Target(">=", 0.9, ">= 0.9")
CONCURRENT_OF_ONE: Final = Target(">=", 4.0, ">= 4")
MANY_OF_CEILING: Final = Target(">=", 0.85, ">= 0.85")
_DELAY: Final = 3600.0  # due later: nothing would run
#: Added to the keys of the rows measured with ``schedule_commit="asynchronous"``.
ASYNC: Final = ", async commit"


def _timed(
    kind: str,
    config: StoreConfig,
    fn: Callable[..., Awaitable[None]],
    *args: object,
    pg_options: dict[str, Any] | None = None,
) -> float:
    """Seconds ``fn(store, *args)`` takes on a fresh store (opening it not counted)."""

    async def main() -> float:
        async with open_store(kind, config, pg_options=pg_options) as store:
            started = time.perf_counter()
            await fn(store, *args)
            return time.perf_counter() - started

    return trio.run(main)


def _with_schema(config: StoreConfig, fn: Callable[[str], float]) -> float:
    """``fn(schema)`` on a fresh schema the store's migrations made."""

    async def create(schema: str) -> None:
        async with open_store("postgres", config, schema=schema):
            pass

    with pg_schema(config.dsn) as schema:
        trio.run(create, schema)
        return fn(schema)


async def _one_at_a_time(store: Store, n: int) -> None:
    cls = counting_call(Counter(n), max_concurrent=1)
    for _ in range(n):
        await schedule_call(store, cls, None, delay=_DELAY)


async def _concurrent(store: Store, n: int) -> None:
    cls = counting_call(Counter(n), max_concurrent=1)

    async def task(count: int) -> None:
        for _ in range(count):
            await schedule_call(store, cls, None, delay=_DELAY)

    async with trio.open_nursery() as nursery:
        for k in range(TASKS):
            nursery.start_soon(task, n // TASKS + (1 if k < n % TASKS else 0))


async def _batched(store: Store, n: int, batch: int) -> None:
    cls = counting_call(Counter(n), max_concurrent=1)
    for start in range(0, n, batch):
        await schedule_many(store, [(cls, None, _DELAY)] * min(batch, n - start))


def producer(kind: str, config: StoreConfig, sizes: Sizes) -> dict[str, float]:
    """One repeat of every phase (see the module); rates in calls/s, ratios in x."""
    n = sizes.schedule_n
    if kind != "postgres":
        out: dict[str, float] = {}
        out["one at a time"] = n / _timed(kind, config, _one_at_a_time, n)
        out[f"{TASKS} tasks"] = n / _timed(kind, config, _concurrent, n)
        out[f"{TASKS} tasks / one at a time"] = out[f"{TASKS} tasks"] / out["one at a time"]
        return out
    out = _postgres(config, sizes, async_commit=False)
    out.update(_postgres(config, sizes, async_commit=True))
    out[f"one at a time{ASYNC} / durable"] = out[f"one at a time{ASYNC}"] / out["one at a time"]
    return out


def _postgres(config: StoreConfig, sizes: Sizes, *, async_commit: bool) -> dict[str, float]:
    """The PostgreSQL phases, on stores with ``schedule_commit`` durable or
    asynchronous (then every key ends with :data:`ASYNC`)."""
    n, batch = sizes.schedule_n, sizes.schedule_batch
    tag = ASYNC if async_commit else ""
    options = {"schedule_commit": "asynchronous" if async_commit else "durable"}
    name = NOOP_NAME
    out: dict[str, float] = {}
    out[f"ceiling: insert loop{tag}"] = _with_schema(
        config, lambda schema: insert_loop_rate(config.dsn, schema, name, n, async_commit)
    )
    one = out[f"one at a time{tag}"] = n / _timed(
        "postgres", config, _one_at_a_time, n, pg_options=options
    )
    out[f"{TASKS} tasks{tag}"] = n / _timed("postgres", config, _concurrent, n, pg_options=options)
    out[f"one at a time{tag} / ceiling"] = one / out[f"ceiling: insert loop{tag}"]
    out[f"{TASKS} tasks{tag} / one at a time"] = out[f"{TASKS} tasks{tag}"] / one
    rows = n * BATCH_ROWS_FACTOR
    out[f"ceiling: multi-row insert{tag}"] = _with_schema(
        config,
        lambda schema: multi_row_rate(config.dsn, schema, name, rows, batch, async_commit),
    )
    out[f"schedule_many{tag}"] = rows / _timed(
        "postgres", config, _batched, rows, batch, pg_options=options
    )
    out[f"schedule_many{tag} / ceiling"] = (
        out[f"schedule_many{tag}"] / out[f"ceiling: multi-row insert{tag}"]
    )
    return out


def describe(store: str, key: str, sizes: Sizes) -> tuple[str, str, Target | None]:
    """(metric name, unit, target) of one value :func:`producer` returned."""
    n, batch = sizes.schedule_n, sizes.schedule_batch
    rows = n * BATCH_ROWS_FACTOR
    one = f"schedule_call one at a time, {n:,}"
    many = f"schedule_many, {rows:,} in batches of {batch:,}"
    if key == f"one at a time{ASYNC} / durable":
        return f"{one}: async commit / durable", "x", None
    if ASYNC in key:
        # The opt-in's rows: the same metric, named apart, against no target.
        metric, unit, _ = describe(store, key.replace(ASYNC, ""), sizes)
        return f"{metric} [async commit: synchronous_commit off]", unit, None
    names: dict[str, tuple[str, str, Target | None]] = {
        "ceiling: insert loop": (
            f"ceiling: bare asyncpg insert loop via trio-asyncio, {n:,}",
            "calls/s",
            None,
        ),
        "one at a time": (one, "calls/s", None),
        f"{TASKS} tasks": (
            f"schedule_call from {TASKS} concurrent tasks, {n:,} (group commit)",
            "calls/s",
            None,
        ),
        "one at a time / ceiling": (f"{one} / insert-loop ceiling", "x", ONE_OF_CEILING),
        f"{TASKS} tasks / one at a time": (
            f"{TASKS} concurrent tasks / one at a time",
            "x",
            CONCURRENT_OF_ONE if store == "postgres" else None,
        ),
        "ceiling: multi-row insert": (
            f"ceiling: asyncpg multi-row insert, {rows:,} in batches of {batch:,}",
            "calls/s",
            None,
        ),
        "schedule_many": (many, "calls/s", None),
        "schedule_many / ceiling": (f"{many} / multi-row ceiling", "x", MANY_OF_CEILING),
    }
    return names[key]

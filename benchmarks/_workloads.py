"""The workloads. Each function measures once (one repeat) and returns its metrics.

Every measurement opens a fresh store (a new SQLite file, a new PostgreSQL schema that
is dropped afterwards), so repeats do not see each other's rows.
"""

from __future__ import annotations

import json
import math
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Final

import attrs
import trio

from benchmarks import _least as least
from benchmarks._calls import NOOP_NAME, Counter, counting_call
from benchmarks._stores import (
    StoreConfig,
    open_store,
    pg_execute,
    pg_run,
    pg_schema,
    sqlite_path,
)
from trio_futurecalls import (
    Delivery,
    FutureCall,
    SQLiteStore,
    Store,
    open_scheduler,
    open_sqlite_store,
)

#: The repository root (subprocesses run ``python -m benchmarks.<module>`` from here).
ROOT: Final = Path(__file__).resolve().parent.parent

#: How many calls go to the store per schedule_many() when pre-filling.
PREFILL_BATCH: Final = 1_000


@attrs.frozen(kw_only=True)
class Sizes:
    """Sizes of every workload (``--quick`` and ``--scale`` change them)."""

    drain_n: int = 20_000
    drain_limit: int = 50
    sleepy_n: int = 2_000
    sleepy_limit: int = 100
    sleep: float = 0.05
    serial_n: int = 40
    lateness_n: int = 300
    lateness_spread: float = 5.0
    lateness_lead: float = 0.5
    sqlite_lateness_recheck: float = 0.005
    schedule_n: int = 20_000
    schedule_batch: int = 1_000
    scale_pending: int = 1_000_000
    scale_due: int = 10_000

    def scaled(self, factor: float) -> Sizes:
        def n(value: int) -> int:
            return max(1, round(value * factor))

        return attrs.evolve(
            self,
            drain_n=n(self.drain_n),
            sleepy_n=max(self.sleepy_limit, n(self.sleepy_n)),
            serial_n=n(self.serial_n),
            lateness_n=n(self.lateness_n),
            schedule_n=n(self.schedule_n),
            scale_pending=n(self.scale_pending),
            scale_due=n(self.scale_due),
        )


QUICK: Final = Sizes(
    drain_n=2_000,
    sleepy_n=400,
    serial_n=10,
    lateness_n=60,
    lateness_spread=2.0,
    schedule_n=2_000,
    scale_pending=20_000,
    scale_due=2_000,
)


def _timeout(n: int, per_second: float = 500.0) -> float:
    return max(60.0, n / per_second)


async def _prefill(store: Store, cls: type[FutureCall], n: int, delay: float = 0.0) -> None:
    """Schedule ``n`` calls (due after ``delay`` s) in batches, through a scheduler
    that does not execute."""
    async with open_scheduler(store, [cls], execute=False) as scheduler:
        for start in range(0, n, PREFILL_BATCH):
            count = min(PREFILL_BATCH, n - start)
            await scheduler.schedule_many([(cls, None, delay)] * count)


async def run_until_done(
    store: Store,
    cls: type[FutureCall],
    counter: Counter,
    max_concurrent: int,
    delivery: Delivery = Delivery.AT_MOST_ONCE,
) -> float:
    """Seconds from entering open_scheduler until ``counter`` is done."""
    started = time.perf_counter()
    async with open_scheduler(
        store, [cls], max_concurrent=max_concurrent, grace_period=5, default_delivery=delivery
    ):
        with trio.fail_after(_timeout(counter.target)):
            await counter.done.wait()
        elapsed = time.perf_counter() - started
    return elapsed


# -- drain ------------------------------------------------------------------------------


def drain(kind: str, config: StoreConfig, sizes: Sizes) -> dict[str, float]:
    """N due no-op calls, scheduled before the worker starts: calls/s, for each delivery
    mode (at-least-once leases each row, then deletes it when its call finishes)."""

    async def main(delivery: Delivery) -> float:
        counter = Counter(sizes.drain_n)
        cls = counting_call(counter, max_concurrent=sizes.drain_limit)
        async with open_store(kind, config) as store:
            await _prefill(store, cls, sizes.drain_n)
            return await run_until_done(store, cls, counter, sizes.drain_limit, delivery)

    # The bare Trio ceiling right before, so that the ratio compares one moment's
    # machine (issue 16's targets are ratios).
    ceiling = trio_ceiling(sizes)["drain rate"]
    at_most_once = trio.run(main, Delivery.AT_MOST_ONCE)
    at_least_once = trio.run(main, Delivery.AT_LEAST_ONCE)
    metrics = {
        "drain rate": sizes.drain_n / at_most_once,
        "at-least-once drain rate": sizes.drain_n / at_least_once,
        "trio ceiling": ceiling,
    }
    if kind == "postgres":  # the bound of "drain rate" / "trio ceiling" (issue 16)
        work = least.Work(n=sizes.drain_n, limit=sizes.drain_limit)
        metrics["least program drain rate"] = sizes.drain_n / least_program(kind, config, work)
    return metrics


# -- sleepy -----------------------------------------------------------------------------


def _sleepy_once(
    kind: str,
    config: StoreConfig,
    n: int,
    limit: int,
    sleep: float,
    delivery: Delivery = Delivery.AT_MOST_ONCE,
) -> float:
    async def main() -> float:
        counter = Counter(n)
        cls = counting_call(counter, max_concurrent=limit, sleep=sleep)
        async with open_store(kind, config) as store:
            await _prefill(store, cls, n)
            return await run_until_done(store, cls, counter, limit, delivery)

    return trio.run(main)


def trio_sleepy(n: int, limit: int, sleep: float) -> float:
    """A bare Trio loop doing the sleepy workload: ``n`` tasks that sleep ``sleep``
    seconds, at most ``limit`` at once (one CapacityLimiter); seconds until all ended."""

    async def main() -> float:
        counter = Counter(n)
        limiter = trio.CapacityLimiter(limit)

        async def task(token: object) -> None:
            await trio.sleep(sleep)
            counter.hit()
            limiter.release_on_behalf_of(token)

        started = time.perf_counter()
        async with trio.open_nursery() as nursery:
            for _ in range(n):
                token = object()
                await limiter.acquire_on_behalf_of(token)
                nursery.start_soon(task, token)
            await counter.done.wait()
            elapsed = time.perf_counter() - started
        return elapsed

    return trio.run(main)


def sleepy(kind: str, config: StoreConfig, sizes: Sizes) -> dict[str, float]:
    """Calls that sleep: efficiency at limit 100 in each delivery mode, next to a bare
    Trio loop's measured right before, and the speed-up over serial mode."""
    n, limit, sleep = sizes.sleepy_n, sizes.sleepy_limit, sizes.sleep
    ideal = math.ceil(n / limit) * sleep
    bare = trio_sleepy(n, limit, sleep)
    parallel = _sleepy_once(kind, config, n, limit, sleep)
    leased = _sleepy_once(kind, config, n, limit, sleep, Delivery.AT_LEAST_ONCE)
    serial = _sleepy_once(kind, config, sizes.serial_n, 1, sleep)
    serial_ideal = sizes.serial_n * sleep
    per_call_parallel = parallel / n
    per_call_serial = serial / sizes.serial_n
    metrics = {
        "efficiency": ideal / parallel,
        "at-least-once efficiency": ideal / leased,
        "trio efficiency": ideal / bare,
        "elapsed": parallel,
        "serial efficiency": serial_ideal / serial,
        "speed-up over serial": per_call_serial / per_call_parallel,
    }
    if kind in LEAST_PROGRAM_STORES:  # the bounds of the efficiencies' ratios (issue 16)
        for key, at_least_once in (
            ("least program efficiency", False),
            ("least program at-least-once efficiency", True),
        ):
            work = least.Work(n=n, limit=limit, sleep=sleep, at_least_once=at_least_once)
            metrics[key] = ideal / least_program(kind, config, work)
    return metrics


# -- least programs ---------------------------------------------------------------------

#: The stores the least programs (benchmarks/_least.py) run on.
LEAST_PROGRAM_STORES: Final = ("sqlite", "postgres")


def least_program(kind: str, config: StoreConfig, work: least.Work) -> float:
    """Seconds the least program takes to run ``work`` on a fresh schema or file of
    ``kind``, filled with the library as the workloads fill theirs."""
    if kind == "postgres":
        with pg_schema(config.dsn) as schema:
            _prefill_schema(config, schema, work.n)
            return least.postgres(config.dsn, schema, work)
    if kind == "sqlite":
        with sqlite_path(config) as path:

            async def fill() -> None:
                cls = counting_call(Counter(work.n), max_concurrent=None)
                async with open_sqlite_store(path) as store:
                    await _prefill(store, cls, work.n)

            trio.run(fill)
            return least.sqlite(path, work)
    raise ValueError(f"no least program for the {kind!r} store")


# -- lateness ---------------------------------------------------------------------------


def _percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100)."""
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


def lateness(kind: str, config: StoreConfig, sizes: Sizes) -> dict[str, float]:
    """Another process schedules calls due over the next seconds; (start - due) in ms."""
    n = sizes.lateness_n

    async def main() -> list[float]:
        counter = Counter(n)
        cls = counting_call(counter, max_concurrent=sizes.drain_limit, record_lateness=True)
        async with (
            open_store(kind, config, sqlite_recheck=sizes.sqlite_lateness_recheck) as store,
            open_scheduler(store, [cls], max_concurrent=sizes.drain_limit, grace_period=5),
        ):
            if isinstance(store, SQLiteStore):
                where = str(store.path)
            else:
                where = str(getattr(store, "schema"))  # noqa: B009 (PostgresStore)
            await trio.sleep(0.5)  # the worker is running and idle
            command = [
                sys.executable,
                "-m",
                "benchmarks._producer",
                kind,
                where,
                "--dsn",
                config.dsn,
                "--count",
                str(n),
                "--spread",
                str(sizes.lateness_spread),
                "--lead",
                str(sizes.lateness_lead),
            ]
            await trio.run_process(command, cwd=ROOT)
            with trio.fail_after(sizes.lateness_spread + 60):
                await counter.done.wait()
        return counter.lateness

    samples = [s * 1000 for s in trio.run(main)]
    return {
        "p50": _percentile(samples, 50),
        "p95": _percentile(samples, 95),
        "p99": _percentile(samples, 99),
        "max": max(samples),
        "mean": statistics.fmean(samples),
    }


# -- schedule ---------------------------------------------------------------------------


def schedule(kind: str, config: StoreConfig, sizes: Sizes) -> dict[str, float]:
    """Scheduling rate: one ``schedule()`` per call, then ``schedule_many()`` batches."""
    n, batch = sizes.schedule_n, sizes.schedule_batch
    delay = 3600.0  # due later: nothing runs (and the scheduling node does not execute)

    async def one_at_a_time() -> float:
        cls = counting_call(Counter(n), max_concurrent=1)
        async with (
            open_store(kind, config) as store,
            open_scheduler(store, [cls], execute=False) as scheduler,
        ):
            started = time.perf_counter()
            for _ in range(n):
                await scheduler.schedule(cls, None, delay=delay)
            return time.perf_counter() - started

    async def batched() -> float:
        cls = counting_call(Counter(n), max_concurrent=1)
        async with (
            open_store(kind, config) as store,
            open_scheduler(store, [cls], execute=False) as scheduler,
        ):
            started = time.perf_counter()
            for start in range(0, n, batch):
                await scheduler.schedule_many([(cls, None, delay)] * min(batch, n - start))
            return time.perf_counter() - started

    return {
        "one at a time": n / trio.run(one_at_a_time),
        f"batches of {batch:,}": n / trio.run(batched),
    }


# -- ceilings ---------------------------------------------------------------------------


def trio_ceiling(sizes: Sizes) -> dict[str, float]:
    """A bare Trio loop: N no-op tasks under one global and one class CapacityLimiter."""
    n, limit = sizes.drain_n, sizes.drain_limit

    async def main() -> float:
        counter = Counter(n)
        global_limiter = trio.CapacityLimiter(limit)
        class_limiter = trio.CapacityLimiter(limit)

        async def task(token: object) -> None:
            counter.hit()
            class_limiter.release_on_behalf_of(token)
            global_limiter.release_on_behalf_of(token)

        started = time.perf_counter()
        async with trio.open_nursery() as nursery:
            for _ in range(n):
                token = object()
                await global_limiter.acquire_on_behalf_of(token)
                await class_limiter.acquire_on_behalf_of(token)
                nursery.start_soon(task, token)
            await counter.done.wait()
            elapsed = time.perf_counter() - started
        return elapsed

    return {"drain rate": n / trio.run(main)}


def _prefill_schema(config: StoreConfig, schema: str, n: int) -> None:
    """Create ``schema`` with the store's migrations and schedule ``n`` due calls."""

    async def main() -> None:
        cls = counting_call(Counter(n), max_concurrent=None)
        async with open_store("postgres", config, schema=schema) as store:
            await _prefill(store, cls, n)

    trio.run(main)


def _run_module(module: str, *args: str) -> dict[str, Any]:
    """Run ``python -m benchmarks.<module> args``; return the JSON it prints last."""
    import subprocess

    proc = subprocess.run(
        [sys.executable, "-m", f"benchmarks.{module}", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(
            f"benchmarks.{module} exited with {proc.returncode}: {proc.stderr.strip()[-2000:]}"
        )
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


def postgres_ceiling(config: StoreConfig, sizes: Sizes) -> dict[str, float]:
    """A bare asyncpg loop on plain asyncio (another process, no Trio): one
    ``DELETE ... RETURNING`` per batch of ``drain_limit`` rows, running nothing.

    Both query shapes of :mod:`benchmarks._pg_ceiling` run on identical tables; the
    faster is the ceiling.
    """
    n = sizes.drain_n
    rates: dict[str, float] = {}
    for shape in ("simple", "lateral"):
        with pg_schema(config.dsn) as schema:
            _prefill_schema(config, schema, n)
            out = _run_module(
                "_pg_ceiling",
                "--dsn",
                config.dsn,
                "--schema",
                schema,
                "--name",
                NOOP_NAME,
                "--batch",
                str(sizes.drain_limit),
                "--shape",
                shape,
            )
        if out["claimed"] != n:
            raise RuntimeError(f"the ceiling loop claimed {out['claimed']} rows, expected {n}")
        rates[shape] = n / out["elapsed"]
    return {"drain rate": max(rates.values()), **{f"{k} shape": v for k, v in rates.items()}}


# -- scale ------------------------------------------------------------------------------

_FILL_FUTURE: Final = """
INSERT INTO "{schema}".calls (name, payload, due_at, identifier, scheduled_at)
SELECT $1::text, 'null', now() + interval '1 hour' + g * interval '50 milliseconds',
       NULL, now()
FROM generate_series(1, $2::integer) AS g
"""
_FILL_DUE: Final = """
INSERT INTO "{schema}".calls (name, payload, due_at, identifier, scheduled_at)
SELECT $1::text, 'null', now() - interval '1 minute' + g * interval '1 microsecond',
       NULL, now()
FROM generate_series(1, $2::integer) AS g
"""


def _create_store_schema(config: StoreConfig, schema: str) -> None:
    async def main() -> None:
        async with open_store("postgres", config, schema=schema):
            pass

    trio.run(main)


def scale_pairs(config: StoreConfig, sizes: Sizes, repeat: int) -> list[dict[str, float]]:
    """The due-call drain with ``scale_pending`` future rows vs on an empty table.

    Two schemas; each repeat drains ``scale_due`` calls in a worker subprocess on the
    empty one, then on the big one (interleaved, so slow drifts of the machine's load
    hit both alike). Returns one dict of metrics per repeat.
    """
    out: list[dict[str, float]] = []
    full_label = f"{sizes.scale_pending:,} pending"
    with pg_schema(config.dsn) as empty, pg_schema(config.dsn) as full:
        for schema in (empty, full):
            _create_store_schema(config, schema)
        started = time.perf_counter()
        pg_execute(config.dsn, _FILL_FUTURE.format(schema=full), NOOP_NAME, sizes.scale_pending)
        fill_seconds = time.perf_counter() - started

        async def analyze(conn: Any) -> None:
            for schema in (empty, full):
                await conn.execute(f'ANALYZE "{schema}".calls')

        pg_run(config.dsn, analyze)
        for _ in range(repeat):
            metrics: dict[str, float] = {}
            for label, schema in (("empty table", empty), (full_label, full)):
                pg_execute(config.dsn, _FILL_DUE.format(schema=schema), NOOP_NAME, sizes.scale_due)
                result = _run_module(
                    "_scale_worker",
                    "--dsn",
                    config.dsn,
                    "--schema",
                    schema,
                    "--count",
                    str(sizes.scale_due),
                    "--limit",
                    str(sizes.drain_limit),
                )
                metrics[f"drain rate, {label}"] = sizes.scale_due / result["elapsed"]
                metrics[f"worker peak RSS, {label}"] = result["maxrss_kib"] / 1024
            metrics["drain ratio"] = (
                metrics[f"drain rate, {full_label}"] / metrics["drain rate, empty table"]
            )
            metrics["fill rate"] = sizes.scale_pending / fill_seconds
            out.append(metrics)
    return out

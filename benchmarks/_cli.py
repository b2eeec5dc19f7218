"""The command line: ``python -m benchmarks [--store ...] [--workload ...] [--quick]``."""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Final

import attrs

from benchmarks import _targets as targets
from benchmarks import adaptive
from benchmarks._compare import Comparison, compare, comparison_table, register
from benchmarks._cpu import CPU_CALLS, CPU_LIMIT, CPU_SECONDS, cpu
from benchmarks._harness import Results, Target, machine_info, markdown_table, noise_summary
from benchmarks._harness import write_report as write_json
from benchmarks._producer_workloads import describe as describe_producer
from benchmarks._producer_workloads import producer
from benchmarks._stores import STORES, StoreConfig, pg_fetchval, postgres_problem
from benchmarks._workloads import (
    LEAST_PROGRAM_STORES,
    QUICK,
    ROOT,
    Sizes,
    drain,
    lateness,
    postgres_ceiling,
    scale_pairs,
    schedule,
    sleepy,
    trio_ceiling,
)
from trio_futurecalls import Delivery
from trio_futurecalls._redact import redact

DEFAULT_DSN: Final = "postgresql://postgres@127.0.0.1:5432/test"
DSN_ENV: Final = "TRIO_FUTURECALLS_TEST_DSN"

#: Workloads in the order they run, with the stores each applies to.
WORKLOADS: Final = {
    "ceilings": ("postgres",),  # plus the Trio ceiling, which needs no store
    "drain": STORES,
    "sleepy": STORES,
    "schedule": STORES,
    "lateness": ("sqlite", "postgres"),
    "scale": ("postgres",),
    # Executors (the memory store: it measures where calls' work runs, not a store).
    "cpu": ("memory",),
    # Adaptive(1, 64) against fixed limits on a simulated downstream (benchmarks/adaptive.py).
    "adaptive": ("memory",),
    # Producers (issue 16): schedule_call alone and from 50 tasks, schedule_many, each
    # against its ceiling in the same run (benchmarks/_producer_workloads.py).
    "producer": ("sqlite", "postgres"),
}
RESULTS_DIR: Final = ROOT / "benchmarks" / "results"


def one_run_parser(prog: str, *, delivery: str, n: int, limit: int) -> argparse.ArgumentParser:
    """The arguments the one-run tools share (``benchmarks.batch_sizes``,
    ``benchmarks.sleepy_gaps``): the store, the delivery mode, how many calls, the
    concurrency limit and the server; ``delivery``, ``n`` and ``limit`` are defaults."""
    parser = argparse.ArgumentParser(prog=prog)
    parser.add_argument("--store", default="postgres", choices=("memory", "sqlite", "postgres"))
    parser.add_argument("--delivery", default=delivery, choices=("at-most-once", "at-least-once"))
    parser.add_argument("-n", type=int, default=n)
    parser.add_argument("--limit", type=int, default=limit)
    parser.add_argument("--dsn", default=os.environ.get(DSN_ENV, DEFAULT_DSN))
    return parser


def delivery_of(args: argparse.Namespace) -> Delivery:
    """The delivery mode ``--delivery`` names (see :func:`one_run_parser`)."""
    return Delivery.AT_LEAST_ONCE if args.delivery == "at-least-once" else Delivery.AT_MOST_ONCE


def _csv(allowed: Sequence[str]) -> Callable[[str], list[str]]:
    def parse(text: str) -> list[str]:
        items = [item.strip() for item in text.split(",") if item.strip()]
        if "all" in items:
            return list(allowed)
        bad = [item for item in items if item not in allowed]
        if bad or not items:
            raise argparse.ArgumentTypeError(
                f"expected a comma-separated list of {', '.join(allowed)} (or all), got {text!r}"
            )
        return items

    return parse


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description="Benchmark trio_futurecalls on the memory, SQLite and PostgreSQL stores.",
    )
    parser.add_argument(
        "--store",
        type=_csv(STORES),
        default=None,
        help="stores to run (default: every reachable one: memory,sqlite,postgres)",
    )
    parser.add_argument(
        "--workload",
        type=_csv(list(WORKLOADS)),
        default=list(WORKLOADS),
        help=f"workloads to run (default: all = {','.join(WORKLOADS)})",
    )
    parser.add_argument(
        "-n",
        type=int,
        default=None,
        help="calls per drain, schedule and ceiling run (default 20,000; --quick 2,000)",
    )
    parser.add_argument(
        "--scale",
        type=float,
        default=1.0,
        help="multiply every workload's size by this factor (default 1)",
    )
    parser.add_argument(
        "--pending",
        type=int,
        default=None,
        help="future rows in the scale workload (default 1,000,000; --quick 20,000)",
    )
    parser.add_argument(
        "--repeat",
        type=int,
        default=None,
        help="runs per measurement; the table shows the median (default 3; --quick 1)",
    )
    parser.add_argument("--quick", action="store_true", help="small sizes, one repeat: a smoke run")
    parser.add_argument(
        "--dsn",
        default=os.environ.get(DSN_ENV, DEFAULT_DSN),
        help=f"PostgreSQL server (default ${DSN_ENV} or {DEFAULT_DSN}); each run uses a "
        "fresh schema, dropped afterwards",
    )
    parser.add_argument(
        "--sqlite-dir",
        type=Path,
        default=None,
        help="directory for the SQLite files (default: the system temporary directory)",
    )
    parser.add_argument(
        "--output",
        type=Path,
        default=None,
        help="JSON report (default benchmarks/results/latest.json; --quick: quick.json)",
    )
    args = parser.parse_args(argv)
    if args.repeat is not None and args.repeat < 1:
        parser.error("--repeat must be >= 1")
    if args.scale <= 0:
        parser.error("--scale must be > 0")
    return args


def _sizes(args: argparse.Namespace) -> Sizes:
    sizes = QUICK if args.quick else Sizes()
    if args.scale != 1.0:
        sizes = sizes.scaled(args.scale)
    changes: dict[str, int] = {}
    if args.n is not None:
        changes.update(drain_n=args.n, schedule_n=args.n)
    if args.pending is not None:
        changes.update(scale_pending=args.pending)
    if changes:
        sizes = attrs.evolve(sizes, **changes)
    return sizes


def _describe(workload: str, store: str, key: str, sizes: Sizes) -> tuple[str, str, Target | None]:
    """(metric name, unit, target) of one value a workload returned."""
    if workload == "drain" and key == "at-least-once drain rate":
        return (
            f"{sizes.drain_n:,} due calls, limit {sizes.drain_limit}, at-least-once",
            "calls/s",
            None,
        )
    if workload == "drain" and key == "trio ceiling":
        return (
            f"bare Trio spawn ceiling, {sizes.drain_n:,} no-op tasks, limit "
            f"{sizes.drain_limit} (measured with this store's drains)",
            "calls/s",
            None,
        )
    if workload == "drain" and key == "least program drain rate":
        return (
            f"least program (benchmarks/_least.py), {sizes.drain_n:,} due calls, limit "
            f"{sizes.drain_limit} (measured with this store's drains)",
            "calls/s",
            None,
        )
    if workload == "drain":
        return (
            f"{sizes.drain_n:,} due calls, limit {sizes.drain_limit}",
            "calls/s",
            (targets.DRAIN_RATE.get(store)),
        )
    if workload == "sleepy":
        n, limit = sizes.sleepy_n, sizes.sleepy_limit
        ideal = math.ceil(n / limit) * sizes.sleep
        sleep_ms = f"{sizes.sleep * 1000:g} ms"
        if key == "efficiency":
            name = f"efficiency, {n:,} x {sleep_ms}, limit {limit} (ideal {ideal:g} s)"
            return name, "x", None
        if key == "at-least-once efficiency":
            name = (
                f"efficiency, {n:,} x {sleep_ms}, limit {limit} (ideal {ideal:g} s), at-least-once"
            )
            return name, "x", None
        if key == "trio efficiency":
            name = (
                f"bare Trio loop efficiency, {n:,} x {sleep_ms}, limit {limit} "
                "(measured with this store's runs)"
            )
            return name, "x", None
        if key in ("least program efficiency", "least program at-least-once efficiency"):
            mode = ", at-least-once" if "at-least-once" in key else ""
            name = (
                f"least program (benchmarks/_least.py) efficiency, {n:,} x {sleep_ms}, limit "
                f"{limit}{mode} (measured with this store's runs)"
            )
            return name, "x", None
        if key == "elapsed":
            return f"elapsed, {n:,} calls, limit {limit}", "s", None
        if key == "serial efficiency":
            serial_ideal = sizes.serial_n * sizes.sleep
            name = f"serial efficiency, {sizes.serial_n} calls, limit 1 (ideal {serial_ideal:g} s)"
            return name, "x", None
        return f"speed-up per call, limit {limit} over limit 1", "x", None
    if workload == "lateness":
        name = (
            f"{key} start - due, {sizes.lateness_n} calls over {sizes.lateness_spread:g} s "
            "from another process"
        )
        target = targets.LATENESS_P99_MS.get(store) if key == "p99" else None
        return name, "ms", target
    if workload == "schedule":
        if key == "one at a time":
            return (
                f"schedule() one at a time, {sizes.schedule_n:,}",
                "calls/s",
                (targets.SCHEDULE_ONE_RATE.get(store)),
            )
        return f"schedule_many(), {key}", "calls/s", targets.SCHEDULE_BATCH_RATE.get(store)
    if workload == "cpu":
        cpu_calls = f"{CPU_CALLS} calls of {CPU_SECONDS:g} s CPU, limit {CPU_LIMIT}"
        how = key.rsplit(maxsplit=1)[0] if not key.endswith("/ TASK") else key
        if key.endswith("seconds"):
            return f"{cpu_calls}: all done, {how}", "s", None
        if key.endswith("/ TASK"):
            target = targets.CPU_PROCESS_OF_TASK if key == "PROCESS / TASK" else None
            return f"{cpu_calls}: {key.replace('/ TASK', 'time / TASK time')}", "x", target
        return (
            f"tiny async calls' start - due p99 meanwhile, {key.removesuffix(' tiny p99')}",
            "ms",
            targets.CPU_TINY_P99_MS if key == "PROCESS tiny p99" else None,
        )
    if workload == "producer":
        return describe_producer(store, key, sizes)
    raise AssertionError((workload, key))


@register
def _worker_comparisons(sizes: Sizes) -> list[Comparison]:
    """Issue 16, worker side: the drains and the sleepy calls against the bare Trio
    loops measured with them, and at-least-once against at-most-once.

    Rows labelled "bound:" judge the least program (benchmarks/_least.py) by the same
    target, against the same ceiling: whether the target is within reach at all."""

    def key(workload: str, store: str, metric: str) -> tuple[str, str, str]:
        return workload, store, _describe(workload, store, metric, sizes)[0]

    rows = []
    for store in ("memory", "postgres"):
        rows.append(
            Comparison(
                f"drain {store}: at-most-once / bare Trio spawn ceiling",
                key("drain", store, "drain rate"),
                key("drain", store, "trio ceiling"),
                targets.DRAIN_OF_TRIO_CEILING,
            )
        )
    rows.append(
        Comparison(
            "bound: drain postgres, least program / bare Trio spawn ceiling",
            key("drain", "postgres", "least program drain rate"),
            key("drain", "postgres", "trio ceiling"),
            targets.DRAIN_OF_TRIO_CEILING,
        )
    )
    rows.append(
        Comparison(
            "drain postgres: at-least-once / at-most-once",
            key("drain", "postgres", "at-least-once drain rate"),
            key("drain", "postgres", "drain rate"),
            targets.AT_LEAST_ONCE_OF_AT_MOST_ONCE,
        )
    )
    for store in STORES:
        for mode, metric in (
            ("at-most-once", "efficiency"),
            ("at-least-once", "at-least-once efficiency"),
        ):
            rows.append(
                Comparison(
                    f"sleepy {store}, {mode}: efficiency / bare Trio loop's",
                    key("sleepy", store, metric),
                    key("sleepy", store, "trio efficiency"),
                    targets.SLEEPY_OF_TRIO_LOOP,
                )
            )
            if store in LEAST_PROGRAM_STORES:
                rows.append(
                    Comparison(
                        f"bound: sleepy {store}, {mode}, least program efficiency / "
                        "bare Trio loop's",
                        key("sleepy", store, f"least program {metric}"),
                        key("sleepy", store, "trio efficiency"),
                        targets.SLEEPY_OF_TRIO_LOOP,
                    )
                )
    return rows


def _record(
    results: Results, workload: str, store: str, metrics: dict[str, float], sizes: Sizes
) -> str:
    parts = []
    for key, value in metrics.items():
        metric, unit, target = _describe(workload, store, key, sizes)
        results.add(workload, store, metric, unit, value, target)
        parts.append(f"{key}={value:,.3f}" if unit != "calls/s" else f"{key}={value:,.0f}/s")
    return ", ".join(parts)


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _derive_ceiling_fractions(results: Results, sizes: Sizes) -> None:
    """Each store's drain as a fraction of its ceiling (per repeat, over the median)."""
    drain_metric = f"{sizes.drain_n:,} due calls, limit {sizes.drain_limit}"
    for store, ceiling_store, target in (
        ("memory", "trio", targets.MEMORY_DRAIN_OF_TRIO_CEILING),
        ("sqlite", "trio", None),
        ("postgres", "postgres (asyncpg)", None),
    ):
        drained = results.get("drain", store, drain_metric)
        ceiling = results.get("ceiling", ceiling_store, drain_metric)
        if drained is None or ceiling is None or not drained.values or not ceiling.values:
            continue
        for value in drained.values:
            results.add(
                "drain",
                store,
                f"fraction of the {ceiling_store} ceiling",
                "x",
                value / ceiling.median,
                target,
            )


@attrs.define
class _Runner:
    """Runs workloads ``repeat`` times, records results; a failure is logged and kept."""

    results: Results
    errors: list[str]
    sizes: Sizes
    config: StoreConfig
    repeat: int

    def _attempt(self, label: str, fn: Callable[[], str]) -> bool:
        try:
            shown = fn()
        except Exception as exc:
            self.errors.append(f"{label}: {type(exc).__name__}: {exc}")
            _log(f"ERROR {label}:\n{traceback.format_exc()}")
            return False
        _log(f"{label}: {shown}")
        return True

    def ceilings(self, *, with_postgres: bool) -> None:
        sizes = self.sizes
        metric = f"{sizes.drain_n:,} due calls, limit {sizes.drain_limit}"

        def trio_once() -> str:
            value = trio_ceiling(sizes)["drain rate"]
            self.results.add("ceiling", "trio", metric, "calls/s", value)
            return f"{value:,.0f}/s"

        def postgres_once() -> str:
            rates = postgres_ceiling(self.config, sizes)
            value = rates.pop("drain rate")
            self.results.add("ceiling", "postgres (asyncpg)", metric, "calls/s", value)
            shapes = ", ".join(f"{k} {v:,.0f}/s" for k, v in rates.items())
            for key, rate in rates.items():
                self.results.add(
                    "ceiling", "postgres (asyncpg)", f"{metric}, {key}", "calls/s", rate
                )
            return f"{value:,.0f}/s (the faster of: {shapes})"

        for i in range(self.repeat):
            if not self._attempt(f"ceiling/trio {i + 1}/{self.repeat}", trio_once):
                break
        if with_postgres:
            for i in range(self.repeat):
                if not self._attempt(f"ceiling/postgres {i + 1}/{self.repeat}", postgres_once):
                    break

    def scale(self) -> None:
        sizes = self.sizes

        def all_repeats() -> str:
            for metrics in scale_pairs(self.config, sizes, self.repeat):
                for key, value in metrics.items():
                    metric = f"{key}, {sizes.scale_due:,} due"
                    target: Target | None = None
                    if key.startswith("drain rate"):
                        unit = "calls/s"
                    elif key.startswith("worker peak RSS"):
                        unit = "MiB"
                        target = targets.SCALE_RSS_MIB if "pending" in key else None
                    elif key.startswith("fill rate"):
                        metric = (
                            f"INSERT ... SELECT generate_series of {sizes.scale_pending:,} rows"
                        )
                        unit = "rows/s"
                    else:
                        metric = (
                            f"drain rate with {sizes.scale_pending:,} pending / empty table, "
                            f"{sizes.scale_due:,} due"
                        )
                        unit, target = "x", targets.SCALE_RATIO
                    self.results.add("scale", "postgres", metric, unit, value, target)
                _log(f"scale/postgres: {metrics}")
            return "done"

        self._attempt("scale/postgres", all_repeats)

    def adaptive(self, command: str, quick: bool) -> None:
        """Both parts of the adaptive workload; the table goes to results/adaptive.md
        (``--quick``: adaptive-quick.md)."""

        def all_repeats() -> str:
            report = adaptive.measure(self.repeat, quick=quick, log=_log)
            for label, runs in report.steady.items():
                for run in runs:
                    name = label if label.startswith("Adaptive") else f"fixed {label}"
                    self.results.add(
                        "adaptive",
                        "memory",
                        f"{name}, successful calls/s over {report.seconds:g} s",
                        "calls/s",
                        run["throughput"],
                    )
            best_label, best = adaptive.best_fixed(report)
            ours = [r["throughput"] for r in report.steady["Adaptive(1, 64)"]]
            for value in ours:
                self.results.add(
                    "adaptive",
                    "memory",
                    f"Adaptive(1, 64) / best fixed ({best_label})",
                    "x",
                    value / best,
                    targets.ADAPTIVE_OF_BEST_FIXED,
                )
            for runs in report.phases:
                for i, phase in enumerate(runs):
                    self.results.add(
                        "adaptive",
                        "memory",
                        f"phase {i + 1}: limit settled within (s)",
                        "s",
                        phase["settle_s"],
                        targets.ADAPTIVE_SETTLE_S,
                    )
            path = RESULTS_DIR / ("adaptive-quick.md" if quick else "adaptive.md")
            adaptive.write(report, command, path)
            return f"written to {path}"

        self._attempt("adaptive/memory", all_repeats)

    def store_workload(self, workload: str, store: str) -> None:
        runner = {
            "drain": drain,
            "sleepy": sleepy,
            "schedule": schedule,
            "lateness": lateness,
            "cpu": cpu,
            "producer": producer,
        }[workload]

        def once() -> str:
            metrics = runner(store, self.config, self.sizes)
            return _record(self.results, workload, store, metrics, self.sizes)

        for i in range(self.repeat):
            if not self._attempt(f"{workload}/{store} {i + 1}/{self.repeat}", once):
                break


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    sizes = _sizes(args)
    repeat = args.repeat or (1 if args.quick else 3)
    config = StoreConfig(dsn=args.dsn, sqlite_dir=args.sqlite_dir)
    notes: list[str] = []
    errors: list[str] = []

    machine = machine_info()
    problem = postgres_problem(args.dsn)
    stores: list[str] = args.store or list(STORES)
    if "postgres" in stores and problem is not None:
        if args.store is not None:
            _log(f"PostgreSQL at {args.dsn} is unreachable: {problem}")
            return 2
        stores.remove("postgres")
        notes.append(f"PostgreSQL skipped: {args.dsn} unreachable ({problem})")
        _log(f"NOTE: {notes[-1]}")
    if "postgres" in stores:
        machine["postgresql"] = pg_fetchval(args.dsn, "SELECT version()")
        machine["postgresql_server_version"] = pg_fetchval(args.dsn, "SHOW server_version")
    if "sqlite" in stores:
        notes.append(
            "SQLite: library defaults (WAL, synchronous=FULL); the lateness workload opens "
            f"the worker's store with recheck_interval={sizes.sqlite_lateness_recheck} s "
            "(SQLite sees other processes' calls only by re-checking)"
        )
    notes.append(
        f"lateness: the other process schedules all calls in one schedule_many(), due "
        f"evenly from now + {sizes.lateness_lead:g} s to now + "
        f"{sizes.lateness_lead + sizes.lateness_spread:g} s"
    )
    notes.append("schedule: a scheduling-only node (open_scheduler(execute=False)), due in 1 h")

    results = Results()
    started = time.perf_counter()

    run = _Runner(results=results, errors=errors, sizes=sizes, config=config, repeat=repeat)
    for workload in args.workload:
        if workload == "ceilings":
            run.ceilings(with_postgres="postgres" in stores)
        elif workload == "scale":
            if "postgres" in stores:
                run.scale()
        elif workload == "adaptive":
            if "memory" in stores:
                run.adaptive(
                    " ".join(["python -m benchmarks", *(argv or sys.argv[1:])]), args.quick
                )
        else:
            for store in stores:
                if store in WORKLOADS[workload]:
                    run.store_workload(workload, store)

    _derive_ceiling_fractions(results, sizes)
    compared = compare(results, sizes)
    total = time.perf_counter() - started
    notes.append(noise_summary(results))
    output = args.output or RESULTS_DIR / ("quick.json" if args.quick else "latest.json")
    run_config = {
        "command": " ".join(["python -m benchmarks", *(argv or sys.argv[1:])]),
        "stores": stores,
        "workloads": args.workload,
        "repeat": repeat,
        "quick": args.quick,
        "sizes": _sizes_dict(sizes),
        "dsn": redact(args.dsn),
        "total_seconds": total,
    }
    write_json(
        output,
        machine=machine,
        config=run_config,
        results=results,
        errors=errors,
        notes=notes,
        comparisons=[c.to_json() for c in compared],
    )
    print(markdown_table(results))
    print()
    if compared:
        print(comparison_table(compared))
        print()
    for note in notes:
        print(f"- {note}")
    print(
        f"- machine: {machine['cpu_model']}, {machine['cpu_count']} cores, Python "
        f"{machine['python']}, trio {machine['trio']}"
        + (
            f", PostgreSQL {machine['postgresql_server_version']}"
            if "postgresql_server_version" in machine
            else ""
        )
        + f"; load average at start {machine['loadavg_at_start'][0]:.2f}, at end "
        + f"{os.getloadavg()[0]:.2f}"
    )
    print(f"- {repeat} repeat(s); total {total:.0f} s; report written to {output}")
    if errors:
        print(f"- {len(errors)} error(s):")
        for error in errors:
            print(f"  - {error}")
        return 1
    return 0


def _sizes_dict(sizes: Sizes) -> dict[str, float]:
    values: dict[str, float] = attrs.asdict(sizes)
    return values

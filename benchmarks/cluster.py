"""Cluster-wide limits: their cost, and how well a limited drain uses its slots.

Not part of ``python -m benchmarks``: run it from a checkout::

    python -m benchmarks.cluster --dsn postgresql://127.0.0.1:5432/test [--repeat 3]

1. **Cost** (one process): N no-op calls drained at concurrency 50 (at-most-once),
   with no cluster limit, and with a cluster limit of 50 on the class (it never
   binds: every claim takes and every end frees a token). Calls/s, per store.
2. **Use of the slots** (PostgreSQL, 4 worker processes; SQLite, 3 on one file): 600
   calls of 50 ms under ``cluster_max_concurrent = 3``. The ideal drain is 600 x 50 ms
   / 3 = 10 s; prints the time from the first start to the last end and its ratio to
   the ideal (the issue's target: at most 1.3), and the most calls seen at once.

Medians of ``--repeat`` runs, with the spread.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import trio

from benchmarks._calls import Counter, counting_call
from benchmarks._stores import StoreConfig, open_store
from benchmarks._workloads import _prefill, run_until_done

DRAIN_N = 20_000
LIMIT = 50
SLOW_CALLS = 600
SLOW_LIMIT = 3
SLOW_SECONDS = 0.05


def cost(kind: str, config: StoreConfig, limited: bool) -> float:
    async def main() -> float:
        counter = Counter(DRAIN_N)
        cls: Any = counting_call(counter, max_concurrent=LIMIT)
        if limited:
            cls.cluster_max_concurrent = LIMIT
        async with open_store(kind, config) as store:
            await _prefill(store, cls, DRAIN_N)
            return DRAIN_N / await run_until_done(store, cls, counter, LIMIT)

    return trio.run(main)


WORKER = """
import os, sys, time, trio
from trio_futurecalls import FutureCall, open_scheduler, open_store

fd = os.open(sys.argv[2], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

class Slow(FutureCall):
    name = "bench-cluster-slow"
    max_concurrent = 3
    cluster_max_concurrent = 3

    async def invoke(self, session, payload):
        start = time.time()
        await trio.sleep(0.05)
        os.write(fd, f"{start:.6f} {time.time():.6f}\\n".encode())

async def main(url):
    if url.startswith("sqlite:"):
        opened = open_store(url, recheck_interval=0.05)
    else:
        dsn, _, schema = url.partition("#")
        opened = open_store(dsn, schema=schema, max_pool_size=6)
    async with opened as store, open_scheduler(store, [Slow], max_concurrent=3):
        print("ready", flush=True)
        await trio.sleep_forever()

trio.run(main, sys.argv[1])
"""


def slots_use(kind: str, config: StoreConfig, processes: int) -> tuple[float, int]:
    """(first start to last end in s, most calls at once) for the limited drain."""

    async def main() -> tuple[float, int]:
        from trio_futurecalls import NewCall

        with tempfile.TemporaryDirectory() as tmp:
            log = Path(tmp) / "runs.log"
            async with open_store(kind, config) as store:
                if kind == "sqlite":
                    url = f"sqlite:///{store.path}"  # type: ignore[attr-defined]
                else:
                    url = f"{config.dsn}#{store.schema}"  # type: ignore[attr-defined]
                now = datetime.now(UTC)
                await store.schedule(
                    [
                        NewCall(
                            name="bench-cluster-slow", payload="0", due_at=now, scheduled_at=now
                        )
                        for _ in range(SLOW_CALLS)
                    ]
                )
                procs = []
                try:
                    for _ in range(processes):
                        proc = await trio.lowlevel.open_process(
                            [sys.executable, "-c", WORKER, url, str(log)],
                            stdout=subprocess.PIPE,
                        )
                        procs.append(proc)
                        assert proc.stdout is not None
                        with trio.fail_after(30):
                            await proc.stdout.receive_some()
                    with trio.fail_after(120):
                        # (The workers are other processes: nothing to wait on but the log.)
                        while not log.exists() or len(log.read_text().splitlines()) < SLOW_CALLS:  # noqa: ASYNC110
                            await trio.sleep(0.05)
                finally:
                    for proc in procs:
                        proc.kill()
                        await proc.wait()
                        if proc.stdout is not None:
                            await proc.stdout.aclose()
                runs = [tuple(map(float, line.split())) for line in log.read_text().splitlines()]
        points = sorted([(e, -1) for _, e in runs] + [(s, 1) for s, _ in runs])
        now_running = peak = 0
        for _, step in points:
            now_running += step
            peak = max(peak, now_running)
        return max(e for _, e in runs) - min(s for s, _ in runs), peak

    return trio.run(main)


def spread(values: list[float]) -> str:
    med = statistics.median(values)
    return f"{med:,.0f} (runs {', '.join(f'{v:,.0f}' for v in values)})"


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.cluster")
    parser.add_argument(
        "--dsn",
        default=os.environ.get(
            "TRIO_FUTURECALLS_TEST_DSN", "postgresql://postgres@127.0.0.1:5432/test"
        ),
    )
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--store", default="memory,sqlite,postgres")
    args = parser.parse_args()
    config = StoreConfig(dsn=args.dsn)
    stores = args.store.split(",")
    print(f"# cluster-wide limits ({time.strftime('%Y-%m-%d %H:%M')}, {os.cpu_count()} cores)")
    print(f"\n## cost: drain of {DRAIN_N:,} no-op calls at concurrency {LIMIT}, calls/s\n")
    print("| store | no cluster limit | cluster limit 50 (never binds) | ratio |")
    print("| --- | --- | --- | --- |")
    for kind in stores:
        plain: list[float] = []
        limited: list[float] = []
        for _ in range(args.repeat):  # alternated: the machine's drift hits both alike
            plain.append(cost(kind, config, False))
            limited.append(cost(kind, config, True))
        ratio = statistics.median(limited) / statistics.median(plain)
        print(f"| {kind} | {spread(plain)} | {spread(limited)} | {ratio:.2f} |")
    print(
        f"\n## use of the slots: {SLOW_CALLS} calls of {SLOW_SECONDS * 1000:.0f} ms, "
        f"cluster limit {SLOW_LIMIT} (ideal {SLOW_CALLS * SLOW_SECONDS / SLOW_LIMIT:.0f} s)\n"
    )
    print("| store | workers | drain s | ratio to ideal | most at once |")
    print("| --- | --- | --- | --- | --- |")
    for kind, processes in (("postgres", 4), ("sqlite", 3)):
        if kind not in stores:
            continue
        results = [slots_use(kind, config, processes) for _ in range(args.repeat)]
        times = [r[0] for r in results]
        ideal = SLOW_CALLS * SLOW_SECONDS / SLOW_LIMIT
        med = statistics.median(times)
        print(
            f"| {kind} | {processes} | {med:.2f} (runs {', '.join(f'{t:.2f}' for t in times)}) "
            f"| {med / ideal:.2f} | {max(r[1] for r in results)} |"
        )


if __name__ == "__main__":
    main()

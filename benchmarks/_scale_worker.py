"""Scale workload, the worker process: drain the due calls of a PostgreSQL schema.

Prints ``{"elapsed": s, "maxrss_kib": n}`` as JSON: the seconds from entering
``open_scheduler`` until ``--count`` calls have run, and this process's peak resident
set size in KiB over its whole life: ``VmHWM`` from ``/proc/self/status``. Not
``ru_maxrss``: Linux carries ``ru_maxrss`` over ``fork`` + ``execve``, so a worker
started by a big parent would report the parent's peak.
"""

from __future__ import annotations

import argparse
import json
import resource
from pathlib import Path

import trio

from benchmarks._calls import Counter, counting_call
from benchmarks._workloads import run_until_done
from trio_futurecalls.stores.postgres import open_postgres_store


async def main(args: argparse.Namespace) -> float:
    counter = Counter(args.count)
    cls = counting_call(counter, max_concurrent=args.limit)
    async with open_postgres_store(args.dsn, schema=args.schema) as store:
        return await run_until_done(store, cls, counter, args.limit)


def peak_rss_kib() -> int:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m benchmarks._scale_worker")
    parser.add_argument("--dsn", required=True)
    parser.add_argument("--schema", required=True)
    parser.add_argument("--count", type=int, required=True)
    parser.add_argument("--limit", type=int, default=50)
    arguments = parser.parse_args()
    elapsed = trio.run(main, arguments)
    print(json.dumps({"elapsed": elapsed, "maxrss_kib": peak_rss_kib()}))

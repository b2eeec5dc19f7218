"""Where the sleepy workload's time goes: the start, and each slot's turnover.

``python -m benchmarks.sleepy_gaps [--store postgres] [--delivery at-least-once]``
runs the sleepy workload once (2,000 calls of ``sleep(50 ms)`` at concurrency 100,
prefilled; the clock starts as ``open_scheduler`` is entered, as in the workload) and
prints:

* how long after entering ``open_scheduler`` the first call started, and the 100th
  (the scheduler's start: the LISTEN connection, registration, the first claim);
* the slot turnover: for the i-th call to end, the time until the (i + 100)-th call
  started (the one that took a slot freed then), as mean and percentiles. A lane of
  20 calls pays it 19 times, so its mean times 19 is about what a run loses to it.

It records start and end times from inside the calls; the library carries no debug
counters.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Sequence
from typing import Any

import trio

from benchmarks._cli import delivery_of, one_run_parser
from benchmarks._stores import StoreConfig, open_store
from benchmarks._workloads import _prefill
from trio_futurecalls import Delivery, FutureCall, open_scheduler


def run(kind: str, dsn: str, delivery: Delivery, n: int, limit: int, sleep: float) -> str:
    starts: list[float] = []
    ends: list[float] = []
    all_done = trio.Event()

    class Sleepy(FutureCall):
        name = "bench-noop"
        max_concurrent = limit

        async def invoke(self, session: Any, payload: Any) -> None:
            starts.append(time.perf_counter())
            await trio.sleep(sleep)
            ends.append(time.perf_counter())
            if len(ends) == n:
                all_done.set()

    async def main() -> tuple[float, float]:
        async with open_store(kind, StoreConfig(dsn=dsn)) as store:
            await _prefill(store, Sleepy, n)
            began = time.perf_counter()
            async with open_scheduler(
                store, [Sleepy], max_concurrent=limit, grace_period=5, default_delivery=delivery
            ):
                await all_done.wait()
                ended = time.perf_counter()
        return began, ended

    began, ended = trio.run(main)
    started, finished = sorted(starts), sorted(ends)
    gaps = [started[i + limit] - finished[i] for i in range(n - limit)]
    cuts = statistics.quantiles(gaps, n=20)
    efficiency = n * sleep / limit / (ended - began)  # the ideal over the actual
    return (
        f"{kind}, {delivery.value.replace('_', '-')}: {ended - began:.3f} s for {n} x "
        f"{sleep * 1e3:.0f} ms at limit {limit} (efficiency {efficiency:.3f})\n"
        f"  first call started {(started[0] - began) * 1e3:.1f} ms after open_scheduler, "
        f"call {limit} at {(started[limit - 1] - began) * 1e3:.1f} ms\n"
        f"  slot turnover: mean {statistics.mean(gaps) * 1e3:.2f} ms, p50 "
        f"{cuts[9] * 1e3:.2f}, p95 {cuts[18] * 1e3:.2f}, max {max(gaps) * 1e3:.2f} ms"
    )


def main(argv: Sequence[str] | None = None) -> None:
    parser = one_run_parser(
        "python -m benchmarks.sleepy_gaps", delivery="at-most-once", n=2_000, limit=100
    )
    parser.add_argument("--sleep", type=float, default=0.05)
    args = parser.parse_args(argv)
    if args.n <= args.limit:
        parser.error("-n must be more than --limit")
    print(run(args.store, args.dsn, delivery_of(args), args.n, args.limit, args.sleep))


if __name__ == "__main__":
    main()

"""How a drain batches: claims and grouped writes per statement, and time in each.

``python -m benchmarks.batch_sizes [--store postgres] [--delivery at-least-once] [-n N]``
drains N due no-op calls at concurrency 50 (as the drain workload does) and prints the
histogram of calls per claim and per grouped write (completions, releases, frees...),
how many statements of each kind ran, and the seconds spent waiting for them. It wraps
the store's methods from outside, so the library carries no debug counters.
"""

from __future__ import annotations

import os
import time
from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import trio

from benchmarks._calls import Counter as Done
from benchmarks._calls import counting_call
from benchmarks._cli import delivery_of, one_run_parser
from benchmarks._stores import StoreConfig, open_store
from benchmarks._workloads import _prefill, run_until_done
from trio_futurecalls import Store
from trio_futurecalls.stores import _batch


class Tally:
    def __init__(self) -> None:
        self.claims: Counter[int] = Counter()
        self.writes: Counter[int] = Counter()
        self.seconds: defaultdict[str, float] = defaultdict(float)
        self.on = False


def _wrap_group_commits(tally: Tally) -> Callable[[], None]:
    """Count every GroupCommit batch made from now on; returns the undo."""
    original = _batch.GroupCommit.__init__

    def init(self: Any, run_batch: Callable[[Sequence[Any]], Awaitable[Any]], **kw: Any) -> None:
        async def counted(items: Sequence[Any]) -> Any:
            started = time.perf_counter()
            try:
                return await run_batch(items)
            finally:
                if tally.on:
                    tally.writes[len(items)] += 1
                    tally.seconds["grouped writes"] += time.perf_counter() - started

        original(self, counted, **kw)

    _batch.GroupCommit.__init__ = init  # type: ignore[method-assign]

    def undo() -> None:
        _batch.GroupCommit.__init__ = original  # type: ignore[method-assign]

    return undo


def _wrap_claims(store: Store, tally: Tally) -> None:
    claim = store.claim

    async def counted(*args: Any, **kw: Any) -> Any:
        started = time.perf_counter()
        answer = await claim(*args, **kw)
        if tally.on:
            tally.claims[len(answer.calls)] += 1
            tally.seconds["claims"] += time.perf_counter() - started
        return answer

    store.claim = counted  # type: ignore[method-assign]


def _histogram(counts: Counter[int]) -> str:
    total = sum(counts.values())
    if not total:
        return "none"
    calls = sum(size * n for size, n in counts.items())
    ones = counts.get(1, 0)
    shown = ", ".join(f"{size}: {n}" for size, n in sorted(counts.items()))
    return f"{total} statements for {calls} calls ({ones} of one call); by size {{{shown}}}"


def main(argv: Sequence[str] | None = None) -> None:
    parser = one_run_parser(
        "python -m benchmarks.batch_sizes", delivery="at-least-once", n=20_000, limit=50
    )
    args = parser.parse_args(argv)
    delivery = delivery_of(args)
    tally = Tally()
    undo = _wrap_group_commits(tally)

    async def run() -> float:
        done = Done(args.n)
        cls = counting_call(done, max_concurrent=args.limit)
        async with open_store(args.store, StoreConfig(dsn=args.dsn)) as store:
            await _prefill(store, cls, args.n)
            _wrap_claims(store, tally)
            tally.on = True
            return await run_until_done(store, cls, done, args.limit, delivery)

    try:
        elapsed = trio.run(run)
    finally:
        undo()
    print(f"{args.store}, {args.delivery}: {args.n / elapsed:,.0f} calls/s ({elapsed:.2f} s)")
    print(f"claims: {_histogram(tally.claims)}")
    print(f"grouped writes: {_histogram(tally.writes)}")
    print(
        "seconds waiting: "
        + ", ".join(f"{k} {v:.3f}" for k, v in tally.seconds.items())
        + f"; load average {os.getloadavg()[0]:.2f}"
    )


if __name__ == "__main__":
    main()

"""Lateness workload, the other process: schedule calls due over the next seconds.

``python -m benchmarks._producer sqlite PATH`` or ``... postgres SCHEMA --dsn DSN``.
All calls go in one ``schedule_many`` (one store round trip), due at evenly spaced
times from now + lead to now + lead + spread; then the process exits.
"""

from __future__ import annotations

import argparse
from datetime import UTC, datetime, timedelta

import trio

from benchmarks._calls import Placeholder
from trio_futurecalls import Store, open_sqlite_store, schedule_many


async def produce(store: Store, count: int, spread: float, lead: float) -> None:
    # A producer needs no scheduler: schedule_many through the store alone.
    now = datetime.now(UTC)
    requests: list[tuple[type[Placeholder], object, datetime]] = [
        (Placeholder, None, now + timedelta(seconds=lead + spread * i / count))
        for i in range(count)
    ]
    await schedule_many(store, requests)


async def main(args: argparse.Namespace) -> None:
    if args.store == "sqlite":
        async with open_sqlite_store(args.where, recheck_interval=None) as sqlite_store:
            await produce(sqlite_store, args.count, args.spread, args.lead)
    else:
        from trio_futurecalls.stores.postgres import open_postgres_store

        async with open_postgres_store(args.dsn, schema=args.where) as pg_store:
            await produce(pg_store, args.count, args.spread, args.lead)


def parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks._producer")
    parser.add_argument("store", choices=["sqlite", "postgres"])
    parser.add_argument("where", help="SQLite file, or PostgreSQL schema")
    parser.add_argument("--dsn", default="")
    parser.add_argument("--count", type=int, default=300)
    parser.add_argument("--spread", type=float, default=5.0)
    parser.add_argument("--lead", type=float, default=0.5)
    return parser.parse_args()


if __name__ == "__main__":
    arguments = parse()
    trio.run(main, arguments)

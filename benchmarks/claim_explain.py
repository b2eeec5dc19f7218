"""EXPLAIN (ANALYZE, BUFFERS) of the PostgreSQL claim over 1,000,000 future rows.

Not part of ``python -m benchmarks``: a proof that the claim statement reads a handful
of buffers whatever the number of pending rows not due yet. Run it from a checkout::

    python -m benchmarks.claim_explain --dsn postgresql://127.0.0.1:5432/test

It migrates a schema of its own (``bench_explain_<pid>``, dropped at the end) to the
checkout's latest version, or to ``--version`` with the claim from ``--queries``
(``git show 51d6b5d:trio_futurecalls/stores/sql/postgres/queries.sql > old.sql`` and
``--version 5 --queries old.sql`` measure the claim before priorities). For each
scenario it loads the rows, runs VACUUM ANALYZE, then EXPLAIN (ANALYZE, BUFFERS) of
``claim_delete`` five times, each in a transaction rolled back (the rows stay), and
prints the median execution time and the buffers the statement touched.

Scenarios: 1,000,000 future rows (due in a day to a year) plus 5 due rows per name,
over 1 name or 10 names, with priorities all 0 or a mix of three (-5, 0, 7; the
future rows hold every priority, so a walk in (priority, due_at) order would meet
them first). A claim for every name with 5 free slots each, limit 10. From schema
version 7 one more: 10 names, priorities all 0, plus WAITING_ROWS rows due an hour ago
that wait for a prerequisite (``waiting = 1``): a claim must not read them, however
many are due.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import statistics
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg

from trio_futurecalls.stores._sql import migrations, parse_queries, queries

FUTURE_ROWS = 1_000_000
DUE_PER_NAME = 5
RUNS = 5
WAITING_ROWS = 100_000

_BUFFERS = re.compile(r"Buffers: shared (?:hit=(\d+))?\s*(?:read=(\d+))?")


def _in_schema(sql: str, schema: str) -> str:
    return sql.replace("{schema}", '"' + schema + '"')


async def _load(
    conn: Any, schema: str, names: list[str], priorities: list[int], has_priority: bool
) -> None:
    await conn.execute(f'TRUNCATE "{schema}".calls')
    columns = "name, payload, due_at, scheduled_at" + (", priority" if has_priority else "")
    n_names, n_prio = len(names), len(priorities)
    listed = ",".join(map(str, priorities))
    priority_of = f"(ARRAY[{listed}])[1 + (g % {n_prio})]"
    future = (
        f'INSERT INTO "{schema}".calls ({columns}) '
        f"SELECT ($1::text[])[1 + (g % {n_names})], 'null', "
        "now() + interval '1 day' + (g % 525600) * interval '1 minute', now()"
        + (f", {priority_of}" if has_priority else "")
        + " FROM generate_series(1, $2) AS g"
    )
    await conn.execute(future, names, FUTURE_ROWS)
    due = (
        f'INSERT INTO "{schema}".calls ({columns}) '
        "SELECT n, 'null', now() - g * interval '1 second', now()"
        + (f", {priority_of}" if has_priority else "")
        + " FROM unnest($1::text[]) AS n, generate_series(1, $2) AS g"
    )
    await conn.execute(due, names, DUE_PER_NAME)
    await conn.execute(f'VACUUM ANALYZE "{schema}".calls')


async def _add_waiting(conn: Any, schema: str, names: list[str]) -> None:
    """WAITING_ROWS due rows that wait for a prerequisite, due before every other row."""
    await conn.execute(
        f'INSERT INTO "{schema}".calls (name, payload, due_at, scheduled_at, waiting) '
        f"SELECT ($1::text[])[1 + (g % {len(names)})], 'null', "
        "now() - interval '1 hour' - g * interval '1 millisecond', now(), 1 "
        "FROM generate_series(1, $2) AS g",
        names,
        WAITING_ROWS,
    )
    await conn.execute(f'VACUUM ANALYZE "{schema}".calls')


def _claim_args(names: list[str], extra: int) -> list[Any]:
    """claim_delete's arguments: names, 5 slots each, now, limit 10; from schema version
    7 also the lease owner and expiry of started prerequisites (None: no lease)."""
    return [names, [5] * len(names), datetime.now(UTC), 10, *([None] * extra)]


async def _explain(
    conn: Any, sql: str, names: list[str], extra: int
) -> tuple[float, int, int, int]:
    """(median ms, median shared hit, read, claimed rows) over RUNS rolled-back runs."""
    times, hits, reads, rows = [], [], [], 0
    for _ in range(RUNS):
        tr = conn.transaction()
        await tr.start()
        try:
            plan = await conn.fetch(
                "EXPLAIN (ANALYZE, BUFFERS, FORMAT TEXT) " + sql,
                *_claim_args(names, extra),
            )
        finally:
            await tr.rollback()
        lines = [r[0] for r in plan]
        (total,) = [
            float(line.split(":")[1].split()[0]) for line in lines if "Execution Time" in line
        ]
        # The first "Buffers:" line is the top node's: everything the statement touched.
        match = next(m for m in map(_BUFFERS.search, lines) if m)
        times.append(total)
        hits.append(int(match.group(1) or 0))
        reads.append(int(match.group(2) or 0))
        top = lines[0]
        rows = int(re.search(r"actual time=\S+ rows=(\d+)", top).group(1))  # type: ignore[union-attr]
    return (
        statistics.median(times),
        int(statistics.median(hits)),
        int(statistics.median(reads)),
        rows,
    )


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dsn", default="postgresql://127.0.0.1:5432/test")
    parser.add_argument("--version", type=int, default=len(migrations("postgres")))
    parser.add_argument("--queries", type=Path, help="queries.sql to take the claim from")
    parser.add_argument("--show-plan", action="store_true", help="print one full plan each")
    parser.add_argument(
        "--jit", action="store_true", help="leave the server's JIT on (the store turns it off)"
    )
    args = parser.parse_args()
    named = (
        queries("postgres")
        if args.queries is None
        else parse_queries(args.queries.read_text(), str(args.queries))
    )
    schema = f"bench_explain_{os.getpid()}"
    claim = _in_schema(named["claim_delete"], schema)
    has_priority = args.version >= 6
    extra = 2 if "$6" in claim else 0  # the claim's parameters beyond the first four
    # jit off, as the store's pool has it (see stores/postgres/_open.py).
    jit = "on" if args.jit else "off"
    conn = await asyncpg.connect(args.dsn, server_settings={"application_name": schema, "jit": jit})
    try:
        await conn.execute(f'CREATE SCHEMA "{schema}"')
        for migration in migrations("postgres")[: args.version]:
            await conn.execute(_in_schema(migration.sql, schema))
        print(f"schema version {args.version}; {FUTURE_ROWS} future rows, {RUNS} runs each")
        print(f"{'scenario':<44} {'ms (median)':>11} {'hit':>6} {'read':>5} {'claimed':>8}")
        scenarios = [(n, p, False) for n in (1, 10) for p in ([0], [-5, 0, 7])]
        if args.version >= 7:
            scenarios.append((10, [0], True))
        for n_names, priorities, waiting in scenarios:
            names = [f"bench.n{i}" for i in range(n_names)]
            if len(priorities) > 1 and not has_priority:
                continue
            await _load(conn, schema, names, priorities, has_priority)
            if waiting:
                await _add_waiting(conn, schema, names)
            ms, hit, read, rows = await _explain(conn, claim, names, extra)
            label = f"{n_names} name(s), priorities {priorities}" + (
                f" + {WAITING_ROWS} waiting" if waiting else ""
            )
            print(f"{label:<44} {ms:>11.3f} {hit:>6} {read:>5} {rows:>8}")
            if args.show_plan:
                tr = conn.transaction()
                await tr.start()
                plan = await conn.fetch(
                    "EXPLAIN (ANALYZE, BUFFERS) " + claim,
                    *_claim_args(names, extra),
                )
                await tr.rollback()
                print("\n".join(r[0] for r in plan))
    finally:
        await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        await conn.close()


if __name__ == "__main__":
    asyncio.run(main())

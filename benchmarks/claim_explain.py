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

``--plans generic`` (or ``custom``, or ``both``) measures the claim as a prepared
statement, the way the store runs it: ``PREPARE`` under ``SET plan_cache_mode =
force_generic_plan`` (the setting of the store's claims connection) or
``force_custom_plan``, then ``EXPLAIN (ANALYZE, BUFFERS) EXECUTE`` with the arguments
as literals. The default (``param``) is ``EXPLAIN`` with bound parameters, which the
server plans for their values, as a custom plan. ``--shapes`` adds data shapes where a
plan made without the values could go wrong: fewer due rows than free slots, nothing
due with 100 free slots, 200 names, one name with 100,000 due rows next to a name with
free slots, and 50 priorities in use.
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
import attrs

from trio_futurecalls.stores._sql import migrations, parse_queries, queries

FUTURE_ROWS = 1_000_000
DUE_PER_NAME = 5
RUNS = 5
WAITING_ROWS = 100_000

_BUFFERS = re.compile(r"Buffers: shared (?:hit=(\d+))?\s*(?:read=(\d+))?")


def _in_schema(sql: str, schema: str) -> str:
    return sql.replace("{schema}", '"' + schema + '"')


@attrs.frozen
class Shape:
    """One scenario: rows loaded and the claim's free slots per name."""

    n_names: int
    priorities: tuple[int, ...]
    waiting: bool = False
    due_per_name: int = DUE_PER_NAME
    slots: int = 5
    #: Extra due rows of the first name only (one name with a backlog).
    backlog: int = 0
    label: str = ""

    def describe(self) -> str:
        if self.label:
            return self.label
        prio = list(self.priorities)
        return f"{self.n_names} name(s), priorities {prio}" + (
            f" + {WAITING_ROWS} waiting" if self.waiting else ""
        )


async def _load(
    conn: Any,
    schema: str,
    names: list[str],
    priorities: list[int],
    has_priority: bool,
    due_per_name: int = DUE_PER_NAME,
    backlog: int = 0,
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
    if due_per_name:
        await conn.execute(due, names, due_per_name)
    if backlog:
        await conn.execute(due, names[:1], backlog)
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


def _claim_args(names: list[str], extra: int, slots: int = 5) -> list[Any]:
    """claim_delete's arguments: names, ``slots`` free slots each, now, limit 10 (or
    every slot of every name, if more); from schema version 7 also the lease owner and
    expiry of started prerequisites (None: no lease)."""
    limit = max(10, slots * len(names)) if slots > 5 else 10
    return [names, [slots] * len(names), datetime.now(UTC), limit, *([None] * extra)]


def _literal(value: Any) -> str:
    """``value`` as an SQL literal (the benchmark's own values: names, ints, times)."""
    if value is None:
        return "NULL"
    if isinstance(value, list):
        if all(isinstance(v, int) for v in value):
            return "ARRAY[" + ",".join(map(str, value)) + "]::integer[]"
        return "ARRAY[" + ",".join(_literal(v) for v in value) + "]::text[]"
    if isinstance(value, datetime):
        return f"'{value.isoformat()}'::timestamptz"
    if isinstance(value, int):
        return str(value)
    return "'" + str(value).replace("'", "''") + "'"


async def _prepare(conn: Any, sql: str, plans: str) -> None:
    """PREPARE the claim as ``fc_claim`` under ``plan_cache_mode`` for ``plans``."""
    await conn.execute(f"SET plan_cache_mode = force_{plans}_plan")
    await _deallocate(conn)
    await conn.execute("PREPARE fc_claim AS " + sql)


async def _deallocate(conn: Any) -> None:
    """Drop ``fc_claim`` (only it: asyncpg's own prepared statements stay)."""
    if await conn.fetchval("SELECT 1 FROM pg_prepared_statements WHERE name = 'fc_claim'"):
        await conn.execute("DEALLOCATE fc_claim")


async def _plan_lines(conn: Any, sql: str, plans: str, args: list[Any]) -> list[str]:
    """The lines of ``EXPLAIN (ANALYZE, BUFFERS)`` of one claim, in a transaction that
    is rolled back: with bound parameters (``plans="param"``), or of the statement
    prepared with ``generic`` / ``custom`` plans (:func:`_prepare`)."""
    tr = conn.transaction()
    await tr.start()
    try:
        if plans == "param":
            plan = await conn.fetch("EXPLAIN (ANALYZE, BUFFERS) " + sql, *args)
        else:
            listed = ", ".join(map(_literal, args))
            plan = await conn.fetch(f"EXPLAIN (ANALYZE, BUFFERS) EXECUTE fc_claim({listed})")
    finally:
        await tr.rollback()
    return [r[0] for r in plan]


async def _explain(
    conn: Any, sql: str, names: list[str], extra: int, plans: str = "param", slots: int = 5
) -> tuple[float, int, int, int]:
    """(median ms, median shared hit, read, claimed rows) over RUNS rolled-back runs.

    ``plans``: ``param`` (EXPLAIN with bound parameters), or ``generic`` / ``custom``
    (EXPLAIN EXECUTE of the statement prepared so, see :func:`_prepare`)."""
    times, hits, reads, rows = [], [], [], 0
    if plans != "param":
        await _prepare(conn, sql, plans)
    for _ in range(RUNS):
        lines = await _plan_lines(conn, sql, plans, _claim_args(names, extra, slots))
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
    if plans != "param":
        await _deallocate(conn)
        await conn.execute("RESET plan_cache_mode")
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
    parser.add_argument(
        "--plans",
        choices=("param", "generic", "custom", "both"),
        default="param",
        help="EXPLAIN with parameters (param), or EXECUTE of a prepared statement with "
        "generic or custom plans (both: one line each)",
    )
    parser.add_argument("--shapes", action="store_true", help="add the extra data shapes")
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
        modes = ["generic", "custom"] if args.plans == "both" else [args.plans]
        print(
            f"{'scenario':<52} {'plans':>7} {'ms (median)':>11} {'hit':>6} {'read':>5} "
            f"{'claimed':>8}"
        )
        shapes = [Shape(n, tuple(p)) for n in (1, 10) for p in ([0], [-5, 0, 7])]
        if args.version >= 7:
            shapes.append(Shape(10, (0,), waiting=True))
        if args.shapes:
            shapes += [
                Shape(1, (0,), due_per_name=1, label="1 name, 1 due row, 5 slots"),
                Shape(10, (0,), due_per_name=0, slots=100, label="10 names, none due, 100 slots"),
                Shape(200, (0,), label="200 names, 5 due each, 5 slots"),
                Shape(2, (0,), backlog=100_000, label="2 names, one with 100,000 more due"),
                Shape(1, tuple(range(-25, 25)), due_per_name=1, label="1 name, 50 priorities"),
            ]
        for shape in shapes:
            names = [f"bench.n{i}" for i in range(shape.n_names)]
            priorities = list(shape.priorities)
            if len(priorities) > 1 and not has_priority:
                continue
            await _load(
                conn, schema, names, priorities, has_priority, shape.due_per_name, shape.backlog
            )
            if shape.waiting:
                await _add_waiting(conn, schema, names)
            for mode in modes:
                ms, hit, read, rows = await _explain(conn, claim, names, extra, mode, shape.slots)
                print(
                    f"{shape.describe():<52} {mode:>7} {ms:>11.3f} {hit:>6} {read:>5} {rows:>8}",
                    flush=True,
                )
            if args.show_plan:
                for mode in modes:
                    if mode != "param":
                        await _prepare(conn, claim, mode)
                    plan_args = _claim_args(names, extra, shape.slots)
                    print(f"-- {mode}")
                    print("\n".join(await _plan_lines(conn, claim, mode, plan_args)))
                    if mode != "param":
                        await _deallocate(conn)
                        await conn.execute("RESET plan_cache_mode")
    finally:
        await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        await conn.close()


if __name__ == "__main__":
    asyncio.run(main())

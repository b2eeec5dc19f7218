"""PostgreSQL ceiling: drain due rows with bare asyncpg on plain asyncio (no Trio).

One ``DELETE ... RETURNING`` per batch, on one connection, running nothing: how fast
the database can hand out calls in batches of that size. ``--shape simple`` picks the
rows with a plain ``IN (SELECT ... FOR UPDATE SKIP LOCKED)``; ``--shape lateral`` is the
shape of the store's own claim (a ``LATERAL`` pick per name, then the delete). On a
freshly filled table without statistics the planner may run the simple shape as a
bitmap scan plus sort, which is slower; the caller keeps the faster shape.
Prints ``{"elapsed": s, "claimed": n}`` as JSON. Imports neither Trio nor
trio_futurecalls.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import time
from datetime import UTC, datetime

import asyncpg

SIMPLE = """
DELETE FROM "{schema}".calls
WHERE id IN (
    SELECT id FROM "{schema}".calls
    WHERE name = $1 AND due_at <= $2
    ORDER BY due_at, id
    LIMIT $3
    FOR UPDATE SKIP LOCKED
)
RETURNING id, name, payload, due_at, identifier, scheduled_at
"""

#: The earliest due rows of name $1 (due by $2, at most $3), one LATERAL pick as the
#: store's claim makes per name (benchmarks/_least.py claims with it too).
PICKED = """
WITH picked AS (
    SELECT c.id
    FROM (SELECT $1::text AS name) AS q
    CROSS JOIN LATERAL (
        SELECT calls.id, calls.due_at FROM "{schema}".calls AS calls
        WHERE calls.name = q.name AND calls.due_at <= $2
        ORDER BY calls.due_at, calls.id
        LIMIT $3
        FOR UPDATE SKIP LOCKED
    ) AS c
)
"""

LATERAL = (
    PICKED
    + """DELETE FROM "{schema}".calls
WHERE id IN (SELECT id FROM picked)
RETURNING id, name, payload, due_at, identifier, scheduled_at
"""
)


async def main(args: argparse.Namespace) -> dict[str, float]:
    if not re.fullmatch(r"[a-z_][a-z0-9_]*", args.schema):
        raise SystemExit(f"bad schema name {args.schema!r}")
    sql = (SIMPLE if args.shape == "simple" else LATERAL).format(schema=args.schema)
    conn: asyncpg.Connection = await asyncpg.connect(args.dsn, timeout=10)
    try:
        await conn.fetch(sql, args.name, datetime(1970, 1, 1, tzinfo=UTC), 1)  # prepare
        claimed = 0
        started = time.perf_counter()
        while True:
            rows = await conn.fetch(sql, args.name, datetime.now(UTC), args.batch)
            if not rows:
                break
            claimed += len(rows)
        elapsed = time.perf_counter() - started
    finally:
        await conn.close()
    return {"elapsed": elapsed, "claimed": claimed}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m benchmarks._pg_ceiling")
    parser.add_argument("--dsn", required=True)
    parser.add_argument("--schema", required=True)
    parser.add_argument("--name", required=True)
    parser.add_argument("--batch", type=int, default=50)
    parser.add_argument("--shape", choices=["simple", "lateral"], default="lateral")
    print(json.dumps(asyncio.run(main(parser.parse_args()))))

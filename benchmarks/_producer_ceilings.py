"""PostgreSQL ceilings of the producer workload: bare asyncpg, no trio_futurecalls.

* :func:`insert_loop_rate`: one ``INSERT ... RETURNING id`` per call, one at a time,
  through trio-asyncio (the bridge a Trio producer pays), autocommit: the round trip
  plus commit that one caller scheduling one call at a time cannot beat.
* :func:`multi_row_rate`: ``INSERT ... SELECT FROM unnest(...) RETURNING id`` of a
  whole batch per statement, on plain asyncio: the server's own multi-row insert.

Both write the store's table (a schema its migrations made: same indexes) with the
columns the store fills, so the only difference with ``schedule_call`` /
``schedule_many`` is the library. With ``async_commit``, their connection runs with
``synchronous_commit = off``: the ceilings of ``schedule_commit="asynchronous"``.
"""

from __future__ import annotations

import asyncio
import re
import time
from datetime import UTC, datetime, timedelta
from typing import Any, Final

import asyncpg
import trio
import trio_asyncio
from trio_asyncio import aio_as_trio

_ONE: Final = """
INSERT INTO "{schema}".calls (name, payload, due_at, identifier, scheduled_at, priority)
VALUES ($1, $2, $3, $4, $5, $6)
RETURNING id
"""

_MANY: Final = """
INSERT INTO "{schema}".calls (name, payload, due_at, identifier, scheduled_at, priority)
SELECT * FROM unnest($1::text[], $2::text[], $3::timestamptz[], $4::text[],
                     $5::timestamptz[], $6::integer[])
RETURNING id
"""


def _sql(template: str, schema: str) -> str:
    if not re.fullmatch(r"[a-z_][a-z0-9_]*", schema):
        raise ValueError(f"bad schema name {schema!r}")
    return template.format(schema=schema)


def _settings(async_commit: bool) -> dict[str, str]:
    return {"synchronous_commit": "off"} if async_commit else {}


def insert_loop_rate(dsn: str, schema: str, name: str, n: int, async_commit: bool) -> float:
    """Rows per second of ``n`` one-row inserts, one at a time, via trio-asyncio."""
    sql = _sql(_ONE, schema)

    async def main() -> float:
        async with trio_asyncio.open_loop():
            conn: Any = await aio_as_trio(asyncpg.connect)(
                dsn, timeout=10, server_settings=_settings(async_commit)
            )
            try:
                fetchval = aio_as_trio(conn.fetchval)
                now = datetime.now(UTC)
                due = now + timedelta(hours=1)
                await fetchval(sql, name, "null", due, None, now, 0)  # prepare
                started = time.perf_counter()
                for _ in range(n):
                    now = datetime.now(UTC)
                    await fetchval(sql, name, "null", now + timedelta(hours=1), None, now, 0)
                elapsed = time.perf_counter() - started
            finally:
                await aio_as_trio(conn.close)()
        return elapsed

    return n / trio.run(main)


def multi_row_rate(
    dsn: str, schema: str, name: str, n: int, batch: int, async_commit: bool
) -> float:
    """Rows per second of ``n`` rows inserted ``batch`` per statement, plain asyncio."""
    sql = _sql(_MANY, schema)

    async def main() -> float:
        conn = await asyncpg.connect(dsn, timeout=10, server_settings=_settings(async_commit))
        try:
            now = datetime.now(UTC)
            await conn.fetch(sql, [name], ["null"], [now], [None], [now], [0])  # prepare
            started = time.perf_counter()
            for start in range(0, n, batch):
                count = min(batch, n - start)
                now = datetime.now(UTC)
                due = now + timedelta(hours=1)
                await conn.fetch(
                    sql,
                    [name] * count,
                    ["null"] * count,
                    [due] * count,
                    [None] * count,
                    [now] * count,
                    [0] * count,
                )
            elapsed = time.perf_counter() - started
        finally:
            await conn.close()
        return elapsed

    # asyncio.run refuses to run under Trio: a plain thread of its own.
    return n / _in_thread(lambda: asyncio.run(main()))


def _in_thread(fn: Any) -> float:
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(1) as pool:
        result: float = pool.submit(fn).result()
    return result

"""The least programs: feasibility bounds for issue 16's ratio targets, measured in the
same run as the targets.

Issue 16 judges the worker by ratios to bare Trio loops that touch no store: the
PostgreSQL drain against the spawn ceiling (>= 0.5) and sleepy calls' efficiency against
the bare loop's (>= 0.95). Whether such a ratio can be met at all depends on what a
claim costs on this machine, so each is measured next to the least program: the
smallest program that does the library's durable work and nothing more. It is Trio
plus the store's driver (PostgreSQL: asyncpg through trio-asyncio; SQLite: sqlite3 in
``trio.to_thread.run_sync``, with the store's own connection settings: WAL,
``synchronous=FULL``), on the store's table, indexes and rows (the caller fills a fresh
schema or file with the library). One claim at a time takes the earliest due rows for
the free slots, and each row it took starts as a task under a global and a class
``trio.CapacityLimiter`` (as in :func:`benchmarks._workloads.trio_ceiling`):

* at-most-once, the claim is one committed ``DELETE ... RETURNING`` (``FOR UPDATE SKIP
  LOCKED`` on PostgreSQL);
* at-least-once, it is one committed ``UPDATE ... RETURNING`` that leases the rows as
  the store does (``lease_owner``, ``due_at`` set to the lease's expiry, ``attempts``
  counted so that a call run again after a crash knows its attempt); a call's slot
  frees as it ends, and one writer task deletes the rows of the calls that ended
  meanwhile in one committed statement (the library's grouped completions), on a
  second connection on PostgreSQL (on SQLite, taking turns with the claims: see
  :func:`_sqlite`).

Nothing else: no payload decoding, priorities, dependencies, cluster-wide limits,
pauses, wake-ups, statistics, sessions or error handling. A target the least program
misses is out of reach on this machine for any program doing that work; one it meets
is feasible, and the gap is the library's.

The clock runs as :func:`benchmarks._workloads.run_until_done` runs it for the
library: from when the store is ready (here: connections open, statements prepared)
until the last call ends. The writer's last deletes are awaited after that, and
checked: every row must be gone.
"""

from __future__ import annotations

import json
import re
import sqlite3
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Final

import asyncpg
import attrs
import trio
import trio_asyncio
from trio_asyncio import aio_as_trio

from benchmarks._calls import NOOP_NAME
from benchmarks._pg_ceiling import PICKED
from trio_futurecalls import DEFAULT_LEASE_DURATION
from trio_futurecalls.stores.sqlite._connection import connect as sqlite_connect

#: The lease owner the at-least-once programs write.
OWNER: Final = "least-program"
#: SQLite's busy timeout, as the store's default (only one connection writes at a time).
SQLITE_BUSY_TIMEOUT: Final = 5.0

#: One claim: up to ``k`` due rows, committed; returns their ids.
Claim = Callable[[int], Awaitable[list[int]]]
#: The rows of ended calls, deleted in one committed statement; returns how many went.
Delete = Callable[[list[int]], Awaitable[int]]


@attrs.frozen(kw_only=True)
class Work:
    """What a least program runs: ``n`` rows named :data:`NOOP_NAME`, all due, at most
    ``limit`` at once (global and class limit); each call sleeps ``sleep`` seconds (0:
    a no-op)."""

    n: int
    limit: int
    sleep: float = 0.0
    at_least_once: bool = False


def postgres(dsn: str, schema: str, work: Work) -> float:
    """Run ``work`` on the filled table of ``schema``; seconds until the last call ended."""

    async def main() -> float:
        async with _postgres(dsn, schema, work.at_least_once) as (claim, delete):
            return await _Run(work, claim, delete).run()

    return trio.run(main)


def sqlite(path: Path, work: Work) -> float:
    """Run ``work`` on the filled SQLite file at ``path``; seconds until the last call
    ended."""

    async def main() -> float:
        async with _sqlite(path, work.at_least_once) as (claim, delete):
            return await _Run(work, claim, delete).run()

    return trio.run(main)


# -- the Trio side ----------------------------------------------------------------------


@attrs.define(eq=False)
class _Run:
    """One claimer, one task per claimed row, and (at-least-once) one writer."""

    work: Work
    claim: Claim
    delete: Delete | None
    global_limiter: trio.CapacityLimiter = attrs.field(init=False)
    class_limiter: trio.CapacityLimiter = attrs.field(init=False)
    ended: int = 0
    all_ended: trio.Event = attrs.Factory(trio.Event)
    #: Set by a call that frees a slot; the claimer waits for it when none is free.
    slot_freed: trio.Event = attrs.Factory(trio.Event)
    #: At-least-once: the ids of the calls that ended since the writer's last delete.
    unwritten: list[int] = attrs.Factory(list)
    call_ended: trio.Event = attrs.Factory(trio.Event)

    def __attrs_post_init__(self) -> None:
        self.global_limiter = trio.CapacityLimiter(self.work.limit)
        self.class_limiter = trio.CapacityLimiter(self.work.limit)

    async def run(self) -> float:
        with trio.fail_after(60 + self.work.n / 500):
            started = time.perf_counter()
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._claimer, nursery)
                if self.delete is not None:
                    nursery.start_soon(self._writer, self.delete)
                await self.all_ended.wait()
                elapsed = time.perf_counter() - started
        return elapsed

    async def _claimer(self, nursery: trio.Nursery) -> None:
        claimed = 0
        while True:
            free = int(
                min(self.global_limiter.available_tokens, self.class_limiter.available_tokens)
            )
            if free == 0:
                self.slot_freed = trio.Event()
                await self.slot_freed.wait()
                continue
            ids = await self.claim(free)
            for row_id in ids:
                token = object()
                self.global_limiter.acquire_on_behalf_of_nowait(token)
                self.class_limiter.acquire_on_behalf_of_nowait(token)
                nursery.start_soon(self._call, row_id, token)
            claimed += len(ids)
            if len(ids) < free:
                break  # nothing more is due: nothing else writes to the table
        if claimed != self.work.n:
            raise RuntimeError(f"the least program claimed {claimed} rows of {self.work.n}")

    async def _call(self, row_id: int, token: object) -> None:
        if self.work.sleep:
            await trio.sleep(self.work.sleep)
        self.class_limiter.release_on_behalf_of(token)
        self.global_limiter.release_on_behalf_of(token)
        self.slot_freed.set()
        if self.delete is not None:
            self.unwritten.append(row_id)
            self.call_ended.set()
        self.ended += 1
        if self.ended == self.work.n:
            self.all_ended.set()

    async def _writer(self, delete: Delete) -> None:
        deleted = 0
        while deleted < self.work.n:
            if not self.unwritten:
                self.call_ended = trio.Event()
                await self.call_ended.wait()
                continue
            ids, self.unwritten = self.unwritten, []
            gone = await delete(ids)
            if gone != len(ids):
                raise RuntimeError(f"the least program deleted {gone} rows of {len(ids)}")
            deleted += gone


# -- PostgreSQL -------------------------------------------------------------------------

#: The earliest due rows of a name, as the store's claim picks them (a LATERAL pick per
#: name; see benchmarks/_pg_ceiling.py for why not a plain ``IN (SELECT ...)``).
_PG_PICKED: Final = PICKED
_PG_DELETE_CLAIM: Final = (
    _PG_PICKED
    + """DELETE FROM "{schema}".calls WHERE id IN (SELECT id FROM picked)
RETURNING id, name, payload
"""
)
_PG_LEASE_CLAIM: Final = (
    _PG_PICKED
    + """UPDATE "{schema}".calls SET lease_owner = $4, due_at = $5, attempts = attempts + 1
WHERE id IN (SELECT id FROM picked)
RETURNING id, name, payload
"""
)
_PG_DELETE_ENDED: Final = """
DELETE FROM "{schema}".calls WHERE id = ANY($1::bigint[]) AND lease_owner = $2
"""


def _pg_sql(template: str, schema: str) -> str:
    if not re.fullmatch(r"[a-z_][a-z0-9_]*", schema):
        raise ValueError(f"bad schema name {schema!r}")
    return template.format(schema=schema)


@asynccontextmanager
async def _postgres(
    dsn: str, schema: str, at_least_once: bool
) -> AsyncIterator[tuple[Claim, Delete | None]]:
    """The claim (and at-least-once, the delete, on a second connection), prepared."""
    claim_sql = _pg_sql(_PG_LEASE_CLAIM if at_least_once else _PG_DELETE_CLAIM, schema)
    delete_sql = _pg_sql(_PG_DELETE_ENDED, schema)
    lease = timedelta(seconds=DEFAULT_LEASE_DURATION)
    async with trio_asyncio.open_loop():
        connections: list[Any] = []
        try:
            claims: Any = await aio_as_trio(asyncpg.connect)(dsn, timeout=10)
            connections.append(claims)
            fetch = aio_as_trio(claims.fetch)

            async def claim(k: int) -> list[int]:
                now = datetime.now(UTC)
                if at_least_once:
                    rows = await fetch(claim_sql, NOOP_NAME, now, k, OWNER, now + lease)
                else:
                    rows = await fetch(claim_sql, NOOP_NAME, now, k)
                return [row[0] for row in rows]

            await claim(0)  # prepares the statement
            if not at_least_once:
                yield claim, None
                return
            deletes: Any = await aio_as_trio(asyncpg.connect)(dsn, timeout=10)
            connections.append(deletes)
            execute = aio_as_trio(deletes.execute)

            async def delete(ids: list[int]) -> int:
                status: str = await execute(delete_sql, ids, OWNER)
                return int(status.rsplit(maxsplit=1)[-1])  # "DELETE <count>"

            await delete([])  # prepares the statement
            yield claim, delete
        finally:
            for conn in connections:
                await aio_as_trio(conn.close)()


# -- SQLite -----------------------------------------------------------------------------

_SQLITE_PICKED: Final = """
SELECT id FROM futurecalls_calls
WHERE name = ?1 AND due_at <= ?2
ORDER BY due_at, id
LIMIT ?3
"""
_SQLITE_DELETE_CLAIM: Final = f"""
DELETE FROM futurecalls_calls WHERE id IN ({_SQLITE_PICKED})
RETURNING id, name, payload
"""
_SQLITE_LEASE_CLAIM: Final = f"""
UPDATE futurecalls_calls SET lease_owner = ?4, due_at = ?5, attempts = attempts + 1
WHERE id IN ({_SQLITE_PICKED})
RETURNING id, name, payload
"""
_SQLITE_DELETE_ENDED: Final = """
DELETE FROM futurecalls_calls
WHERE id IN (SELECT value FROM json_each(?1)) AND lease_owner = ?2
"""


def _write(conn: sqlite3.Connection, sql: str, params: tuple[object, ...]) -> tuple[list[Any], int]:
    """One write transaction: ``BEGIN IMMEDIATE`` (as the store: a deferred one that
    reads first may fail with SQLITE_BUSY instead of waiting), the statement, ``COMMIT``.
    Returns the rows it returned and the count of rows it changed."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        cursor = conn.execute(sql, params)
        rows = cursor.fetchall()
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")
    return rows, cursor.rowcount


@asynccontextmanager
async def _sqlite(path: Path, at_least_once: bool) -> AsyncIterator[tuple[Claim, Delete | None]]:
    """The claim (and at-least-once, the delete) on one connection, as the store has it.

    SQLite runs one write at a time, so a second connection would only wait for the
    first's lock in SQLite's busy handler, which sleeps (1, 2, 5 ms...) instead of
    being told when the lock frees; the claim and the delete take turns in this process
    instead, the claim first (10 alternated at-least-once sleepy runs each, medians:
    efficiency 0.884 on two connections, 0.893 taking turns; 0.896 taking turns in any
    order, 0.908 claim first).
    """
    lease_us = round(DEFAULT_LEASE_DURATION * 1_000_000)
    conn = await trio.to_thread.run_sync(sqlite_connect, str(path), "FULL", SQLITE_BUSY_TIMEOUT)
    turns = trio.CapacityLimiter(1)  # one thread at a time uses the connection
    try:

        def claim_sync(k: int) -> list[int]:
            now_us = time.time_ns() // 1_000
            if at_least_once:
                params: tuple[object, ...] = (NOOP_NAME, now_us, k, OWNER, now_us + lease_us)
                rows, _ = _write(conn, _SQLITE_LEASE_CLAIM, params)
            else:
                rows, _ = _write(conn, _SQLITE_DELETE_CLAIM, (NOOP_NAME, now_us, k))
            return [row[0] for row in rows]

        def delete_sync(ids: list[int]) -> int:
            _, count = _write(conn, _SQLITE_DELETE_ENDED, (json.dumps(ids), OWNER))
            return count

        async def claim(k: int) -> list[int]:
            return await trio.to_thread.run_sync(claim_sync, k, limiter=turns)

        async def delete(ids: list[int]) -> int:
            # A claim woken with this delete (by the same calls' ends) takes its turn
            # first: freed slots wait for the claim, nothing waits for the delete.
            await trio.lowlevel.checkpoint()
            return await trio.to_thread.run_sync(delete_sync, ids, limiter=turns)

        await claim(0)  # compiles the statements
        if at_least_once:
            await delete([])
        yield claim, (delete if at_least_once else None)
    finally:
        conn.close()

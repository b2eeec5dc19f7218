"""The workers registry across processes on PostgreSQL: a killed worker disappears.

Real processes and time: each worker process registers and heartbeats with a short
``worker_timeout``. No assertion is timed: state is polled with a bounded wait.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path

import pytest
import trio
from pg_support import admin_fetch, open_test_postgres_store, pg_dsn, require_postgres

from trio_futurecalls.stores.postgres import PostgresStore

WORKER = str(Path(__file__).parent / "workers_proc.py")
TIMEOUT = 1.0
#: Bound of every wait (far above what each takes: a few timeouts).
WAIT = 30.0


@pytest.fixture(autouse=True)
def _needs_postgres() -> None:
    require_postgres()


async def eventually(check: Callable[[], Awaitable[bool]], seconds: float = WAIT) -> None:
    """Poll ``check`` (state another process changes) until it holds."""
    with trio.fail_after(seconds):
        while not await check():  # noqa: ASYNC110 (nothing signals it)
            await trio.sleep(0.05)


@asynccontextmanager
async def worker_process(store: PostgresStore) -> AsyncIterator[tuple[trio.Process, str]]:
    """A worker process on ``store``'s schema, and its worker id; killed on exit."""
    proc = await trio.lowlevel.open_process(
        [sys.executable, WORKER, pg_dsn(), store.schema, str(TIMEOUT)],
        stdout=subprocess.PIPE,
    )
    try:
        assert proc.stdout is not None
        line = b""
        with trio.fail_after(WAIT):
            while not line.endswith(b"\n"):
                chunk = await proc.stdout.receive_some(1)
                assert chunk, "the worker process ended before it started"
                line += chunk
        yield proc, json.loads(line)["id"]
    finally:
        if proc.returncode is None:
            proc.kill()
        with trio.CancelScope(shield=True):
            await proc.wait()
            if proc.stdout is not None:
                await proc.stdout.aclose()


async def live_ids(store: PostgresStore) -> list[str]:
    return [w.id for w in await store.workers(datetime.now(UTC))]


async def row_ids(store: PostgresStore) -> set[str]:
    return {r[0] for r in await admin_fetch(f'SELECT id FROM "{store.schema}".workers')}


async def test_a_sigkilled_worker_disappears_after_its_timeout() -> None:
    async with (
        open_test_postgres_store() as store,
        worker_process(store) as (victim, victim_id),
        worker_process(store) as (survivor, survivor_id),
    ):
        # Both registered before they said they run.
        assert set(await live_ids(store)) == {victim_id, survivor_id}
        (before,) = [w for w in await store.workers(datetime.now(UTC)) if w.id == survivor_id]
        victim.send_signal(signal.SIGKILL)
        await victim.wait()

        async def only_survivor_listed() -> bool:
            return await live_ids(store) == [survivor_id]

        await eventually(only_survivor_listed)

        # The survivor's heartbeat deletes the dead row (nobody else touches it).
        async def dead_row_deleted() -> bool:
            return await row_ids(store) == {survivor_id}

        await eventually(dead_row_deleted)
        (after,) = await store.workers(datetime.now(UTC))
        assert after.heartbeat_at > before.heartbeat_at
        assert after.host == before.host
        assert after.pid == survivor.pid

        # A graceful stop deregisters at once: the row goes, not just expires.
        survivor.send_signal(signal.SIGTERM)
        with trio.fail_after(WAIT):
            assert await survivor.wait() == 0
        assert await row_ids(store) == set()

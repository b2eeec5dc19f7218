"""Crash tests: worker processes killed with SIGKILL at random moments, restarted.

at_least_once: every call completes at least once. at_most_once: no call ever runs
twice, and the calls lost are at most those running when the workers were killed.
Executions are counted from a log file the calls append to, outside the workers.
These run in real time (real processes), on SQLite here and on PostgreSQL in
tests/postgres/test_postgres.py (through `run_crash_test`).
"""

from __future__ import annotations

import random
import signal
import subprocess
import sys
from collections import Counter
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest
import trio

from trio_futurecalls import NewCall, Store

TESTS = Path(__file__).parent
WORKERS = 2
PER_WORKER_LIMIT = 16  # crash_worker.py's global limit


async def run_crash_test(
    url: str,
    store: Store,
    remaining: Callable[[], Awaitable[int]],
    delivery: str,
    log_path: Path,
    *,
    calls: int = 3000,
    kills: int = 6,
    seed: int = 7,
) -> None:
    """Schedule ``calls``, run workers, kill one at random ``kills`` times, then check.

    ``remaining()`` counts rows still in the store (pending or leased).
    """
    rng = random.Random(seed)
    now = trio_now()
    await store.schedule(
        [NewCall(name="work", payload=str(i), due_at=now, scheduled_at=now) for i in range(calls)]
    )
    procs: list[trio.Process] = []

    async def start_worker() -> trio.Process:
        proc = await trio.lowlevel.open_process(
            [sys.executable, str(TESTS / "crash_worker.py"), url, delivery, str(log_path)],
            stdout=subprocess.PIPE,
        )
        try:
            assert proc.stdout is not None
            with trio.fail_after(30):
                line = await proc.stdout.receive_some()
            assert b"ready" in line, line
        except BaseException:
            # Never leave a worker behind (it would run forever after the test).
            proc.kill()
            with trio.CancelScope(shield=True):
                await proc.wait()
            raise
        return proc

    killed = 0
    try:
        for _ in range(WORKERS):
            procs.append(await start_worker())
        for _ in range(kills):
            await trio.sleep(rng.uniform(0.05, 0.4))
            victim = procs.pop(rng.randrange(len(procs)))
            victim.send_signal(signal.SIGKILL)
            await victim.wait()
            killed += 1
            procs.append(await start_worker())
        with trio.fail_after(120):
            while await remaining():  # noqa: ASYNC110 - the workers are other processes
                await trio.sleep(0.1)
    finally:
        for proc in procs:
            proc.send_signal(signal.SIGKILL)
            await proc.wait()
            if proc.stdout is not None:
                await proc.stdout.aclose()

    started: Counter[int] = Counter()
    done: Counter[int] = Counter()
    text = await trio.Path(log_path).read_text()
    for line in text.splitlines():
        kind, _, value = line.partition(" ")
        (started if kind == "start" else done)[int(value)] += 1
    everything = set(range(calls))
    if delivery == "at_least_once":
        # None lost: every call completed at least once (some more, after a kill).
        assert set(done) == everything
        assert (await store.dead_letters()) == []
    else:
        # None ran twice; lost ones were running (or just claimed) at a kill.
        assert max(started.values()) == 1
        lost = everything - set(done)
        assert len(lost) <= killed * PER_WORKER_LIMIT, (len(lost), killed)
        assert set(started) <= everything


def trio_now() -> datetime:
    return datetime.now(UTC)


@pytest.mark.parametrize("delivery", ["at_least_once", "at_most_once"])
async def test_sqlite_workers_killed_at_random(tmp_path: Path, delivery: str) -> None:
    import sqlite3

    from trio_futurecalls import open_sqlite_store

    path = tmp_path / "crash.sqlite3"

    async def remaining() -> int:
        with sqlite3.connect(path) as conn:
            (count,) = conn.execute("SELECT count(*) FROM futurecalls_calls").fetchone()
        return int(count)

    async with open_sqlite_store(path) as store:
        await run_crash_test(
            f"sqlite:///{path}", store, remaining, delivery, tmp_path / "executions.log"
        )


@pytest.mark.parametrize("delivery", ["at_least_once", "at_most_once"])
async def test_postgres_workers_killed_at_random(tmp_path: Path, delivery: str) -> None:
    from pg_support import admin_fetch, open_test_postgres_store, pg_dsn

    async with open_test_postgres_store() as store:
        schema = store.schema

        async def remaining() -> int:
            rows = await admin_fetch(f'SELECT count(*) FROM "{schema}".calls')
            return int(rows[0][0])

        await run_crash_test(
            f"{pg_dsn()}#{schema}", store, remaining, delivery, tmp_path / "executions.log"
        )

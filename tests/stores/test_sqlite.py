"""SQLite-specific behaviour: durability across restarts, schema, processes, sessions.

These use real time (real files and threads), with short delays.
"""

from __future__ import annotations

import signal
import sqlite3
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest
import trio
from sqlite_proc import Remember

from trio_futurecalls import (
    InvalidArgumentError,
    SQLiteSession,
    StoreClosedError,
    StoreError,
    StoreUnavailableError,
    open_scheduler,
    open_sqlite_store,
    schedule_call,
)
from trio_futurecalls.stores._sql import migrations

TESTS = Path(__file__).parent


def remembered(path: Path) -> list[str]:
    with sqlite3.connect(path) as conn:
        try:
            return [row[0] for row in conn.execute("SELECT value FROM remembered ORDER BY rowid")]
        except sqlite3.OperationalError:
            return []


async def wait_for(predicate: object, limit: float = 10.0) -> None:
    """Wait (real time) until ``predicate()`` holds; the state lives in another process."""
    assert callable(predicate)
    with trio.fail_after(limit):
        while not predicate():  # noqa: ASYNC110 - nothing in this process can signal it
            await trio.sleep(0.02)


async def test_call_scheduled_before_a_restart_runs_after_it(tmp_path: Path) -> None:
    path = tmp_path / "calls.sqlite3"
    async with open_sqlite_store(path) as store:
        await schedule_call(store, Remember, "early", delay=0.2)
        await schedule_call(store, Remember, "later", delay=3600)
    # "Restart": a new store and scheduler on the same file.
    async with (
        open_sqlite_store(path) as store,
        open_scheduler(store, [Remember]) as scheduler,
    ):
        await wait_for(lambda: remembered(path) == ["early"])
        (left,) = await scheduler.pending()
        assert left.payload == '"later"'


async def test_call_from_a_killed_process_runs_in_the_next(tmp_path: Path) -> None:
    path = tmp_path / "calls.sqlite3"
    proc = await trio.lowlevel.open_process(
        [sys.executable, str(TESTS / "sqlite_proc.py"), str(path), "survivor", "0.3"],
        stdout=subprocess.PIPE,
    )
    try:
        assert proc.stdout is not None
        with trio.fail_after(20):
            line = await proc.stdout.receive_some()
        assert line.strip() == b"scheduled"
    finally:
        proc.send_signal(signal.SIGKILL)
        await proc.wait()
        if proc.stdout is not None:
            await proc.stdout.aclose()
    async with open_sqlite_store(path) as store, open_scheduler(store, [Remember]):
        await wait_for(lambda: remembered(path) == ["survivor"])


async def test_calls_scheduled_by_another_process_are_noticed(tmp_path: Path) -> None:
    path = tmp_path / "calls.sqlite3"
    async with (
        open_sqlite_store(path, recheck_interval=0.1) as store,
        open_scheduler(store, [Remember]),
    ):
        proc = await trio.run_process(
            [sys.executable, "-c", _SCHEDULE_ONCE, str(path)], capture_stdout=True
        )
        assert proc.returncode == 0
        await wait_for(lambda: remembered(path) == ["from-elsewhere"])


_SCHEDULE_ONCE = f"""
import sys, trio
sys.path.insert(0, {str(TESTS)!r})
from sqlite_proc import Remember
from trio_futurecalls import open_sqlite_store, schedule_call
async def main():
    async with open_sqlite_store(sys.argv[1]) as store:
        await schedule_call(store, Remember, "from-elsewhere")
trio.run(main)
"""


async def test_schema_is_versioned_and_migrating_twice_is_harmless(tmp_path: Path) -> None:
    path = tmp_path / "calls.sqlite3"
    async with open_sqlite_store(path) as store:
        await schedule_call(store, Remember, "kept", delay=3600)
    async with open_sqlite_store(path) as store:
        assert len(await store.pending_counts(datetime.now(UTC))) == 1
    with sqlite3.connect(path) as conn:
        (version,) = conn.execute("PRAGMA user_version").fetchone()
        (mode,) = conn.execute("PRAGMA journal_mode").fetchone()
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert version == len(migrations("sqlite"))
    assert mode == "wal"
    assert {"futurecalls_calls", "futurecalls_dead_letters"} <= tables


async def test_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "calls.sqlite3"
    with sqlite3.connect(path) as conn:
        conn.execute("PRAGMA user_version=999")
    with pytest.raises(StoreError, match="newer"):
        async with open_sqlite_store(path):
            pass


async def test_unopenable_path_is_a_store_error(tmp_path: Path) -> None:
    with pytest.raises(StoreError):
        async with open_sqlite_store(tmp_path / "missing-dir" / "calls.sqlite3"):
            pass


async def test_locked_or_unopenable_database_is_unavailable(tmp_path: Path) -> None:
    with pytest.raises(StoreUnavailableError) as unopenable:
        async with open_sqlite_store(tmp_path / "missing-dir" / "calls.sqlite3"):
            pass
    assert isinstance(unopenable.value.__cause__, sqlite3.Error)
    assert unopenable.value.__cause__.sqlite_errorname == "SQLITE_CANTOPEN"
    path = tmp_path / "calls.sqlite3"
    async with open_sqlite_store(path, busy_timeout=0.05) as store:
        holder = sqlite3.connect(path, isolation_level=None)
        try:
            holder.execute("BEGIN EXCLUSIVE")
            with pytest.raises(StoreUnavailableError) as locked:
                await schedule_call(store, Remember, "x")
        finally:
            holder.close()
        assert isinstance(locked.value.__cause__, sqlite3.Error)
        assert locked.value.__cause__.sqlite_errorname == "SQLITE_BUSY"
        await schedule_call(store, Remember, "y")  # free again


async def test_closed_store_and_ended_session_refuse_work(tmp_path: Path) -> None:
    path = tmp_path / "calls.sqlite3"
    async with open_sqlite_store(path) as store:
        pass
    with pytest.raises(StoreClosedError):
        await schedule_call(store, Remember, "x")
    session = SQLiteSession(str(path), "NORMAL", 1.0)
    assert await session.fetchval("SELECT 1 + 1") == 2
    await session.aclose()
    with pytest.raises(StoreClosedError):
        await session.execute("SELECT 1")


async def test_session_errors_are_translated(tmp_path: Path) -> None:
    session = SQLiteSession(str(tmp_path / "s.sqlite3"), "NORMAL", 1.0)
    try:
        with pytest.raises(StoreError, match="syntax"):
            await session.execute("SELEKT 1")
        await session.execute("CREATE TABLE IF NOT EXISTS t (x)")
        await session.executemany("INSERT INTO t VALUES (?)", [(1,), (2,)])
        assert await session.fetchval("SELECT sum(x) FROM t") == 3
    finally:
        await session.aclose()


async def test_dispatcher_does_not_poll_sqlite_and_errors_pass_through(tmp_path: Path) -> None:
    path = tmp_path / "calls.sqlite3"
    with pytest.raises(KeyError, match="mine"):  # noqa: PT012 - the block is the test
        async with open_sqlite_store(path) as store:
            # Other processes' changes are watched by the store (PRAGMA data_version),
            # so the engine needs no fallback re-check.
            assert store.recheck_interval is None
            raise KeyError("mine")


async def test_another_connections_commit_wakes_listeners(tmp_path: Path) -> None:
    path = tmp_path / "calls.sqlite3"
    woken = trio.Event()
    async with open_sqlite_store(path, recheck_interval=0.05) as store:
        store.add_listener(lambda due: woken.set())
        await trio.sleep(0.2)
        assert not woken.is_set()  # nothing changed: no wake-up
        with sqlite3.connect(path) as conn:
            conn.execute("CREATE TABLE IF NOT EXISTS unrelated (x)")
        with trio.fail_after(5):
            await woken.wait()


async def test_a_path_with_a_nul_is_an_invalid_argument(tmp_path: Path) -> None:
    with pytest.raises(InvalidArgumentError, match="NUL"):
        async with open_sqlite_store(f"{tmp_path}/calls\x00.sqlite3"):
            pass


async def test_processes_opening_a_new_file_at_once_all_open_it(tmp_path: Path) -> None:
    # Each opener switches the new file to WAL; SQLite answered one of them "database
    # is locked" at once, without waiting (about 1 round in 10 with 3 openers; found
    # by the recurring example, whose two workers start together).

    async def open_once(path: Path) -> None:
        async with open_sqlite_store(path):
            pass

    for n in range(60):
        async with trio.open_nursery() as nursery:
            for _ in range(3):
                nursery.start_soon(open_once, tmp_path / f"new-{n}.sqlite3")

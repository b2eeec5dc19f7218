"""Recurring schedules across real worker processes: each tick runs once, never twice,
never skipped, also when a worker is SIGKILLed (mid-fire, mid-run) and restarted.

Three workers (one with its clock 0.4 s ahead, one 0.4 s behind) open a scheduler on
one store and register the same two schedules at start-up (recurring_worker.py). The
test kills one worker just after a tick boundary, when fires happen, restarts it,
then kills every worker and checks, per schedule, from outside the workers:

* no double fire: each tick has exactly one call id (the same call id executed twice
  is an at-least-once redelivery after the kill, which is allowed);
* no skipped tick: the ticks that were run, plus those whose runs are still in the
  store (pending, or leased by a killed worker), are exactly the schedule's ticks
  from its registration up to the last tick the store says it fired, which also
  counts exactly that many runs and no skipped tick (misfire="all");
* every worker survived the other's kill.
"""

from __future__ import annotations

import signal
import sqlite3
import subprocess
import sys
from collections import defaultdict
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import trio
from pg_support import in_ci, postgres_problem
from recurring_worker import CRON_KEY, EVERY, EVERY_KEY

from trio_futurecalls import PendingQuery, RecurringInfo, Store

TESTS = Path(__file__).parent

#: Clock offsets of the three workers (seconds): skew between hosts.
OFFSETS = (0.0, 0.4, -0.4)
SECOND = timedelta(seconds=1)
#: Seconds the workers run before the kill, and again after the restart: about 15 s
#: in all, as issue 11 asks (the two stores run at once, so the test takes ~15 s).
HALF_RUN = 7.0

#: (schedule key, tick, call id) of each execution.
Execution = tuple[str, datetime, int]


async def start_worker(url: str, record: str, offset: float) -> trio.Process:
    proc = await trio.lowlevel.open_process(
        [sys.executable, str(TESTS / "recurring_worker.py"), url, record, str(offset)],
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


async def kill(proc: trio.Process) -> None:
    proc.send_signal(signal.SIGKILL)
    await proc.wait()
    if proc.stdout is not None:
        await proc.stdout.aclose()


async def until_just_after_a_tick() -> None:
    """Sleep until 20 ms past the next whole second: the workers are firing then."""
    now = datetime.now(UTC)
    await trio.sleep(1.02 - now.microsecond / 1e6)


async def run_workers(
    url: str, record: str, executions: Callable[[], Awaitable[list[Execution]]]
) -> list[Execution]:
    """Run the workers, kill and restart the first in the middle, return the
    executions recorded."""
    procs: list[trio.Process | None] = [None] * len(OFFSETS)

    async def start(i: int) -> None:
        procs[i] = await start_worker(url, record, OFFSETS[i])

    try:
        async with trio.open_nursery() as nursery:
            for i in range(len(OFFSETS)):
                nursery.start_soon(start, i)
        await trio.sleep(HALF_RUN)
        await until_just_after_a_tick()
        victim = procs[0]
        assert victim is not None
        await kill(victim)
        procs[0] = None
        await start(0)
        await trio.sleep(HALF_RUN)
        assert all(p is not None and p.poll() is None for p in procs), "a worker died"
    finally:
        with trio.CancelScope(shield=True):
            for proc in procs:
                if proc is not None:
                    await kill(proc)
    return await executions()


def expected_ticks(info: RecurringInfo) -> list[datetime]:
    """The schedule's ticks from its registration to its last fired tick, computed
    here (not by the library): every half second from the anchor, or every whole
    second from the registration on."""
    assert info.last_tick is not None, f"{info.key} never fired"
    if info.every is not None:
        assert info.every == EVERY
        tick = info.anchor
        step = timedelta(seconds=EVERY)
    else:
        tick = info.created_at.replace(microsecond=0)
        if tick < info.created_at:
            tick += SECOND
        step = SECOND
    found = []
    while tick <= info.last_tick:
        found.append(tick)
        tick += step
    return found


async def check_ticks(store: Store, executions: list[Execution]) -> None:
    schedules = {info.key: info for info in await store.recurring_schedules()}
    assert set(schedules) == {EVERY_KEY, CRON_KEY}
    in_store = await store.pending(PendingQuery(now=datetime.now(UTC) + timedelta(days=1)))
    ids_of: dict[str, dict[datetime, set[int]]] = defaultdict(lambda: defaultdict(set))
    ran: dict[str, set[int]] = defaultdict(set)
    runs = 0
    for key, tick, call_id in executions:
        ids_of[key][tick].add(call_id)
        ran[key].add(call_id)
        runs += 1
    for call in in_store:
        assert call.recurring_key is not None, call
        assert call.tick_at is not None, call
        ids_of[call.recurring_key][call.tick_at].add(call.id)
    for key, info in schedules.items():
        ticks = ids_of[key]
        doubles = {t: ids for t, ids in ticks.items() if len(ids) > 1}
        assert not doubles, f"{key}: ticks fired more than once: {doubles}"
        expected = expected_ticks(info)
        assert sorted(ticks) == expected, (
            f"{key}: missing {sorted(set(expected) - set(ticks))}, "
            f"unexpected {sorted(set(ticks) - set(expected))}"
        )
        assert info.runs == len(expected), (key, info.runs, len(expected))
        assert (info.skipped_misfire, info.skipped_overlap) == (0, 0), info
        # Enough ticks to mean something (the test runs for several seconds).
        assert len(expected) >= 3, (key, expected)
    redelivered = runs - sum(len(ids) for ids in ran.values())
    print(f"{runs} executions, {redelivered} redelivered, {len(in_store)} runs left in the store")


async def sqlite_scenario(tmp_path: Path) -> None:
    from trio_futurecalls import open_sqlite_store

    path = tmp_path / "recurring.sqlite3"
    log = tmp_path / "executions.log"
    log.touch()

    async def executions() -> list[Execution]:
        found = []
        for line in log.read_text().splitlines():
            key, tick, call_id, _pid = line.split()
            found.append((key, datetime.fromisoformat(tick), int(call_id)))
        return found

    async with open_sqlite_store(path) as store:  # migrated before the workers race
        found = await run_workers(f"sqlite:///{path}", str(log), executions)
        await check_ticks(store, found)
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)


async def postgres_scenario() -> None:
    from pg_support import admin_execute, admin_fetch, open_test_postgres_store, pg_dsn

    async with open_test_postgres_store() as store:
        schema = store.schema
        table = f'"{schema}".executions'
        # No UNIQUE constraint: every execution is kept, so duplicates are visible.
        await admin_execute(
            f"CREATE TABLE {table} (key text NOT NULL, tick_at timestamptz NOT NULL, "
            "call_id bigint NOT NULL, pid integer NOT NULL)"
        )

        async def executions() -> list[Execution]:
            rows = await admin_fetch(f"SELECT key, tick_at, call_id FROM {table}")
            return [(r[0], r[1], r[2]) for r in rows]

        found = await run_workers(f"{pg_dsn()}#{schema}", "executions", executions)
        await check_ticks(store, found)


async def test_recurring_ticks_run_once_across_killed_workers(tmp_path: Path) -> None:
    """SQLite and PostgreSQL at once (3 workers each): half the wall time."""
    postgres = in_ci() or postgres_problem() is None
    async with trio.open_nursery() as nursery:
        nursery.start_soon(sqlite_scenario, tmp_path)
        if postgres:
            nursery.start_soon(postgres_scenario)
    if not postgres:
        pytest.skip(f"SQLite passed; PostgreSQL not run: {postgres_problem()}")

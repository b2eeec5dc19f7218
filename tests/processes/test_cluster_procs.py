"""Cluster-wide limits across real worker processes (tests/processes/cluster_worker.py).

On PostgreSQL (4 workers) and SQLite (3 workers on one file):
- ``cluster.slow`` (cluster_max_concurrent = 3, 50 ms calls): the most calls running
  at once, computed from the start/end times the calls log, is exactly 3: never more,
  and the limit is used. Also with one worker SIGKILLed mid-drain (at-least-once, so
  its calls run again): never more than 3, every call ran, and the dead worker's slots
  came back (3 run at once again after the kill).
- ``cluster.rated`` (20 per second): no window of one second holds more than 20
  starts; all ran.

Real processes in real time. No timing is asserted (the drain rate is measured by
``python -m benchmarks --workload cluster``); waits are bounded.
"""

from __future__ import annotations

import signal
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path

import trio
from worker_procs import worker_processes

from trio_futurecalls import NewCall, Store

TESTS = Path(__file__).parent
LIMIT = 3  # cluster_worker.py's Slow.cluster_max_concurrent
RATE = 20  # cluster_worker.py's Rated.rate_limit, per second


def workers(
    url: str, log_path: Path, count: int, delivery: str, worker_timeout: float = 30.0
) -> AbstractAsyncContextManager[list[trio.Process]]:
    argv = [
        sys.executable,
        str(TESTS / "cluster_worker.py"),
        url,
        str(log_path),
        delivery,
        str(worker_timeout),
    ]
    return worker_processes(argv, count)


def read_log(log_path: Path) -> list[tuple[str, int, float]]:
    events = []
    for line in log_path.read_text().splitlines():
        kind, call_id, at = line.split()
        events.append((kind, int(call_id), float(at)))
    return events


def most_at_once(intervals: list[tuple[float, float]]) -> tuple[int, list[float]]:
    """The most intervals open at one time, and the times that many were open."""
    points = sorted([(end, -1) for _, end in intervals] + [(start, 1) for start, _ in intervals])
    running = best = 0
    when: list[float] = []
    for at, step in points:  # at equal times an end comes first (-1 < 1)
        running += step
        if running > best:
            best, when = running, [at]
        elif running == best:
            when.append(at)
    return best, when


async def schedule(store: Store, name: str, count: int) -> list[int]:
    now = datetime.now(UTC)
    return await store.schedule(
        [NewCall(name=name, payload=str(i), due_at=now, scheduled_at=now) for i in range(count)]
    )


async def wait_for(done: Callable[[], Awaitable[bool]], seconds: float) -> None:
    with trio.fail_after(seconds):
        while not await done():  # noqa: ASYNC110 - the workers are other processes
            await trio.sleep(0.1)


async def check_cluster_limit(
    url: str, store: Store, tmp_path: Path, processes: int, calls: int
) -> None:
    log_path = tmp_path / "calls.log"
    ids = await schedule(store, "cluster.slow", calls)

    async def finished() -> bool:
        ends = (
            {i for kind, i, _ in read_log(log_path) if kind == "end"}
            if log_path.exists()
            else set()
        )
        return ends >= set(ids)

    async with workers(url, log_path, processes, "at_most_once"):
        await wait_for(finished, 120)
    events = read_log(log_path)
    starts = {i: at for kind, i, at in events if kind == "start"}
    ends = {i: at for kind, i, at in events if kind == "end"}
    assert set(starts) == set(ids)  # every call ran, once (at-most-once: no repeats)
    assert len([e for e in events if e[0] == "start"]) == calls
    peak, _ = most_at_once([(starts[i], ends[i]) for i in ids])
    assert peak == LIMIT


async def check_killed_worker(
    url: str,
    store: Store,
    tmp_path: Path,
    processes: int,
    calls: int,
    holders: Callable[[], Awaitable[set[str]]],
) -> None:
    """``holders()``: the ids of the workers holding a token of cluster.slow now."""
    log_path = tmp_path / "calls.log"
    ids = await schedule(store, "cluster.slow", calls)

    def ended() -> set[int]:
        if not log_path.exists():
            return set()
        return {i for kind, i, _ in read_log(log_path) if kind == "end"}

    async def some_ran() -> bool:
        return len(ended()) >= calls // 5

    async def finished() -> bool:
        return ended() >= set(ids)

    async with workers(url, log_path, processes, "at_least_once", worker_timeout=2.0) as procs:
        await wait_for(some_ran, 120)
        # Kill a worker while it holds a slot (found through the store: its tokens'
        # holder, and the registered worker's pid).
        by_pid = {p.pid: p for p in procs}
        victim = None
        with trio.fail_after(60):
            while victim is None:
                held = await holders()
                live = await store.workers(datetime.now(UTC))
                pids = [w.pid for w in live if w.id in held and w.pid in by_pid]
                if pids:
                    victim = by_pid[pids[0]]
                else:
                    await trio.sleep(0.005)
        victim.send_signal(signal.SIGKILL)
        await victim.wait()
        killed_at = datetime.now(UTC).timestamp()
        await wait_for(finished, 120)
    events = read_log(log_path)
    # Runs: each end with the latest start of that call before it (the log does not
    # say which worker wrote a line; a call runs again only once its first run died);
    # a run that never ended (killed) ends at the kill.
    runs: list[tuple[float, float]] = []
    open_runs: dict[int, list[float]] = {}
    for kind, call_id, at in sorted(events, key=lambda e: e[2]):
        if kind == "start":
            open_runs.setdefault(call_id, []).append(at)
        elif kind == "end" and open_runs.get(call_id):
            runs.append((open_runs[call_id].pop(), at))
    for starts in open_runs.values():
        runs.extend((start, max(start, killed_at)) for start in starts)
    assert {i for kind, i, _ in events if kind == "end"} == set(ids)
    peak, _ = most_at_once(runs)
    assert peak <= LIMIT
    # The dead worker's slots came back: after the kill, 3 ran at once again.
    after = [(max(s, killed_at), e) for s, e in runs if e > killed_at]
    peak_after, when = most_at_once(after)
    assert peak_after == LIMIT, peak_after
    print(f"slots back to {LIMIT} at once {min(when) - killed_at:.2f} s after the kill")


async def check_rate_limit(
    url: str, store: Store, tmp_path: Path, processes: int, calls: int
) -> None:
    log_path = tmp_path / "calls.log"
    ids = await schedule(store, "cluster.rated", calls)

    async def finished() -> bool:
        if not log_path.exists():
            return False
        return {i for kind, i, _ in read_log(log_path)} >= set(ids)

    async with workers(url, log_path, processes, "at_most_once"):
        await wait_for(finished, 120)
    starts = sorted(at for kind, _, at in read_log(log_path) if kind == "claimed")
    assert len(starts) == calls
    # Any window of 1 s: starts[i] .. starts[i + RATE] must span at least 1 s.
    for first, last in zip(starts, starts[RATE:], strict=False):
        assert last - first >= 1.0, (first, last)


# -- SQLite: 3 processes on one file ------------------------------------------------


@asynccontextmanager
async def sqlite_store(tmp_path: Path) -> AsyncIterator[tuple[str, Store]]:
    from trio_futurecalls import open_sqlite_store

    path = tmp_path / "cluster.sqlite3"
    async with open_sqlite_store(path) as store:
        yield f"sqlite:///{path}", store


async def test_sqlite_cluster_limit_is_never_exceeded(tmp_path: Path) -> None:
    async with sqlite_store(tmp_path) as (url, store):
        await check_cluster_limit(url, store, tmp_path, 3, 300)


async def test_sqlite_killed_worker_gives_its_slots_back(tmp_path: Path) -> None:
    import sqlite3

    async with sqlite_store(tmp_path) as (url, store):
        path = url.removeprefix("sqlite:///")

        async def holders() -> set[str]:
            with sqlite3.connect(path) as conn:
                rows = conn.execute(
                    "SELECT owner FROM futurecalls_cluster_tokens WHERE owner IS NOT NULL"
                ).fetchall()
            return {r[0] for r in rows}

        await check_killed_worker(url, store, tmp_path, 3, 300, holders)


async def test_sqlite_rate_limit_holds_across_processes(tmp_path: Path) -> None:
    async with sqlite_store(tmp_path) as (url, store):
        await check_rate_limit(url, store, tmp_path, 3, 100)


# -- PostgreSQL: 4 processes on one schema --------------------------------------------


@asynccontextmanager
async def postgres_store() -> AsyncIterator[tuple[str, Store]]:
    from pg_support import open_test_postgres_store, pg_dsn

    async with open_test_postgres_store() as store:
        yield f"{pg_dsn()}#{store.schema}", store


async def test_postgres_cluster_limit_is_never_exceeded(tmp_path: Path) -> None:
    async with postgres_store() as (url, store):
        await check_cluster_limit(url, store, tmp_path, 4, 600)


async def test_postgres_killed_worker_gives_its_slots_back(tmp_path: Path) -> None:
    from pg_support import admin_fetch

    async with postgres_store() as (url, store):
        schema = url.rpartition("#")[2]

        async def holders() -> set[str]:
            rows = await admin_fetch(
                f'SELECT owner FROM "{schema}".cluster_tokens WHERE owner IS NOT NULL'
            )
            return {r[0] for r in rows}

        await check_killed_worker(url, store, tmp_path, 4, 600, holders)


async def test_postgres_rate_limit_holds_across_processes(tmp_path: Path) -> None:
    async with postgres_store() as (url, store):
        await check_rate_limit(url, store, tmp_path, 3, 100)

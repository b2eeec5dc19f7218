"""Stores watch for other processes' changes only while someone listens.

SQLite's ``data_version`` watcher (and PostgreSQL's LISTEN connection, in
``tests/postgres/test_pg_producers.py``) runs from the first wake-up listener to the
last: a store opened only to schedule reads nothing and hears nothing.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import trio
from trio.testing import wait_all_tasks_blocked

from trio_futurecalls import FutureCall, open_scheduler, open_sqlite_store
from trio_futurecalls.stores._on_demand import OnDemand


class Noop(FutureCall):
    name = "noop"

    async def invoke(self, session: object, payload: object) -> None:
        pass


async def test_on_demand_runs_one_watcher_while_wanted() -> None:
    runs: list[str] = []

    async def watch() -> None:
        runs.append("start")
        try:
            await trio.sleep_forever()
        finally:
            runs.append("stop")

    demand = OnDemand(watch, "test-watch")
    demand.want()  # before attach: starts on attach
    async with trio.open_nursery() as nursery:
        demand.attach(nursery)
        await wait_all_tasks_blocked()
        assert runs == ["start"]
        demand.want()  # already running: nothing new
        await wait_all_tasks_blocked()
        assert (runs, demand.starts) == (["start"], 1)
        # Stopped and wanted again before the run ended: the next starts after it.
        demand.unwant()
        demand.want()
        await wait_all_tasks_blocked()
        assert (runs, demand.starts) == (["start", "stop", "start"], 2)
        demand.unwant()
        await wait_all_tasks_blocked()
        assert runs[-1] == "stop"
        assert not demand.wanted
        demand.detach()
        demand.want()  # detached (the store is closing): starts nothing
        await wait_all_tasks_blocked()
        assert demand.starts == 2


async def test_a_watcher_that_ends_on_its_own_is_not_restarted() -> None:
    async def ends() -> None:
        pass

    demand = OnDemand(ends, "test-watch")
    async with trio.open_nursery() as nursery:
        demand.attach(nursery)
        demand.want()
        await wait_all_tasks_blocked()
    assert demand.starts == 1


async def test_a_sqlite_store_that_only_schedules_watches_nothing(tmp_path: Path) -> None:
    path = tmp_path / "calls.sqlite3"
    async with open_sqlite_store(path, recheck_interval=0.05) as store:
        assert store._watch is not None
        assert not await store.wait_listening()  # no listener: no watcher
        async with open_scheduler(store, [Noop], execute=False) as scheduler:
            await scheduler.schedule(Noop, None)
            await wait_all_tasks_blocked()
            assert store._watch.starts == 0
        # A scheduler that runs calls starts it, and it has read data_version before
        # the scheduler starts: another process's commit from then on wakes it.
        async with open_scheduler(store, [Noop]):
            assert store._watch.starts == 1
            assert store._watch.wanted
            assert await store.wait_listening()
        assert not store._watch.wanted
        # Wanted again: a new run, which hears another connection's commit.
        woken = trio.Event()
        remove = store.add_listener(lambda due: woken.set())
        assert await store.wait_listening()
        with sqlite3.connect(path) as conn:
            conn.execute("CREATE TABLE IF NOT EXISTS unrelated (x)")
        with trio.fail_after(5):
            await woken.wait()
        remove()
        assert store._watch.starts == 2


async def test_without_recheck_there_is_no_watcher(tmp_path: Path) -> None:
    async with open_sqlite_store(tmp_path / "calls.sqlite3", recheck_interval=None) as store:
        store.add_listener(lambda due: None)
        assert store._watch is None
        assert not await store.wait_listening()

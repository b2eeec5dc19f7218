"""Dependencies between calls on SQLite: migration 0007, the claim's index, rows another
program wrote in the new tables and columns, and two connections racing.

The behaviour every store shares is ``test_dependency_conformance.py``. Real files and
threads.
"""

from __future__ import annotations

import random
import sqlite3
from collections.abc import Iterator
from contextlib import closing, contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, ClassVar

import pytest
import trio

from trio_futurecalls import (
    Delivery,
    FutureCall,
    InvalidArgumentError,
    Lease,
    NewCall,
    PendingQuery,
    PrerequisiteError,
    QueueLength,
    open_scheduler,
    open_sqlite_store,
)
from trio_futurecalls._recurring import build_schedule
from trio_futurecalls.stores._sql import migrations, queries
from trio_futurecalls.stores.sqlite import SQLiteStore
from trio_futurecalls.stores.sqlite._connection import to_micros
from trio_futurecalls.stores.sqlite._migrate import statements

T0 = datetime(2030, 1, 1, tzinfo=UTC)
CLAIM_INDEX = "futurecalls_calls_name_priority_due"


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def new(name: str = "a", due: float = 0.0, **more: Any) -> NewCall:
    return NewCall(name=name, payload="null", due_at=at(due), scheduled_at=T0, **more)


def lease(*names: str, owner: str = "w1", until: float = 600) -> Lease:
    return Lease(owner=owner, expires_at=at(until), names=frozenset(names))


async def claimed(store: SQLiteStore, now: float = 10, lease: Lease | None = None) -> list[int]:
    claim = await store.claim(at(now), {"a": 100, "b": 100, "c": 100}, 100, lease)
    return [c.id for c in claim.calls]


@contextmanager
def raw_connection(path: Path, *, ignore_checks: bool = False) -> Iterator[sqlite3.Connection]:
    with closing(sqlite3.connect(path, isolation_level=None)) as conn:
        if ignore_checks:
            conn.execute("PRAGMA ignore_check_constraints=ON")
        yield conn


def edges(path: Path) -> list[tuple[int, int]]:
    with raw_connection(path) as conn:
        sql = "SELECT prerequisite_id, call_id FROM futurecalls_call_dependencies ORDER BY 1, 2"
        return [(p, c) for p, c in conn.execute(sql)]


def column(path: Path, name: str, call_id: int) -> object:
    with raw_connection(path) as conn:
        row = conn.execute(f"SELECT {name} FROM futurecalls_calls WHERE id = ?", (call_id,))
        return row.fetchone()[0]


# -- migration 0007 ------------------------------------------------------------------


def database_at(path: Path, version: int) -> sqlite3.Connection:
    """A database as the library left it at schema ``version``."""
    conn = sqlite3.connect(path, isolation_level=None)
    for migration in migrations("sqlite")[:version]:
        for statement in statements(migration.sql):
            conn.execute(statement)
    conn.execute(f"PRAGMA user_version={version:d}")
    return conn


async def test_migration_0007_keeps_the_calls_of_an_older_database(tmp_path: Path) -> None:
    path = tmp_path / "calls.sqlite3"
    past, future = to_micros(at(-60)), to_micros(at(3600))
    with closing(database_at(path, 6)) as conn:
        insert = (
            "INSERT INTO futurecalls_calls (name, payload, due_at, scheduled_at, priority, "
            "lease_owner) VALUES (?, 'null', ?, ?, ?, ?) RETURNING id"
        )
        due = conn.execute(insert, ("a", past, past, 5, None)).fetchone()[0]
        later = conn.execute(insert, ("a", future, past, 0, None)).fetchone()[0]
        running = conn.execute(insert, ("b", future, past, 0, "w0")).fetchone()[0]
    async with open_sqlite_store(path) as store:
        with raw_connection(path) as conn:
            assert conn.execute("PRAGMA user_version").fetchone() >= (7,)
            rows = conn.execute("SELECT id, waiting, dependents FROM futurecalls_calls")
            assert sorted(rows) == [(due, 0, 0), (later, 0, 0), (running, 0, 0)]
        # The old calls wait for nothing, and can be waited for.
        (dependent,) = await store.schedule([new("c", after=[later, running])])
        assert column(path, "dependents", later) == 1
        claim = await store.claim(at(10), {"a": 5, "c": 5}, 10)
        assert [c.id for c in claim.calls] == [due]
        assert claim.next_due == at(3600)
        assert not claim.calls[0].dependents
        counts = await store.pending_counts(at(10))
        assert counts["c"] == QueueLength(pending=1, due=0, waiting=1)
        assert await store.complete("w0", running)
        assert edges(path) == [(later, dependent)]


async def test_the_claim_reads_only_the_index_of_calls_that_wait_for_nothing(
    tmp_path: Path,
) -> None:
    path = tmp_path / "calls.sqlite3"
    async with open_sqlite_store(path):
        pass
    q = queries("sqlite")
    with raw_connection(path) as conn:
        (sql,) = conn.execute(
            "SELECT sql FROM sqlite_master WHERE name = ?", (CLAIM_INDEX,)
        ).fetchone()
        assert sql.endswith("WHERE waiting = 0")

        def plan(query: str, params: tuple[object, ...]) -> list[str]:
            return [row[3] for row in conn.execute("EXPLAIN QUERY PLAN " + q[query], params)]

        for query, params in [
            ("top_priority", ("a",)),
            ("next_priority", ("a", 0)),
            ("claim_candidates", ("a", 0, 0, 5)),
            ("next_due_of_name", ("a", "[]")),
        ]:
            steps = [s for s in plan(query, params) if "futurecalls_calls" in s]
            assert steps, query
            assert all(s.startswith("SEARCH") and CLAIM_INDEX in s for s in steps), (query, steps)


async def test_waiting_rows_stay_out_of_the_claims_index(tmp_path: Path) -> None:
    path = tmp_path / "calls.sqlite3"
    async with open_sqlite_store(path, synchronous="OFF") as store:
        (root,) = await store.schedule([new("a", due=3600)])
        await store.schedule([new("b", due=-i, after=[root]) for i in range(2000)])
        (ready,) = await store.schedule([new("b", due=50)])
        claim = await store.claim(at(10), {"b": 5}, 5)
        assert (claim.calls, claim.next_due) == ([], at(50))
        with raw_connection(path) as conn:
            in_index = conn.execute(
                f"SELECT id FROM futurecalls_calls INDEXED BY {CLAIM_INDEX} "
                "WHERE name = 'b' AND waiting = 0"
            ).fetchall()
        assert in_index == [(ready,)]  # the claim's index holds the ready row only


# -- rows another program wrote ------------------------------------------------------


async def test_a_waiting_count_with_no_edges_is_listed_and_can_be_cancelled(
    tmp_path: Path,
) -> None:
    path = tmp_path / "calls.sqlite3"
    async with open_sqlite_store(path) as store:
        (stuck,) = await store.schedule([new("a")])
        with raw_connection(path) as conn:
            conn.execute("UPDATE futurecalls_calls SET waiting = 3 WHERE id = ?", (stuck,))
        assert await claimed(store) == []
        (listed,) = await store.pending(PendingQuery())
        assert (listed.id, listed.waiting_for) == (stuck, ())
        assert (await store.pending_counts(at(10)))["a"] == QueueLength(pending=1, due=0, waiting=1)
        assert await store.cancel(stuck)
        assert await store.pending(PendingQuery()) == []
        assert await store.dead_letters() == []


async def test_a_count_out_of_step_with_the_edges_is_counted_again(tmp_path: Path) -> None:
    path = tmp_path / "calls.sqlite3"
    async with open_sqlite_store(path) as store:
        (root,) = await store.schedule([new("a")])
        (dependent,) = await store.schedule([new("b", after=[root])])
        with raw_connection(path) as conn:
            conn.execute("UPDATE futurecalls_calls SET waiting = 7 WHERE id = ?", (dependent,))
        assert await claimed(store, lease=lease("a")) == [root]
        assert await store.complete("w1", root)
        # The count is recomputed from the edges (none left): the dependent is due.
        assert await claimed(store) == [dependent]


async def test_an_edge_to_a_call_that_is_gone(tmp_path: Path) -> None:
    path = tmp_path / "calls.sqlite3"
    async with open_sqlite_store(path) as store:
        (dependent,) = await store.schedule([new("b")])
        with raw_connection(path) as conn:
            conn.execute(
                "INSERT INTO futurecalls_call_dependencies VALUES (?, ?)", (987654, dependent)
            )
            conn.execute("UPDATE futurecalls_calls SET waiting = 1 WHERE id = ?", (dependent,))
        (listed,) = await store.pending(PendingQuery())
        assert listed.waiting_for == (987654,)
        assert await claimed(store) == []
        # The edge does not make the call it names one to wait for.
        with pytest.raises(PrerequisiteError) as caught:
            await store.schedule([new("c", after=[987654])])
        assert not caught.value.failed
        # Telling the end of a call that is not recorded as running does nothing.
        assert await store.prerequisite_ended(987654, "boom", at(11)) == 0
        assert await store.cancel(dependent)
        assert edges(path) == []


async def test_values_past_the_constraints_neither_stop_nor_loop(tmp_path: Path) -> None:
    path = tmp_path / "calls.sqlite3"
    async with open_sqlite_store(path) as store:
        (root,) = await store.schedule([new("a")])
        left, right = await store.schedule([new("b", after=[root]), new("b", after=[root])])
        (flagged,) = await store.schedule([new("d")])
        (negative,) = await store.schedule([new("c")])
        with raw_connection(path, ignore_checks=True) as conn:
            # A cycle, an edge that is not an id, a flag and a count out of range.
            conn.execute("INSERT INTO futurecalls_call_dependencies VALUES (?, ?)", (left, root))
            conn.execute("UPDATE futurecalls_calls SET waiting = 1 WHERE id = ?", (root,))
            conn.execute("INSERT INTO futurecalls_call_dependencies VALUES (?, 'x')", (root,))
            conn.execute("UPDATE futurecalls_calls SET dependents = 7 WHERE id = ?", (flagged,))
            conn.execute("UPDATE futurecalls_calls SET waiting = -1 WHERE id = ?", (negative,))
        # A flag out of range is a hint: the call runs, as one with dependents.
        (call,) = (await store.claim(at(10), {"d": 5}, 5)).calls
        assert (call.id, call.dependents) == (flagged, True)
        assert await store.prerequisite_ended(flagged, None, at(11)) == 0
        # A count out of range keeps the call out of the claim, listed, cancellable.
        assert [c.id for c in await store.pending(PendingQuery(name="c"))] == [negative]
        assert await claimed(store) == []
        assert await store.cancel(negative)
        # The cycle and the bad edge end: each dependent becomes a dead letter once.
        assert await store.cancel(root)
        letters = await store.dead_letters()
        assert sorted(d.call_id for d in letters) == [left, right]
        assert edges(path) == []


async def test_a_prerequisite_that_cannot_be_read_takes_its_dependents_along(
    tmp_path: Path,
) -> None:
    path = tmp_path / "calls.sqlite3"
    async with open_sqlite_store(path) as store:
        (root,) = await store.schedule([new("a")])
        (dependent,) = await store.schedule([new("b", after=[root])])
        (leaf,) = await store.schedule([new("c", after=[dependent])])
        with raw_connection(path, ignore_checks=True) as conn:
            conn.execute("UPDATE futurecalls_calls SET priority = 5000 WHERE id = ?", (root,))
        assert await claimed(store) == []
        errors = {d.call_id: d.error for d in await store.dead_letters()}
        assert errors[root].startswith("Moved to dead letters when claimed")
        assert errors[dependent].startswith(
            f"prerequisite {root} failed: Moved to dead letters when claimed"
        )
        assert errors[leaf].startswith(f"prerequisite {dependent} did not run: ")
        assert await store.pending(PendingQuery()) == []
        assert edges(path) == []


async def test_a_dependent_that_cannot_be_read_still_becomes_a_dead_letter(
    tmp_path: Path,
) -> None:
    path = tmp_path / "calls.sqlite3"
    async with open_sqlite_store(path) as store:
        (root,) = await store.schedule([new("a")])
        (dependent,) = await store.schedule([new("b", after=[root])])
        with raw_connection(path, ignore_checks=True) as conn:
            conn.execute(
                "UPDATE futurecalls_calls SET payload = x'ff', attempts = -4 WHERE id = ?",
                (dependent,),
            )
        assert await store.cancel(root)
        (letter,) = await store.dead_letters()
        assert letter.call_id == dependent
        assert (letter.payload, letter.attempts) == ("null", 0)
        assert letter.error.startswith(f"prerequisite {root} failed: it was cancelled\n")
        assert "payload blob X'FF'" in letter.error
        assert "attempts integer -4" in letter.error


# -- what only this store does -------------------------------------------------------


async def test_a_prerequisite_whose_dependents_went_is_claimed_without_them(
    tmp_path: Path,
) -> None:
    path = tmp_path / "calls.sqlite3"
    async with open_sqlite_store(path) as store:
        (root,) = await store.schedule([new("a")])
        (dependent,) = await store.schedule([new("b", after=[root])])
        assert column(path, "dependents", root) == 1
        assert await store.cancel(dependent)
        assert column(path, "dependents", root) == 0
        (call,) = (await store.claim(at(10), {"a": 1}, 1)).calls
        assert not call.dependents  # no record, nothing to tell at its end
        with raw_connection(path) as conn:
            started = conn.execute("SELECT count(*) FROM futurecalls_started_prerequisites")
            assert started.fetchone() == (0,)


async def test_cancelling_a_recurring_schedule_ends_what_waits_for_its_runs(
    tmp_path: Path,
) -> None:
    path = tmp_path / "calls.sqlite3"
    async with open_sqlite_store(path) as store:
        schedule = build_schedule(
            "a",
            None,
            key="k",
            now=T0,
            cron=None,
            every=10,
            timezone="UTC",
            start=T0,
            end=None,
            misfire="once",
            overlap="allow",
            identifier=None,
        )
        await store.put_recurring(schedule, True)
        assert (await store.fire_recurring(at(0), 10)).runs == 1
        (run,) = await store.pending(PendingQuery())
        (dependent,) = await store.schedule([new("b", after=[run.id])])
        assert await store.cancel_recurring("k")
        (letter,) = await store.dead_letters()
        assert (letter.call_id, letter.error) == (
            dependent,
            f"prerequisite {run.id} failed: it was cancelled",
        )
        assert await store.pending(PendingQuery()) == []
        assert edges(path) == []


async def test_unique_keys_and_dependencies_are_not_mixed_in_a_batch(tmp_path: Path) -> None:
    # (Not supported yet on any store: refused before anything is stored.)
    path = tmp_path / "calls.sqlite3"
    async with open_sqlite_store(path) as store:
        with pytest.raises(InvalidArgumentError, match="unique keys and dependencies"):
            await store.schedule([new("a", unique_key="k"), new("b", after_batch=(0,))])
        assert await store.pending(PendingQuery()) == []


async def test_listeners_hear_of_calls_once_they_wait_for_nothing(tmp_path: Path) -> None:
    path = tmp_path / "calls.sqlite3"
    heard: list[datetime] = []
    async with open_sqlite_store(path, recheck_interval=None) as store:
        store.add_listener(heard.append)
        (root,) = await store.schedule([new("a", due=5)])
        await store.schedule([new("b", due=7, after=[root]), new("b", due=8, after=[root])])
        assert heard == [at(5)]  # the dependents are not due, whatever their time
        await store.claim(at(10), {"a": 1}, 1)
        assert await store.prerequisite_ended(root, None, at(11)) == 2
        assert heard == [at(5), at(7)]


class Step(FutureCall):
    name = "step"
    max_concurrent = None
    max_attempts = 1
    ran: ClassVar[list[str]] = []

    async def invoke(self, session: Any, payload: str) -> None:
        Step.ran.append(payload)
        if payload.startswith("fail"):
            raise ValueError(f"{payload} failed")


class LeasedStep(FutureCall):
    name = "leased-step"
    max_concurrent = None
    max_attempts = 1
    delivery = Delivery.AT_LEAST_ONCE

    async def invoke(self, session: Any, payload: str) -> None:
        Step.ran.append(payload)
        if payload.startswith("fail"):
            raise ValueError(f"{payload} failed")


async def wait_for_ran(count: int) -> None:
    with trio.fail_after(10):
        while len(Step.ran) < count:  # noqa: ASYNC110 - the scheduler's threads do the work
            await trio.sleep(0.01)


async def test_chains_run_in_order_and_a_failed_step_ends_the_rest(tmp_path: Path) -> None:
    path = tmp_path / "calls.sqlite3"
    Step.ran = []
    async with (
        open_sqlite_store(path) as store,
        open_scheduler(store, [Step, LeasedStep]) as scheduler,
    ):
        steps = [(Step, "1"), (LeasedStep, "2"), (Step, "3"), (LeasedStep, "4"), (Step, "5")]
        await scheduler.chain(steps)
        await wait_for_ran(5)
        assert Step.ran == ["1", "2", "3", "4", "5"]
        ids = await scheduler.chain([(Step, "fail-a"), (Step, "x"), (Step, "y")])
        leased_ids = await scheduler.chain([(LeasedStep, "fail-b"), (Step, "z")])
        await wait_for_ran(7)
        with trio.fail_after(10):
            while len(letters := await store.dead_letters()) < 5:  # noqa: ASYNC110
                await trio.sleep(0.01)
        errors = {d.call_id: d.error for d in letters}
        assert errors[ids[1]] == f"prerequisite {ids[0]} failed: ValueError: fail-a failed"
        assert errors[ids[2]].startswith(f"prerequisite {ids[1]} did not run: ")
        assert errors[leased_ids[1]] == (
            f"prerequisite {leased_ids[0]} failed: ValueError: fail-b failed"
        )
        assert sorted(Step.ran[5:]) == ["fail-a", "fail-b"]
        assert await store.pending(PendingQuery()) == []
    assert edges(path) == []
    with raw_connection(path) as conn:
        started = conn.execute("SELECT count(*) FROM futurecalls_started_prerequisites")
        assert started.fetchone() == (0,)


# -- two connections -----------------------------------------------------------------


async def test_a_claim_racing_a_dependent_never_leaves_it_waiting_for_an_ended_call(
    tmp_path: Path,
) -> None:
    """Store ``one`` claims a call (at-most-once) while store ``two``, another
    connection to the file, schedules a call after it. Either the schedule came first
    (the claim sees dependents and records the call as running; its end releases the
    dependent) or the claim did (the call is gone: PrerequisiteError)."""
    path = tmp_path / "calls.sqlite3"
    outcomes = {"waited": 0, "refused": 0}
    async with (
        open_sqlite_store(path, synchronous="OFF") as one,
        open_sqlite_store(path, synchronous="OFF") as two,
    ):
        for _ in range(40):
            (root,) = await one.schedule([new("a")])
            got: dict[str, Any] = {}

            async def claim_it(root: int = root, got: dict[str, Any] = got) -> None:
                await trio.sleep(random.random() * 0.002)
                got["calls"] = (await one.claim(at(10), {"a": 1}, 1)).calls

            async def wait_for_it(root: int = root, got: dict[str, Any] = got) -> None:
                await trio.sleep(random.random() * 0.002)
                try:
                    got["dependent"] = (await two.schedule([new("b", after=[root])]))[0]
                except PrerequisiteError:
                    got["dependent"] = None

            async with trio.open_nursery() as nursery:
                nursery.start_soon(claim_it)
                nursery.start_soon(wait_for_it)
            (call,) = got["calls"]
            assert call.id == root
            if got["dependent"] is None:
                outcomes["refused"] += 1
                assert not call.dependents
            else:
                outcomes["waited"] += 1
                assert call.dependents  # so its end is told
                assert await one.prerequisite_ended(root, None, at(11)) == 1
                assert [c.id for c in (await two.claim(at(12), {"b": 1}, 1)).calls] == [
                    got["dependent"]
                ]
        assert await one.pending(PendingQuery()) == []
    # Both orders happen (each about half the time).
    assert outcomes["waited"], outcomes
    assert outcomes["refused"], outcomes


async def test_a_completion_racing_a_dependent_never_leaves_it_waiting(tmp_path: Path) -> None:
    path = tmp_path / "calls.sqlite3"
    async with (
        open_sqlite_store(path, synchronous="OFF") as one,
        open_sqlite_store(path, synchronous="OFF") as two,
    ):
        for _ in range(40):
            (root,) = await one.schedule([new("a")])
            assert [c.id for c in (await one.claim(at(10), {"a": 1}, 1, lease("a"))).calls] == [
                root
            ]
            got: dict[str, Any] = {}

            async def complete_it(root: int = root) -> None:
                await trio.sleep(random.random() * 0.002)
                assert await one.complete("w1", root)

            async def wait_for_it(root: int = root, got: dict[str, Any] = got) -> None:
                await trio.sleep(random.random() * 0.002)
                try:
                    got["dependent"] = (await two.schedule([new("b", after=[root])]))[0]
                except PrerequisiteError:
                    got["dependent"] = None

            async with trio.open_nursery() as nursery:
                nursery.start_soon(complete_it)
                nursery.start_soon(wait_for_it)
            if got["dependent"] is not None:
                claim = await two.claim(at(12), {"b": 1}, 1)
                assert [c.id for c in claim.calls] == [got["dependent"]]
        assert await one.pending(PendingQuery()) == []
        assert edges(path) == []

"""Dependencies on PostgreSQL across processes and under racing transactions.

The store-level behaviour is in tests/stores/test_dependency_conformance.py (it runs
on PostgreSQL too); here: two worker processes running 200 chains, and the races
between making a call wait for a prerequisite and that prerequisite ending.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import sys
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import trio
from pg_support import (
    admin_fetch,
    new,
    now,
    open_test_postgres_store,
    pg_dsn,
    require_postgres,
    until,
)

from trio_futurecalls import (
    FutureCall,
    Lease,
    NewCall,
    PendingQuery,
    PrerequisiteError,
    open_scheduler,
    schedule_chain,
)
from trio_futurecalls.stores.postgres import PostgresStore, open_postgres_store

sys.path.insert(0, str(Path(__file__).parent))
from chain_worker import STEP_CLASSES, STEPS

CHAIN_WORKER = str(Path(__file__).parent / "chain_worker.py")


@pytest.fixture(autouse=True)
def _needs_postgres() -> None:
    require_postgres()


async def _worker(*args: str) -> Any:
    with trio.fail_after(150):
        proc = await trio.run_process(
            [sys.executable, CHAIN_WORKER, *args],
            capture_stdout=True,
            capture_stderr=True,
            check=False,
        )
    if proc.returncode != 0:
        raise AssertionError(f"chain worker {args} failed:\n{proc.stderr.decode()}")
    return json.loads(proc.stdout.decode().strip().splitlines()[-1])


async def test_two_workers_run_200_chains_of_5_in_order() -> None:
    chains = 200
    async with open_test_postgres_store() as store:
        await admin_fetch(
            f'CREATE TABLE "{store.schema}".runs (call_id bigint, chain int, step int, '
            "worker int, started_at timestamptz, ended_at timestamptz)"
        )
        ids: list[list[int]] = []
        for chain in range(chains):
            ids.append(
                await schedule_chain(store, [(cls, {"chain": chain}) for cls in STEP_CLASSES])
            )
        reports: list[dict[str, Any]] = []

        async def one(k: int) -> None:
            reports.append(await _worker(pg_dsn(), store.schema, str(k), "5"))

        async with trio.open_nursery() as nursery:
            for k in range(2):
                nursery.start_soon(one, k)

        rows = await admin_fetch(
            f'SELECT call_id, chain, step, worker, started_at, ended_at FROM "{store.schema}".runs'
        )
        assert len(rows) == chains * STEPS  # every step ran, and only once
        by_call = {r[0]: r for r in rows}
        assert len(by_call) == len(rows)
        gaps = []
        for chain, chain_ids in enumerate(ids):
            steps = [by_call[call_id] for call_id in chain_ids]
            assert [(r[1], r[2]) for r in steps] == [(chain, k) for k in range(STEPS)]
            for before, after in itertools.pairwise(steps):
                assert before[5] is not None  # it ended
                assert after[4] >= before[5], (chain, before, after)  # after its prerequisite
                gaps.append((after[4] - before[5]).total_seconds())
        assert await store.pending(PendingQuery()) == []
        assert await store.dead_letters() == []
        assert sum(r["ran"] for r in reports) == chains * STEPS
        assert all(r["failed"] == 0 for r in reports)
        assert sum(1 for r in reports if r["ran"] > 0) == 2  # both took part
        # (The workers re-check only every 60 s: had a dependent waited for a re-check
        # rather than a NOTIFY, the run could not have ended within its time limit.)
        assert max(gaps) < 60


def _dependent(prerequisite: int) -> NewCall:
    return NewCall(
        name="d", payload="null", due_at=now(), scheduled_at=now(), after=(prerequisite,)
    )


async def _race(store: PostgresStore, other: PostgresStore, rounds: int, end: str) -> None:
    """Make a call wait for a prerequisite (through ``other``, its own connections)
    while that prerequisite ends, ``rounds`` times: each time the dependent is refused,
    or it ends as its prerequisite did (due, or a dead letter); never waiting for a
    call that is gone."""
    lease = Lease(owner="w1", expires_at=now() + timedelta(minutes=5), names=frozenset({"p"}))
    for _ in range(rounds):
        (prerequisite,) = await store.schedule([new("p", now() - timedelta(seconds=1))])
        if end in ("succeed", "fail"):  # at-least-once: the row stays, leased
            (call,) = (await store.claim(now(), {"p": 1}, 1, lease)).calls
        else:  # at-most-once, with a first dependent so that its start is recorded
            await store.schedule([_dependent(prerequisite)])
            (call,) = (await store.claim(now(), {"p": 1}, 1)).calls
        ended: Callable[[], Awaitable[Any]]
        if end == "succeed":
            ended = partial(store.complete, "w1", prerequisite)
        elif end == "fail":
            ended = partial(store.dead_letter, call, "boom", now(), "w1")
        elif end == "told":
            ended = partial(store.prerequisite_ended, prerequisite, None, now())
        else:
            ended = partial(store.prerequisite_ended, prerequisite, "boom", now())

        async def add(prerequisite: int) -> None:
            with contextlib.suppress(PrerequisiteError):
                await other.schedule([_dependent(prerequisite)])

        async with trio.open_nursery() as nursery:
            nursery.start_soon(add, prerequisite)
            nursery.start_soon(ended)
    pending = await store.pending(PendingQuery(name="d"))
    assert [c for c in pending if c.waiting_for] == []
    dead = await store.dead_letters(name="d")
    if end in ("succeed", "told"):
        assert dead == []
    else:
        assert pending == []


@pytest.mark.parametrize("end", ["succeed", "fail", "told", "told_failed"])
async def test_waiting_for_a_prerequisite_as_it_ends(end: str) -> None:
    async with (
        open_test_postgres_store() as store,
        open_postgres_store(pg_dsn(), schema=store.schema, migrate=False, min_pool_size=0) as other,
    ):
        await _race(store, other, 30, end)


async def test_other_processes_hear_of_a_dependent_when_it_becomes_due() -> None:
    async with (
        open_test_postgres_store() as store,
        open_postgres_store(pg_dsn(), schema=store.schema, migrate=False, min_pool_size=0) as other,
    ):
        heard: list[datetime] = []
        other.add_listener(heard.append)
        assert await other.wait_listening()  # (LISTEN opens with the first listener)
        due = datetime(2031, 5, 6, 7, 8, 9, 123457, tzinfo=UTC)  # microseconds count
        (root,) = await store.schedule([new("p", now() - timedelta(seconds=1))])
        await store.schedule(
            [NewCall(name="d", payload="null", due_at=due, scheduled_at=now(), after=(root,))]
        )
        lease = Lease(owner="w1", expires_at=now() + timedelta(minutes=5), names=frozenset("p"))
        await store.claim(now(), {"p": 1}, 1, lease)
        await trio.sleep(0.2)  # (the NOTIFYs of the schedule and claim reach `other`)
        heard.clear()
        assert await store.complete("w1", root)
        await until(lambda: due in heard, 10)


async def test_a_worker_ends_the_dependents_another_worker_abandoned() -> None:
    class First(FutureCall):
        name = "first"

        async def invoke(self, session: Any, payload: Any) -> None:
            raise AssertionError("claimed by the worker that stopped")

    class After(FutureCall):
        name = "after"

        async def invoke(self, session: Any, payload: Any) -> None:
            raise AssertionError("its prerequisite never succeeded")

    async with open_test_postgres_store() as store:
        first, after = await schedule_chain(store, [(First, None), (After, None)])
        # A worker claims the at-most-once prerequisite and stops: its record of the
        # call's start is never renewed, and the call's end never told.
        dead = Lease(owner="stopped", expires_at=now() + timedelta(seconds=1), names=frozenset())
        (claimed,) = (await store.claim(now(), {"first": 1}, 1, dead)).calls
        assert claimed.dependents
        async with open_scheduler(store, [First, After], lease_duration=1):
            with trio.fail_after(15):
                while not await store.dead_letters():  # noqa: ASYNC110 (the server's state)
                    await trio.sleep(0.05)
        (letter,) = await store.dead_letters()
        assert letter.call_id == after
        assert letter.error.startswith(f"prerequisite {first} failed: its worker stopped")


async def test_a_dependency_transaction_picked_as_a_deadlock_victim_runs_again(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from asyncpg.exceptions import DeadlockDetectedError, UniqueViolationError

    from trio_futurecalls import StoreError

    async with open_test_postgres_store() as store:
        (root,) = await store.schedule([new("p", now())])
        real = store._transaction
        failures: list[Exception] = [DeadlockDetectedError("deadlock detected")] * 2
        runs = 0

        async def flaky(what: str, fn: Any) -> Any:
            nonlocal runs
            runs += 1
            if failures:
                raise StoreError("PostgreSQL error") from failures.pop()
            return await real(what, fn)

        monkeypatch.setattr(store, "_transaction", flaky)
        assert await store.cancel(root)  # a transaction of the dependency kind
        assert runs == 3
        # Any other error is not run again.
        failures.append(UniqueViolationError("duplicate key"))
        runs = 0
        with pytest.raises(StoreError):
            await store.cancel(root)
        assert runs == 1

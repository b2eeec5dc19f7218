"""SQLite: the writes after calls share transactions (and fsyncs) when calls end together.

Completions, releases, hand-backs (``put_back``) and dead letters submitted while a
transaction is running wait for it and go together in the next one: 500 calls ending
at once at shutdown cost a few transactions, not 500. A write that fails on its own
(a constraint) fails only its caller. Counted with a trace of the store connection's
statements; real files and threads.
"""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import attrs
import pytest
import trio

from trio_futurecalls import (
    Delivery,
    FutureCall,
    Lease,
    NewCall,
    PendingQuery,
    SQLiteStore,
    StoredCall,
    StoreError,
    open_scheduler,
    open_sqlite_store,
)

T0 = datetime(2030, 1, 1, tzinfo=UTC)
COUNT = 500


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SQLiteStore]:
    async with open_sqlite_store(tmp_path / "calls.sqlite3") as opened:
        yield opened


def count_commits(store: SQLiteStore) -> Callable[[], int]:
    """Start counting the transactions the store's connection commits."""
    commits: list[str] = []
    conn = store._conn
    assert conn is not None
    conn.set_trace_callback(lambda sql: commits.append(sql) if sql == "COMMIT" else None)
    return lambda: len(commits)


async def claimed(store: SQLiteStore, owner: str | None) -> list[StoredCall]:
    news = [NewCall(name="a", payload="null", due_at=T0, scheduled_at=T0) for _ in range(COUNT)]
    await store.schedule(news)
    lease = None if owner is None else Lease(owner=owner, expires_at=at(600), names=frozenset("a"))
    calls = (await store.claim(at(1), {"a": COUNT}, COUNT, lease)).calls
    assert len(calls) == COUNT
    return calls


async def test_writes_after_calls_ending_together_share_transactions(
    store: SQLiteStore,
) -> None:
    calls = await claimed(store, "w1")
    commits = count_commits(store)
    answers: list[object] = []

    async def end(i: int, call: StoredCall) -> None:
        if i % 4 == 0:
            answers.append(await store.release("w1", call.id, at(5), refund_attempt=True))
        elif i % 4 == 1:
            answers.append(await store.put_back([attrs.evolve(call, attempts=0)], "w1"))
        elif i % 4 == 2:
            answers.append(await store.dead_letter(call, "gave up", at(2), "w1") is not None)
        else:
            answers.append(await store.complete("w1", call.id))

    async with trio.open_nursery() as nursery:
        for i, call in enumerate(calls):
            nursery.start_soon(end, i, call)
    assert len(answers) == COUNT
    assert all(answers)
    assert commits() <= 10, f"{commits()} transactions for {COUNT} writes"
    assert len(await store.pending(PendingQuery())) == COUNT // 2
    assert len(await store.dead_letters()) == COUNT // 4


async def test_a_write_that_fails_alone_fails_only_its_caller(store: SQLiteStore) -> None:
    calls = await claimed(store, None)
    doomed = calls[7].id
    conn = store._conn
    assert conn is not None
    conn.execute(
        "CREATE TEMP TRIGGER refuse BEFORE INSERT ON futurecalls_dead_letters "
        f"WHEN NEW.call_id = {doomed} BEGIN SELECT RAISE(ABORT, 'refused'); END"
    )
    errors: list[tuple[int, str]] = []

    async def dead(call: StoredCall) -> None:
        try:
            await store.dead_letter(call, "gave up", at(2))
        except StoreError as exc:
            errors.append((call.id, str(exc)))

    async with trio.open_nursery() as nursery:
        for call in calls:
            nursery.start_soon(dead, call)
    assert [(call_id, "refused" in text) for call_id, text in errors] == [(doomed, True)]
    kept = {d.call_id for d in await store.dead_letters()}
    assert kept == {c.id for c in calls} - {doomed}


class Sleeper(FutureCall):
    name = "a"
    max_concurrent = None
    delivery = Delivery.AT_LEAST_ONCE

    async def invoke(self, session: Any, payload: Any) -> None:
        await trio.sleep_forever()


async def test_a_shutdown_releases_its_running_calls_in_a_few_transactions(
    store: SQLiteStore,
) -> None:
    past = datetime.now(UTC) - timedelta(hours=1)
    await store.schedule(
        [NewCall(name="a", payload="null", due_at=past, scheduled_at=past) for _ in range(COUNT)]
    )
    async with open_scheduler(store, [Sleeper], max_concurrent=None) as scheduler:
        with trio.fail_after(20):
            while len(scheduler.running()) < COUNT:  # noqa: ASYNC110 - threads do the claims
                await trio.sleep(0.01)
        commits = count_commits(store)
        await scheduler.shutdown(grace_period=0)
    assert commits() <= 10, f"{commits()} transactions to release {COUNT} calls"
    pending = await store.pending(PendingQuery())
    assert len(pending) == COUNT
    assert all(c.attempts == 0 for c in pending)  # released with the attempt refunded


def test_the_trace_sees_commits() -> None:
    conn = sqlite3.connect(":memory:", isolation_level=None)
    seen: list[str] = []
    conn.set_trace_callback(seen.append)
    conn.execute("BEGIN IMMEDIATE")
    conn.execute("COMMIT")
    assert "COMMIT" in seen

"""Unique keys on PostgreSQL: many processes racing for one key, claims freeing keys
while others schedule them, and rows another program writes."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import asyncpg
import pytest
import trio
import trio.lowlevel
from pg_support import (
    admin_fetch,
    now,
    open_test_postgres_store,
    pg_dsn,
    require_postgres,
)
from test_postgres import worker

from trio_futurecalls import (
    DuplicateCallError,
    FutureCall,
    Lease,
    NewCall,
    PendingQuery,
    open_scheduler,
)


@pytest.fixture(autouse=True)
def _needs_postgres() -> None:
    require_postgres()


def keyed(key: str, on_conflict: Any = "ignore", payload: str = "null") -> NewCall:
    t = now()
    return NewCall(
        name="pg.alpha",
        payload=payload,
        due_at=t,
        scheduled_at=t,
        unique_key=key,
        on_conflict=on_conflict,
    )


async def test_three_processes_racing_for_one_key_store_one_call() -> None:
    count = 1000
    async with open_test_postgres_store() as store:
        # Commits need not reach the disk for this test (it is about which rows the
        # database lets in, not about durability): it runs in a fraction of the time.
        dsn = pg_dsn() + ("&" if "?" in pg_dsn() else "?") + "synchronous_commit=off"
        reports: list[dict[str, list[int]]] = []

        async def one(k: int) -> None:
            reports.append(await worker("keyed", dsn, store.schema, str(k), str(count)))

        async with trio.open_nursery() as nursery:
            for k in range(3):
                nursery.start_soon(one, k)

        pending = await store.pending(PendingQuery())
        assert sorted((c.unique_key or "") for c in pending) == ["ignored", "replaced"]
        by_key = {c.unique_key: c for c in pending}
        for mode, key in (("ignore", "ignored"), ("replace", "replaced")):
            # Every one of the 1,500 schedules of this key got the one call's id.
            assert {i for report in reports for i in report[mode]} == {by_key[key].id}
        # "replace" left the payload of one of the schedules, intact.
        payload = json.loads(by_key["replaced"].payload)
        assert payload["worker"] in (0, 1, 2)
        assert 0 <= payload["i"] < count
        rows = await admin_fetch(f'SELECT count(*) FROM "{store.schema}".calls')
        assert rows[0][0] == 2


async def test_claims_free_keys_while_others_schedule_them() -> None:
    async with open_test_postgres_store() as store:
        scheduled: list[int] = []
        claimed: list[int] = []
        done = trio.Event()

        async def scheduler_task() -> None:
            for i in range(100):
                (call_id,) = await store.schedule([keyed("k", "replace", payload=str(i))])
                scheduled.append(call_id)
            done.set()

        async def claimer(leased: bool) -> None:
            lease = Lease(
                owner="w1", expires_at=now() + timedelta(hours=1), names=frozenset({"pg.alpha"})
            )
            while not done.is_set():
                claim = await store.claim(now(), {"pg.alpha": 1}, 1, lease if leased else None)
                claimed.extend(c.id for c in claim.calls)
                assert all(c.unique_key is None for c in claim.calls)
                await trio.lowlevel.checkpoint()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(scheduler_task)
            nursery.start_soon(scheduler_task)
            nursery.start_soon(claimer, True)
            nursery.start_soon(claimer, False)

        # Every id a schedule returned is a call that was claimed or is still pending;
        # at most one of them holds the key.
        pending = await store.pending(PendingQuery())
        assert set(scheduled) <= set(claimed) | {c.id for c in pending}
        assert len(claimed) == len(set(claimed))
        assert [c.unique_key for c in pending] in (["k"], [])
        rows = await admin_fetch(
            f'SELECT count(*) FROM "{store.schema}".calls WHERE unique_key IS NOT NULL'
        )
        assert rows[0][0] == len(pending)


async def test_error_mode_in_a_transaction_leaves_the_store_usable() -> None:
    async with open_test_postgres_store(max_pool_size=2) as store:
        (first,) = await store.schedule([keyed("k")])
        for _ in range(3):  # the connection goes back clean each time
            with pytest.raises(DuplicateCallError) as caught:
                await store.schedule([keyed("j", "error"), keyed("k", "error")])
            assert caught.value.call_id == first
        assert [c.unique_key for c in await store.pending(PendingQuery())] == ["k"]
        assert len(await store.schedule([keyed("j", "error")])) == 1


@pytest.mark.parametrize("key", ["", "k" * 256])
async def test_rows_with_bad_keys_are_refused_by_the_schema(key: str) -> None:
    async with open_test_postgres_store() as store:
        # (The admin connection's loop wraps the driver's error in a group.)
        with pytest.raises(BaseExceptionGroup) as caught:
            await admin_fetch(
                f'INSERT INTO "{store.schema}".calls (name, payload, due_at, scheduled_at, '
                "unique_key) VALUES ('pg.alpha', 'null', now(), now(), $1)",
                key,
            )
        error: BaseException = caught.value
        while isinstance(error, BaseExceptionGroup) and len(error.exceptions) == 1:
            error = error.exceptions[0]
        assert isinstance(error, asyncpg.CheckViolationError)
        assert error.constraint_name == "calls_unique_key_length"
        assert await store.pending(PendingQuery()) == []


class Ran(FutureCall):
    name = "pg.alpha"
    ran: list[Any] = []  # noqa: RUF012

    async def invoke(self, session: Any, payload: Any) -> None:
        Ran.ran.append(payload)


async def test_a_key_another_program_wrote_is_held_and_freed_like_ours() -> None:
    Ran.ran = []
    async with open_test_postgres_store() as store:
        (row,) = await admin_fetch(
            f'INSERT INTO "{store.schema}".calls (name, payload, due_at, scheduled_at, '
            "unique_key) VALUES ('pg.alpha', '\"theirs\"', now() + interval '1 hour', now(), "
            "'k' || repeat('x', 254)) RETURNING id"
        )
        key = "k" + "x" * 254
        assert await store.schedule([keyed(key, "replace", payload='"ours"')]) == [row[0]]
        (call,) = await store.pending(PendingQuery())
        assert (call.id, call.payload, call.unique_key) == (row[0], '"ours"', key)
        async with open_scheduler(store, [Ran]) as scheduler:
            await scheduler.schedule(Ran, "now", unique_key="other")
            with trio.fail_after(10):
                while len(Ran.ran) < 2:  # noqa: ASYNC110 - another task runs them
                    await trio.sleep(0.01)
        assert sorted(Ran.ran) == ["now", "ours"]
        assert await store.pending(PendingQuery()) == []

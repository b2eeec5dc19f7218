"""Review of dependencies on PostgreSQL (issue 12): races the first tests left out.

Each race is made deterministic with a lock the test holds on a connection of its own
(its application name says whose), and waits seen in pg_stat_activity.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from datetime import timedelta

import pytest
import trio
from pg_support import (
    admin_fetch,
    holding_lock,
    new,
    now,
    open_test_postgres_store,
    pg_dsn,
    require_postgres,
)

from trio_futurecalls import Lease, NewCall, PendingQuery
from trio_futurecalls.stores.postgres import open_postgres_store


@pytest.fixture(autouse=True)
def _needs_postgres() -> None:
    require_postgres()


def locked_edge(
    schema: str, prerequisite: int, dependent: int
) -> AbstractAsyncContextManager[None]:
    """Hold the edge (prerequisite, dependent) locked while the block runs."""
    return holding_lock(
        schema,
        f'SELECT 1 FROM "{schema}".call_dependencies '
        "WHERE prerequisite_id = $1 AND call_id = $2 FOR UPDATE",
        prerequisite,
        dependent,
    )


async def waiting_for_a_lock(application_name: str) -> None:
    """Until a connection named so waits for a lock (another transaction holds it)."""
    with trio.fail_after(20):
        while not await admin_fetch(  # noqa: ASYNC110 (server state: nothing signals)
            "SELECT 1 FROM pg_stat_activity WHERE application_name = $1 "
            "AND wait_event_type = 'Lock'",
            application_name,
        ):
            await trio.sleep(0.02)


async def test_a_prerequisite_succeeding_while_another_of_a_fan_in_fails() -> None:
    """P1 (at-most-once, running) and P2 (leased) are both prerequisites of D; E waits
    for P1 alone. P1 succeeds while P2 becomes a dead letter: the success releases the
    edges of P1 then updates D's row; the dead letter locked D's row, then deletes D's
    edges (P1's among them). Both must be stored (D a dead letter, E due): neither may
    fail with a deadlock, or E waits forever (the end of an at-most-once call is told
    once; the engine does not try again after a StoreError)."""
    async with open_test_postgres_store() as store:
        schema = store.schema
        async with open_postgres_store(
            pg_dsn(),
            schema=schema,
            migrate=False,
            min_pool_size=0,
            application_name=f"fc-{schema}:other",
        ) as other:
            t = now() - timedelta(seconds=1)
            p1, p2 = await store.schedule([new("p1", t), new("p2", t)])
            d, e = await store.schedule(
                [
                    NewCall(name="d", payload="null", due_at=t, scheduled_at=t, after=(p1, p2)),
                    NewCall(name="e", payload="null", due_at=t, scheduled_at=t, after=(p1,)),
                ]
            )
            lease = Lease(
                owner="w1", expires_at=now() + timedelta(minutes=5), names=frozenset({"p2"})
            )
            claim = await store.claim(now(), {"p1": 1, "p2": 1}, 2, lease)
            (c2,) = [c for c in claim.calls if c.id == p2]
            errors: list[BaseException] = []

            async def run(fn: Callable[..., Awaitable[object]], *args: object) -> None:
                try:
                    await fn(*args)
                except Exception as exc:
                    errors.append(exc)

            async with trio.open_nursery() as nursery, locked_edge(schema, p1, d):
                # P1's success waits for the edge (P1, D)...
                nursery.start_soon(run, store.prerequisite_ended, p1, None, now())
                await waiting_for_a_lock(f"fc-{schema}")
                # ... while P2's dead letter locks D, then waits for that edge too.
                nursery.start_soon(run, other.dead_letter, c2, "boom", now(), "w1")
                await waiting_for_a_lock(f"fc-{schema}:other")
            # E waits for P1 alone, which succeeded: it must be due now.
            assert [(c.id, c.waiting_for) for c in await store.pending(PendingQuery())] == [(e, ())]
            assert {x.call_id for x in await store.dead_letters()} == {p2, d}
            assert errors == []


def locked_started_record(schema: str, call_id: int) -> AbstractAsyncContextManager[None]:
    """Hold the started-prerequisite record of ``call_id`` locked (``FOR UPDATE``)
    while the block runs."""
    return holding_lock(
        schema,
        f'SELECT 1 FROM "{schema}".started_prerequisites WHERE call_id = $1 FOR UPDATE',
        call_id,
    )


async def test_waiting_for_an_at_most_once_call_as_it_is_put_back() -> None:
    """X, at-most-once with a dependent, runs (its row gone, its start recorded) and
    is put back (a retry, or a hand-back at shutdown) while another process schedules
    a call after X. The schedule looks for X's row (not there yet: the put back is not
    committed), then waits for X's record, which the put back deletes as it stores the
    row again. X is pending the whole time, so the call must be stored, waiting for
    X; it was refused with PrerequisiteError ("not pending or running...")."""
    async with open_test_postgres_store() as store:
        schema = store.schema
        async with open_postgres_store(
            pg_dsn(),
            schema=schema,
            migrate=False,
            min_pool_size=0,
            application_name=f"fc-{schema}:other",
        ) as other:
            t = now() - timedelta(seconds=1)
            (x,) = await store.schedule([new("p", t)])
            await store.schedule(
                [NewCall(name="d", payload="null", due_at=t, scheduled_at=t, after=(x,))]
            )
            (call,) = (await store.claim(now(), {"p": 1}, 1)).calls
            assert call.dependents
            errors: list[BaseException] = []
            stored: list[int] = []

            async def add() -> None:
                try:
                    stored.extend(
                        await other.schedule(
                            [
                                NewCall(
                                    name="d", payload="null", due_at=t, scheduled_at=t, after=(x,)
                                )
                            ]
                        )
                    )
                except Exception as exc:
                    errors.append(exc)

            async with trio.open_nursery() as nursery, locked_started_record(schema, x):
                # The put back stores X's row again, then waits to delete its record...
                nursery.start_soon(store.put_back, [call], None)
                await waiting_for_a_lock(f"fc-{schema}")
                # ... while the schedule, which did not see that row, waits for it too.
                nursery.start_soon(add)
                await waiting_for_a_lock(f"fc-{schema}:other")
            assert errors == []
            (added,) = stored
            pending = {c.id: c.waiting_for for c in await store.pending(PendingQuery())}
            assert pending[x] == ()
            assert pending[added] == (x,)


async def test_a_prerequisite_succeeding_while_one_of_its_dependents_is_cancelled() -> None:
    """The same lock order, simpler: P (at-most-once, running) has dependents D and E;
    P succeeds while D is cancelled (its row goes, then its edges). The success must
    not fail with a deadlock: E would wait forever for a call that succeeded."""
    async with open_test_postgres_store() as store:
        schema = store.schema
        async with open_postgres_store(
            pg_dsn(),
            schema=schema,
            migrate=False,
            min_pool_size=0,
            application_name=f"fc-{schema}:other",
        ) as other:
            t = now() - timedelta(seconds=1)
            (p,) = await store.schedule([new("p", t)])
            dependent = NewCall(name="d", payload="null", due_at=t, scheduled_at=t, after=(p,))
            d, e = await store.schedule([dependent, dependent])
            (call,) = (await store.claim(now(), {"p": 1}, 1)).calls
            assert call.dependents
            errors: list[BaseException] = []

            async def run(fn: Callable[..., Awaitable[object]], *args: object) -> None:
                try:
                    await fn(*args)
                except Exception as exc:
                    errors.append(exc)

            async with trio.open_nursery() as nursery, locked_edge(schema, p, d):
                nursery.start_soon(run, store.prerequisite_ended, p, None, now())
                await waiting_for_a_lock(f"fc-{schema}")
                nursery.start_soon(run, other.cancel, d)
                await waiting_for_a_lock(f"fc-{schema}:other")
            assert [(c.id, c.waiting_for) for c in await store.pending(PendingQuery())] == [(e, ())]
            assert errors == []

"""Second review of dependencies on PostgreSQL: a dropped recurring run, and records
of running at-most-once prerequisites that expire.

Races are made deterministic with a lock the test holds on a connection of its own
(its application name says whose), and waits seen in pg_stat_activity.
"""

from __future__ import annotations

from datetime import timedelta

import pytest
import trio
from pg_support import admin_fetch, locked_row, now, open_test_postgres_store, require_postgres
from test_pg_dependencies_review import waiting_for_a_lock

from trio_futurecalls import Lease, NewCall, PendingQuery
from trio_futurecalls._recurring import build_schedule


@pytest.fixture(autouse=True)
def _needs_postgres() -> None:
    require_postgres()


async def test_a_dropped_run_whose_dependents_could_not_be_ended_ends_them_later() -> None:
    """A run of a recurring schedule (at-most-once, with a dependent D) is claimed under
    a lease; its schedule is cancelled while it runs; its hand-back is dropped. The
    grouped put_back deletes the run's record as a started prerequisite and commits;
    D is ended by a second transaction. If that second transaction does not commit
    (here its caller gives up while it waits for D's row, as the engine does after
    CLEANUP_TIMEOUT; or the process dies, or the store is unavailable), nothing is
    left to end D: no row, no record for the lease keepers to find expired. D waits
    forever for a call that will never run again."""
    async with open_test_postgres_store() as store:
        schema = store.schema
        t = now() - timedelta(seconds=1)
        schedule = build_schedule(
            "job",
            {"p": 1},
            key="k",
            now=t,
            cron=None,
            every=3600,
            timezone="UTC",
            start=t,
            end=None,
            misfire="once",
            overlap="allow",
            identifier=None,
        )
        await store.put_recurring(schedule, True)
        assert (await store.fire_recurring(now(), 10)).runs == 1
        (run,) = await store.pending(PendingQuery())
        (d,) = await store.schedule(
            [NewCall(name="d", payload="null", due_at=t, scheduled_at=t, after=(run.id,))]
        )
        expires = now() + timedelta(seconds=30)
        lease = Lease(owner="w1", expires_at=expires, names=frozenset())
        (call,) = (await store.claim(now(), {"job": 1}, 1, lease)).calls
        assert call.dependents
        assert await store.cancel_recurring("k")

        async with locked_row(schema, d):
            with trio.CancelScope() as scope:

                async def give_up() -> None:
                    await waiting_for_a_lock(f"fc-{schema}")  # ending D waits for its row
                    scope.cancel()

                async with trio.open_nursery() as nursery:
                    nursery.start_soon(give_up)
                    await store.put_back([call], "w1")
            assert scope.cancelled_caught
        # The worker is gone (or tries again); once the lease is over, any worker's lease
        # keeper ends what it left.
        await store.put_back([call], "w1")
        await store.end_abandoned_prerequisites(expires + timedelta(seconds=1))
        assert [c.id for c in await store.pending(PendingQuery()) if c.waiting_for] == []
        assert [x.call_id for x in await store.dead_letters()] == [d]
        assert await admin_fetch(f'SELECT * FROM "{schema}".started_prerequisites') == []

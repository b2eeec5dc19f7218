"""Review of the cluster-wide limits on PostgreSQL (real server, own schema).

A concurrency token held by a worker counts as free when its holder's row is not
live in the claim statement's snapshot. Under READ COMMITTED, a token row that
another claim updated after this statement's snapshot is re-checked on its newest
version (FOR UPDATE), but the ``workers`` subquery still reads the old snapshot: a
worker that registered after it (a new or re-registered worker) does not exist
there, so its token looks like a dead worker's and is taken a second time.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import pytest
import trio
from pg_support import (
    admin_execute,
    admin_fetch,
    open_test_postgres_store,
    register_worker,
    require_postgres,
)

from trio_futurecalls import ClusterLimit, Lease, NewCall, Store, WorkerInfo


@pytest.fixture(autouse=True)
def _needs_postgres() -> None:
    require_postgres()


def now() -> datetime:
    return datetime.now(UTC)


def lease(owner: str) -> Lease:
    return Lease(owner=owner, expires_at=now() + timedelta(seconds=600), names=frozenset())


async def register(store: Store, owner: str) -> None:
    await register_worker(store, owner, timedelta(seconds=600))


def concurrency(name: str, tokens: int) -> ClusterLimit:
    return ClusterLimit(kind="concurrency", name=name, tokens=tokens, set_at=now())


async def test_a_token_taken_by_a_worker_newer_than_the_claims_snapshot_is_not_taken_again() -> (
    None
):
    async with open_test_postgres_store() as store:
        schema = store.schema
        await register(store, "holder")
        await register(store, "A")
        # Three classes whose 100,000 tokens are all held by a live worker: a claim
        # that wants them reads every token (legal data; it only makes worker A's
        # claim slow enough that B's whole claim fits in it).
        for name in ("slow1", "slow2", "slow3"):
            await store.set_cluster_limit(concurrency(name, 100_000))
        await admin_execute(
            f"UPDATE {schema}.cluster_tokens SET call_id = slot + 1, owner = 'holder' "
            f"WHERE name LIKE 'slow%'"
        )
        await admin_execute(f"VACUUM ANALYZE {schema}.cluster_tokens")
        await store.set_cluster_limit(concurrency("a", 1))
        # The race is timing: B's whole claim must fit inside A's statement. Each
        # attempt where it did must hold the limit; enough attempts make at least
        # one such (A's statement reads 300,000 tokens, B's claim a handful).
        raced = 0
        for attempt in range(8):
            await admin_execute(
                f"UPDATE {schema}.cluster_tokens SET call_id = NULL, owner = NULL, "
                f"holder_expires_at = NULL WHERE name = 'a'"
            )
            t = now()
            await store.schedule([NewCall(name="a", payload="null", due_at=t, scheduled_at=t)] * 2)
            done: dict[str, tuple[list[int], float]] = {}

            async def claim_a(done: dict[str, tuple[list[int], float]]) -> None:
                slots = {"slow1": 1, "slow2": 1, "slow3": 1, "a": 1}
                claimed = await store.claim(now(), slots, 10, lease("A"))
                held = [c.id for c in claimed.calls if c.id in claimed.holding]
                done["A"] = (held, time.monotonic())

            async def claim_b(worker: str, done: dict[str, tuple[list[int], float]]) -> None:
                # Once A's claim statement runs, a new worker registers and claims.
                with trio.fail_after(10):
                    while True:
                        active = await admin_fetch(
                            "SELECT 1 FROM pg_stat_activity WHERE application_name = $1 "
                            "AND state = 'active' AND query LIKE '%cluster_tokens%'",
                            f"fc-{schema}",
                        )
                        if active:
                            break
                        await trio.sleep(0.002)
                await register(store, worker)
                claimed = await store.claim(now(), {"a": 1}, 10, lease(worker))
                held = [c.id for c in claimed.calls if c.id in claimed.holding]
                done["B"] = (held, time.monotonic())

            async with trio.open_nursery() as nursery:
                nursery.start_soon(claim_a, done)
                nursery.start_soon(claim_b, f"B{attempt}", done)
            holders = [ids for ids, _ in done.values() if ids]
            # Limit 1: one of the two claims holds the token, never both.
            assert len(holders) == 1, (
                done,
                await admin_fetch(
                    f"SELECT slot, call_id, owner FROM {schema}.cluster_tokens WHERE name = 'a'"
                ),
            )
            if done["B"][1] < done["A"][1]:
                raced += 1
                if raced >= 2:
                    break
        assert raced >= 1, "B's claim never ended within A's: the race was not tried"


async def test_a_lowered_limit_that_is_full_does_not_make_claims_spin() -> None:
    """Tokens held beyond a lowered limit count until freed; a claim that finds the
    limit full that way must not answer "due now" (the dispatcher would claim every
    10 ms): a free token it did not take was not locked by anyone."""
    from pg_support import now as pg_now

    async with open_test_postgres_store() as store:
        t = pg_now()
        await store.register_worker(
            WorkerInfo(
                id="w1",
                host="h",
                pid=1,
                started_at=t,
                heartbeat_at=t,
                expires_at=t + timedelta(seconds=30),
            )
        )
        await store.set_cluster_limit(
            ClusterLimit(kind="concurrency", name="a", tokens=3, set_at=t)
        )
        ids = await store.schedule(
            [NewCall(name="a", payload="null", due_at=t, scheduled_at=t) for _ in range(5)]
        )
        lease = Lease(owner="w1", expires_at=t + timedelta(seconds=60), names=frozenset())
        taken = await store.claim(t, {"a": 5}, 5, lease)
        assert [c.id for c in taken.calls] == ids[:3]
        await store.set_cluster_limit(
            ClusterLimit(kind="concurrency", name="a", tokens=2, set_at=t)
        )
        await store.free_tokens("w1", [ids[0]])  # slot 0 free; slots 1 and 2 still held
        again = await store.claim(t, {"a": 5}, 5, lease)
        assert again.calls == []
        assert again.next_due is not None
        assert again.next_due > t  # the holders' expiry, not "now"

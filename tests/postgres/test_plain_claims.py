"""The plain claims (claim_delete_plain, claim_lease_plain): a claim of names under no
cluster-wide limit runs without the parts that look for limits, takes exactly what
the full statement would, and hands over to the full statement as soon as a limit is
stored for a name it asks for (in the same claim: nothing is taken twice or lost)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from pg_support import (
    admin_fetch,
    now,
    open_test_postgres_store,
    pg_dsn,
    recording_claims,
    register_worker,
)

from trio_futurecalls import ClusterLimit, Lease, NewCall
from trio_futurecalls.stores.postgres import PostgresStore, open_postgres_store


def calls() -> list[NewCall]:
    """Rows of every kind a claim chooses between: names, priorities, due times (some
    in the future), one waiting for a prerequisite."""
    t = now() - timedelta(seconds=30)
    rows = []
    for k in range(24):
        rows.append(
            NewCall(
                name=("a", "b", "c")[k % 3],
                payload=f'{{"k":{k}}}',
                due_at=t + timedelta(seconds=(k * 7) % 50),
                identifier=None if k % 4 else f"id-{k}",
                scheduled_at=t,
                priority=(k * 5) % 3 - 1,
            )
        )
    return rows


def lease(owner: str = "w1", names: frozenset[str] = frozenset()) -> Lease:
    return Lease(owner=owner, expires_at=now() + timedelta(minutes=5), names=names)


@pytest.mark.parametrize("leased", [False, True])
async def test_the_plain_claim_takes_what_the_full_one_takes(leased: bool) -> None:
    async with open_test_postgres_store() as plain, open_test_postgres_store() as full:
        full._cluster_limits_seen = True  # as after a limit was seen: full statements
        rows, t = calls(), now()
        for store in (plain, full):
            ids = await store.schedule(rows)
            # One waits for a prerequisite (never claimed while it waits)...
            waits = NewCall(name="a", payload="0", due_at=t, scheduled_at=t, after=(ids[0],))
            await store.schedule([waits])
            # ...and "c" is paused.
            await store.pause("c", t)
        used_plain, used_full = recording_claims(plain), recording_claims(full)
        names = frozenset("abc") if leased else frozenset()
        at, held = now(), lease(names=names)
        for slots, limit in [({"a": 2, "b": 3, "c": 5}, 4), ({"a": 9, "b": 1}, 9), ({"b": 9}, 3)]:
            got = [await store.claim(at, slots, limit, held) for store in (plain, full)]
            assert got[0].calls == got[1].calls != []
            assert got[0].next_due == got[1].next_due
            assert got[0].holding == got[1].holding == frozenset()
        kind = "lease" if leased else "delete"
        assert used_plain == [f"claim_{kind}_plain"] * 3
        assert used_full == [f"claim_{kind}"] * 3
        assert await plain.pending_counts(at) == await full.pending_counts(at)


async def register(store: PostgresStore, worker: str) -> None:
    await register_worker(store, worker, timedelta(hours=1))


@pytest.mark.parametrize("limited", ["a", "*"])
async def test_a_limit_stored_elsewhere_hands_the_claim_to_the_full_statement(
    limited: str,
) -> None:
    async with open_test_postgres_store() as store:
        await register(store, "w1")
        ids = await store.schedule(
            [NewCall(name="a", payload="null", due_at=now(), scheduled_at=now())] * 6
        )
        used = recording_claims(store)
        (first,) = (await store.claim(now(), {"a": 1}, 1, lease())).calls
        assert first.id == ids[0]
        # Another process stores a limit of 2 (not through this store).
        async with open_postgres_store(
            pg_dsn(), schema=store.schema, application_name=f"fc-{store.schema}:other"
        ) as other:
            await other.set_cluster_limit(
                ClusterLimit(kind="concurrency", name=limited, tokens=2, set_at=now())
            )
        claim = await store.claim(now(), {"a": 5}, 5, lease())
        # The plain claim saw it in its own snapshot and took nothing; the full one
        # took 2 (the limit's tokens), each holding a token.
        assert [c.id for c in claim.calls] == ids[1:3]
        assert claim.holding == frozenset(ids[1:3])
        assert used == ["claim_delete_plain", "claim_delete_plain", "claim_delete"]
        # The rest stayed, none taken twice; claims stay on the full statement.
        assert (await store.claim(now(), {"a": 5}, 5, lease())).calls == []
        assert used[3:] == ["claim_delete"]
        left = await admin_fetch(f'SELECT id FROM "{store.schema}".calls ORDER BY id')
        assert [r[0] for r in left] == ids[3:]


async def test_a_limit_on_another_name_keeps_the_plain_claim() -> None:
    async with open_test_postgres_store() as store:
        await register(store, "w1")
        ids = await store.schedule(
            [NewCall(name="a", payload="null", due_at=now(), scheduled_at=now())] * 3
        )
        await store.set_cluster_limit(
            ClusterLimit(kind="concurrency", name="other", tokens=1, set_at=now())
        )
        used = recording_claims(store)
        claim = await store.claim(now(), {"a": 5}, 5, lease())
        assert [c.id for c in claim.calls] == ids
        assert used == ["claim_delete_plain"]

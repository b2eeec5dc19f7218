"""Keyed batches crossing "ignore" and "replace" on the same keys never fail (they
deadlocked before the store ran such a batch again; found by a review)."""

from __future__ import annotations

import pytest
import trio
from pg_support import now, open_test_postgres_store, require_postgres

from trio_futurecalls import NewCall, OnConflict, PendingQuery


@pytest.fixture(autouse=True)
def _needs_postgres() -> None:
    require_postgres()


def keyed(key: str, on_conflict: OnConflict) -> NewCall:
    t = now()
    return NewCall(
        name="pg.alpha",
        payload="null",
        due_at=t,
        scheduled_at=t,
        unique_key=key,
        on_conflict=on_conflict,
    )


async def test_crossing_keyed_batches_never_fail() -> None:
    failures: list[BaseException] = []
    async with open_test_postgres_store(max_pool_size=10) as store:
        for round_ in range(6):
            k1, k2 = f"a{round_}", f"b{round_}"

            async def batch(calls: list[NewCall]) -> None:
                try:
                    await store.schedule(calls)
                except Exception as exc:
                    failures.append(exc)

            async with trio.open_nursery() as nursery:
                a = [keyed(f"{k1}-{i}", "ignore") for i in range(20)]
                a += [keyed(f"{k2}-{i}", "replace") for i in range(20)]
                b = [keyed(f"{k2}-{i}", "ignore") for i in range(20)]
                b += [keyed(f"{k1}-{i}", "replace") for i in range(20)]
                for _ in range(2):
                    nursery.start_soon(batch, a)
                    nursery.start_soon(batch, b)
        pending = await store.pending(PendingQuery(limit=10000))
    assert not failures, (len(failures), repr(failures[0]))
    assert len(pending) == 6 * 40  # 40 keys per round

"""Review of dependencies on every store (issue 12): the paths the first conformance
tests left out. The ``store`` fixture (tests/conftest.py) runs each test once per
adapter."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from trio_futurecalls import InvalidArgumentError, NewCall, PendingQuery, Store
from trio_futurecalls._recurring import build_schedule
from trio_futurecalls._validate_dependencies import MAX_PREREQUISITES
from trio_futurecalls.stores._dependencies import MAX_REASON_LENGTH

T0 = datetime(2030, 1, 1, tzinfo=UTC)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def new(name: str = "a", due: float = 0.0, **more: Any) -> NewCall:
    return NewCall(name=name, payload="null", due_at=at(due), scheduled_at=T0, **more)


async def test_a_recurring_run_dropped_by_put_back_ends_its_dependents(store: Store) -> None:
    """An at-most-once run of a recurring schedule, with a dependent, is claimed; its
    schedule is cancelled while it runs; its retry (or hand-back) is then dropped by
    put_back, since its schedule is gone. Its dependent must not wait forever for a
    call that will never run again: it becomes a dead letter, as when the schedule's
    pending runs are cancelled."""
    schedule = build_schedule(
        "job",
        {"p": 1},
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
    (call,) = (await store.claim(at(1), {"job": 1}, 1)).calls
    assert call.dependents
    assert await store.cancel_recurring("k")
    assert await store.put_back([call], None) == 0  # dropped: its schedule is gone
    waiting = [c for c in await store.pending(PendingQuery()) if c.waiting_for]
    assert waiting == []  # (it waits for run.id, which nothing will ever end)
    (dead,) = await store.dead_letters()
    assert dead.call_id == dependent


async def test_after_and_after_batch_together_are_limited(store: Store) -> None:
    """MAX_PREREQUISITES bounds the prerequisites of one call, ``after`` and
    ``after_batch`` together: the memory store stored 1001, PostgreSQL failed with a
    StoreError (CHECK calls_waiting_range) instead of an InvalidArgumentError."""
    batch = [new("a") for _ in range(MAX_PREREQUISITES + 1)]
    batch.append(new("b", after_batch=tuple(range(MAX_PREREQUISITES + 1))))
    with pytest.raises(InvalidArgumentError):
        await store.schedule(batch)
    (root,) = await store.schedule([new("a")])
    batch = [new("a") for _ in range(MAX_PREREQUISITES)]
    batch.append(new("b", after=(root,), after_batch=tuple(range(MAX_PREREQUISITES))))
    with pytest.raises(InvalidArgumentError):
        await store.schedule(batch)
    assert [c.id for c in await store.pending(PendingQuery())] == [root]


async def test_cancelling_dates_the_dependents_dead_letters_now(store: Store) -> None:
    """The memory store dated them with the cancelled call's ``scheduled_at`` (here in
    2030); ``cancel_identifier`` and PostgreSQL date them when it happened."""
    (root,) = await store.schedule([new("a")])
    await store.schedule([new("b", after=[root])])
    assert await store.cancel(root)
    (dead,) = await store.dead_letters()
    assert abs(dead.failed_at - datetime.now(UTC)) < timedelta(minutes=5)


async def test_a_deep_chain_keeps_the_root_cause_in_every_reason(store: Store) -> None:
    """Each dependent's reason nests its prerequisite's; past MAX_REASON_LENGTH the
    end was cut, so from about 60 steps down the reason no longer said what failed."""
    depth = 200
    ids = await store.schedule([new("a"), *(new("b", after_batch=(k,)) for k in range(depth))])
    assert await store.cancel(ids[0])
    dead = {d.call_id: d.error for d in await store.dead_letters()}
    assert len(dead) == depth
    deepest = dead[ids[-1]]
    assert len(deepest) <= MAX_REASON_LENGTH
    assert deepest.startswith(f"prerequisite {ids[-2]} did not run: ")
    assert deepest.endswith(f"prerequisite {ids[0]} failed: it was cancelled")

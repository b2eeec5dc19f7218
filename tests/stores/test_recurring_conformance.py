"""Recurring schedules in every store: the part of the conformance suite for them.

The ``store`` fixture (tests/conftest.py) runs each test once per adapter.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import attrs
import pytest
import trio

from trio_futurecalls import (
    InvalidArgumentError,
    Lease,
    NewCall,
    PendingQuery,
    RecurringInfo,
    Store,
    schedule_recurring,
)
from trio_futurecalls._recurring import build_schedule

T0 = datetime(2030, 1, 1, tzinfo=UTC)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def spec(key: str = "k", now: datetime = T0, **kwargs: Any) -> RecurringInfo:
    args: dict[str, Any] = {
        "cron": None,
        "every": 10,
        "timezone": "UTC",
        "start": T0,
        "end": None,
        "misfire": "once",
        "overlap": "allow",
        "identifier": "ident",
    }
    args.update(kwargs)
    return build_schedule("job", {"p": 1}, key=key, now=now, **args)


async def test_put_list_and_cancel(store: Store) -> None:
    stored = await store.put_recurring(spec("b"), True)
    assert stored == spec("b")
    await store.put_recurring(spec("a", cron="*/5 * * * * *", every=None), True)
    listed = await store.recurring_schedules()
    assert [s.key for s in listed] == ["a", "b"]
    assert listed[1] == stored  # every field survives the round trip
    assert listed[0].cron == "*/5 * * * * *"
    assert await store.recurring_schedules("b") == [stored]
    assert await store.recurring_schedules("nope") == []
    assert await store.cancel_recurring("b") is True
    assert await store.cancel_recurring("b") is False
    assert [s.key for s in await store.recurring_schedules()] == ["a"]


async def test_registering_again_keeps_or_replaces(store: Store) -> None:
    await store.put_recurring(spec(), True)
    fired = await store.fire_recurring(at(0), 10)
    assert fired.runs == 1
    again = await store.put_recurring(spec(now=at(5)), True)
    assert (again.runs, again.next_tick) == (1, at(10))  # same definition: untouched
    kept = await store.put_recurring(spec(every=60, now=at(5)), False)
    assert kept.every == 10
    replaced = await store.put_recurring(spec(every=60, now=at(5)), True)
    assert (replaced.every, replaced.runs, replaced.next_tick) == (60, 1, at(60))
    assert await store.recurring_schedules() == [replaced]


async def test_fire_creates_runs_and_stores_the_next_tick(store: Store) -> None:
    await store.put_recurring(spec(), True)
    await store.put_recurring(spec("later", start=at(100)), True)
    heard: list[datetime] = []
    store.add_listener(heard.append)
    assert (await store.fire_recurring(at(-1), 10)).runs == 0
    fired = await store.fire_recurring(at(25), 10)
    assert (fired.runs, fired.next_tick, fired.contended) == (1, at(30), False)
    assert heard
    assert min(heard) == at(20)
    (run,) = await store.pending(PendingQuery())
    assert (run.name, run.payload, run.identifier) == ("job", '{"p":1}', "ident")
    assert (run.recurring_key, run.tick_at, run.due_at, run.scheduled_at) == (
        "k",
        at(20),
        at(20),
        at(25),
    )
    info = (await store.recurring_schedules("k"))[0]
    assert (info.next_tick, info.last_tick, info.last_call_id) == (at(30), at(20), run.id)
    assert (info.runs, info.skipped_misfire) == (1, 2)  # ticks 0 and 10 folded into 20
    # A claim hands the run over with its key and tick.
    claim = await store.claim(at(26), {"job": 5}, 5)
    assert [(c.recurring_key, c.tick_at) for c in claim.calls] == [("k", at(20))]


async def test_concurrent_fires_hand_out_each_tick_once(store: Store) -> None:
    for n in range(5):
        await store.put_recurring(spec(f"k{n}", misfire="all"), True)
    totals: list[int] = []

    async def fire() -> None:
        totals.append((await store.fire_recurring(at(35), 100)).runs)

    async with trio.open_nursery() as nursery:
        for _ in range(6):
            nursery.start_soon(fire)
    assert sum(totals) == 5 * 4  # ticks 0, 10, 20, 30 of each schedule, once
    runs = await store.pending(PendingQuery())
    assert sorted((r.recurring_key, r.tick_at) for r in runs) == sorted(
        (f"k{n}", at(t)) for n in range(5) for t in (0, 10, 20, 30)
    )


async def test_fire_respects_the_batch_limit(store: Store) -> None:
    for n in range(3):
        await store.put_recurring(spec(f"k{n}"), True)
    first = await store.fire_recurring(at(0), 2)
    assert (first.runs, first.next_tick) == (2, at(0))  # more are due: fire again now
    second = await store.fire_recurring(at(0), 2)
    assert (second.runs, second.next_tick) == (1, at(10))


async def test_overlap_skip_sees_a_pending_or_leased_run(store: Store) -> None:
    await store.put_recurring(spec(overlap="skip"), True)
    assert (await store.fire_recurring(at(0), 10)).runs == 1
    assert (await store.fire_recurring(at(10), 10)).runs == 0  # run 0 is still pending
    lease = Lease(owner="w", expires_at=at(100), names=frozenset({"job"}))
    (running,) = (await store.claim(at(11), {"job": 1}, 1, lease)).calls
    assert (await store.fire_recurring(at(20), 10)).runs == 0  # run 0 is running
    assert await store.complete("w", running.id)
    assert (await store.fire_recurring(at(30), 10)).runs == 1
    (info,) = await store.recurring_schedules()
    assert (info.runs, info.skipped_overlap) == (2, 2)


async def test_cancel_drops_pending_runs_but_not_running_ones(store: Store) -> None:
    await store.put_recurring(spec(misfire="all"), True)
    await store.fire_recurring(at(10), 10)  # ticks 0 and 10
    lease = Lease(owner="w", expires_at=at(100), names=frozenset({"job"}))
    (running,) = (await store.claim(at(10), {"job": 1}, 1, lease)).calls
    assert await store.cancel_recurring("k")
    assert await store.pending(PendingQuery()) == []
    assert await store.complete("w", running.id)  # the running one was left alone
    assert (await store.fire_recurring(at(100), 10)).runs == 0


async def test_a_run_put_back_keeps_its_schedule_and_tick(store: Store) -> None:
    await store.put_recurring(spec(), True)
    await store.fire_recurring(at(0), 10)
    (call,) = (await store.claim(at(0), {"job": 1}, 1)).calls  # deleted (at-most-once)
    assert await store.put_back([attrs.evolve(call, due_at=at(5))], None) == 1
    (back,) = await store.pending(PendingQuery())
    assert (back.id, back.recurring_key, back.tick_at) == (call.id, "k", at(0))


async def test_a_finished_schedule_is_listed_and_never_fires(store: Store) -> None:
    await store.put_recurring(spec(end=at(10)), True)
    assert (await store.fire_recurring(at(10), 10)).runs == 1  # ticks 0 and 10: one run
    (info,) = await store.recurring_schedules()
    assert info.next_tick is None
    fired = await store.fire_recurring(at(1000), 10)
    assert (fired.runs, fired.next_tick) == (0, None)


async def test_the_store_level_function_registers_by_name(store: Store) -> None:
    info = await schedule_recurring(store, "job", [1, 2], key="k", every=5, clock=lambda: T0)
    assert (info.name, info.payload, info.next_tick) == ("job", "[1,2]", at(5))
    assert await store.recurring_schedules() == [info]


@pytest.mark.parametrize(
    ("change", "match"),
    [
        ({"key": ""}, "key"),
        ({"name": "bad name"}, "call name"),
        ({"cron": "not cron", "every": None}, "invalid cron"),
        ({"every": -1.0}, "every must be > 0"),
        ({"cron": "* * * * *"}, "exactly one of cron and every"),
        ({"timezone": "Nowhere/Atlantis"}, "unknown time zone"),
        ({"misfire": "never"}, "misfire"),
        ({"runs": -1}, "runs"),
        ({"anchor": datetime(2030, 1, 1)}, "aware|naive"),
    ],
)
async def test_bad_schedules_are_refused_and_change_nothing(
    store: Store, change: dict[str, Any], match: str
) -> None:
    with pytest.raises(InvalidArgumentError, match=match):
        await store.put_recurring(attrs.evolve(spec(), **change), True)
    assert await store.recurring_schedules() == []


async def test_bad_recurring_arguments(store: Store) -> None:
    with pytest.raises(InvalidArgumentError):
        await store.put_recurring(spec(), "yes")  # type: ignore[arg-type]
    with pytest.raises(InvalidArgumentError):
        await store.cancel_recurring(7)  # type: ignore[arg-type]
    with pytest.raises(InvalidArgumentError):
        await store.fire_recurring(datetime(2030, 1, 1), 10)
    with pytest.raises(InvalidArgumentError):
        await store.fire_recurring(T0, 0)


async def test_a_run_handed_back_after_its_schedule_was_cancelled_is_dropped(
    store: Store,
) -> None:
    # (Found by a review: the unstarted run came back to life.)
    await store.put_recurring(spec(), True)
    assert (await store.fire_recurring(at(0), 10)).runs == 1
    (run,) = (await store.claim(at(0), {"job": 1}, 1)).calls  # claimed, not started
    assert await store.cancel_recurring("k")
    assert await store.put_back([run], None) == 0  # shutdown: it would go back
    assert await store.pending(PendingQuery(now=at(0))) == []


async def test_a_mixed_hand_built_batch_keeps_every_column(store: Store) -> None:
    keyed = NewCall(name="job", payload="1", due_at=T0, scheduled_at=T0, unique_key="u")
    run = NewCall(
        name="job", payload="2", due_at=T0, scheduled_at=T0, recurring_key="r", tick_at=at(-5)
    )
    await store.schedule([keyed, run])
    got = {c.payload: c for c in await store.pending(PendingQuery())}
    assert (got["1"].unique_key, got["1"].recurring_key) == ("u", None)
    assert (got["2"].unique_key, got["2"].recurring_key, got["2"].tick_at) == (None, "r", at(-5))
    with pytest.raises(InvalidArgumentError, match="not both"):
        await store.schedule([attrs.evolve(run, unique_key="u2")])

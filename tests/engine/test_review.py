"""A hostile review of the engine: each test pins one promise of the design.

The tests in the first part reproduce bugs the review found (each failed before its
fix); the others pin promises that held under attack. All run on the memory store
(or a subclass injecting a fault) under the autojump clock.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any, ClassVar

import pytest
import trio
import trio.testing
from helpers import BOTH, row
from trio.testing import MockClock

from trio_futurecalls import (
    Claim,
    Delivery,
    FixedBackoff,
    FutureCall,
    Lease,
    MemoryStore,
    PendingQuery,
    StoredCall,
    StoreError,
    open_scheduler,
    run_due_calls,
)
from trio_futurecalls._writes import CLEANUP_TIMEOUT


class Probe(FutureCall):
    """Records every run: (name, call id, attempt, start, end, how it ended).

    The payload is ``{"sleep": s}`` (default 0) and may ask it to ``"fail"``.
    """

    name = "probe"
    max_concurrent = None
    runs: ClassVar[list[dict[str, Any]]] = []

    async def invoke(self, session: Any, payload: Any) -> None:
        run = {
            "name": self.name,
            "id": self.info.id,
            "attempt": self.info.attempt,
            "start": trio.current_time(),
            "end": None,
            "how": "running",
        }
        Probe.runs.append(run)
        try:
            await trio.sleep(payload.get("sleep", 0))
            if payload.get("fail"):
                raise RuntimeError("failed on purpose")
        except trio.Cancelled:
            run["how"] = "cancelled"
            raise
        except Exception:
            run["how"] = "failed"
            raise
        else:
            run["how"] = "succeeded"
        finally:
            run["end"] = trio.current_time()


def probe(name: str = "probe", **attrs: Any) -> type[FutureCall]:
    """A Probe class named ``name`` (the run log is reset by :func:`fresh`)."""
    return type(f"Probe_{name.replace('-', '_')}", (Probe,), {"name": name, **attrs})


@pytest.fixture(autouse=True)
def fresh() -> None:
    Probe.runs = []


def running_now() -> list[dict[str, Any]]:
    return [r for r in Probe.runs if r["how"] == "running"]


async def schedule_rows(
    store: MemoryStore, name: str, n: int, due: datetime, payload: str = "{}"
) -> list[int]:
    return await store.schedule([row(name, payload, due) for _ in range(n)])


# ====================================================================================
# Bugs found in review (each of these failed before its fix)
# ====================================================================================


async def test_due_calls_beyond_one_claim_batch_start_at_once(
    autojump_clock: MockClock, clock: Callable[[], datetime]
) -> None:
    wide = probe("wide")
    store = MemoryStore()
    await schedule_rows(store, "wide", 600, clock(), '{"sleep": 100}')
    async with open_scheduler(store, [wide], clock=clock, max_concurrent=1000) as s:
        await trio.sleep(1)
        # 600 due calls, 1000 free global slots, an unlimited class: all must run.
        started = s.statistics().total.started
        await s.shutdown(grace_period=0)
    assert started == 600


async def test_due_calls_beyond_one_claim_batch_start_after_the_first_batch(
    autojump_clock: MockClock, clock: Callable[[], datetime]
) -> None:
    wide = probe("wide")
    store = MemoryStore()
    await schedule_rows(store, "wide", 600, clock(), '{"sleep": 10}')
    async with open_scheduler(store, [wide], clock=clock, max_concurrent=None) as s:
        await trio.sleep(3600)
        stats = s.statistics().total
        left = await store.pending(PendingQuery())
    assert (stats.started, len(left)) == (600, 0)


class OverClaims(MemoryStore):
    """The first claim hands over one call more than the slots it was asked for (a
    store with a bug, or a limit lowered while the claim was in flight)."""

    def __init__(self) -> None:
        super().__init__()
        self.tricked = False

    async def claim(
        self, now: datetime, slots: Mapping[str, int], limit: int, lease: Lease | None = None
    ) -> Claim:
        if not self.tricked:
            self.tricked = True
            return await super().claim(now, {k: v + 1 for k, v in slots.items()}, limit + 1, lease)
        return await super().claim(now, slots, limit, lease)


@pytest.mark.parametrize("delivery", BOTH)
async def test_a_claim_with_more_calls_than_slots_loses_nothing(
    autojump_clock: MockClock, clock: Callable[[], datetime], delivery: Delivery
) -> None:
    serial = probe("serial", max_concurrent=1, delivery=delivery)
    store = OverClaims()
    ids = await schedule_rows(store, "serial", 3, clock())
    async with open_scheduler(store, [serial], clock=clock):
        await trio.sleep(60)
    assert sorted(r["id"] for r in Probe.runs) == ids
    assert max(r["attempt"] for r in Probe.runs) == 1


class LockedRows(MemoryStore):
    """Until ``unlock_at`` (Trio time) claims take nothing but say the rows are due:
    another worker holds them locked mid-claim (PostgreSQL ``SKIP LOCKED``)."""

    def __init__(self, unlock_at: float) -> None:
        super().__init__()
        self.unlock_at = unlock_at
        self.claims = 0

    async def claim(
        self, now: datetime, slots: Mapping[str, int], limit: int, lease: Lease | None = None
    ) -> Claim:
        self.claims += 1
        if trio.current_time() < self.unlock_at:
            return Claim([], self._next_due(slots.keys()))
        return await super().claim(now, slots, limit, lease)


async def test_a_locked_due_row_is_looked_at_again_shortly(
    autojump_clock: MockClock, clock: Callable[[], datetime]
) -> None:
    # The long-running scheduler copes: it re-checks after MIN_RECHECK.
    one = probe("one")
    t0 = trio.current_time()
    store = LockedRows(unlock_at=t0 + 1)
    await schedule_rows(store, "one", 1, clock())
    async with open_scheduler(store, [one], clock=clock):
        await trio.sleep(5)
    assert [r["start"] - t0 for r in Probe.runs] == [pytest.approx(1, abs=0.05)]


async def test_run_due_calls_does_not_hang_on_a_row_locked_elsewhere(
    autojump_clock: MockClock, clock: Callable[[], datetime]
) -> None:
    one = probe("one")
    store = LockedRows(unlock_at=trio.current_time() + 1)
    await schedule_rows(store, "one", 1, clock())
    with trio.fail_after(600):
        await run_due_calls(store, [one], clock=clock)


async def test_run_due_calls_with_no_classes_returns(
    autojump_clock: MockClock, clock: Callable[[], datetime]
) -> None:
    with trio.fail_after(600):
        await run_due_calls(MemoryStore(), [], clock=clock)


class HangingRenewals(MemoryStore):
    """Renewals never answer (their UPDATE waits on a row lock), claims still work."""

    async def renew(self, owner: str, call_ids: Any, expires_at: datetime) -> set[int]:
        await trio.sleep_forever()
        raise AssertionError("unreachable")


async def test_a_call_claimed_during_a_hung_renewal_is_stopped_before_its_lease_ends(
    autojump_clock: MockClock, clock: Callable[[], datetime]
) -> None:
    leased = probe("leased", delivery=Delivery.AT_LEAST_ONCE)
    store = HangingRenewals()
    t0 = trio.current_time()
    start = clock()
    # The keeper looks at 20, 40, ... A (claimed at 19.5, lease until 79.5) makes the
    # renewal at 20 wait until 69.5. B is claimed at 25: its lease ends at 85.
    await store.schedule(
        [
            row("leased", '{"sleep": 300}', start + timedelta(seconds=19.5)),
            row("leased", '{"sleep": 300}', start + timedelta(seconds=25)),
        ]
    )
    async with open_scheduler(
        store, [leased], clock=clock, lease_duration=60, lease_renew_interval=20
    ) as s:
        await trio.sleep(200)
        await s.shutdown(grace_period=0)
    first_b = next(r for r in Probe.runs if r["start"] - t0 == pytest.approx(25))
    # B's first run must have been stopped before its lease ran out (at 85); else
    # another worker (or this one) runs B at the same time.
    assert first_b["end"] - t0 < 85
    overlapping = [
        r
        for r in Probe.runs
        if r["id"] == first_b["id"] and r is not first_b and r["start"] < first_b["end"]
    ]
    assert overlapping == []


class CheckpointingRenewals(MemoryStore):
    """A healthy store whose renewal does I/O (checkpoints), as every real store does."""

    renewals = 0

    async def renew(self, owner: str, call_ids: Any, expires_at: datetime) -> set[int]:
        await trio.lowlevel.checkpoint()
        self.renewals += 1
        return await super().renew(owner, call_ids, expires_at)


async def test_a_long_interval_that_options_accept_does_not_cancel_healthy_calls(
    autojump_clock: MockClock, clock: Callable[[], datetime]
) -> None:
    leased = probe("leased", delivery=Delivery.AT_LEAST_ONCE)
    store = CheckpointingRenewals()
    await schedule_rows(store, "leased", 1, clock(), '{"sleep": 100}')
    async with open_scheduler(
        store, [leased], clock=clock, lease_duration=30, lease_renew_interval=20
    ) as s:
        await trio.sleep(200)
        stats = s.statistics().classes["leased"]
    assert [r["how"] for r in Probe.runs] == ["succeeded"]
    assert (stats.succeeded, stats.cancelled) == (1, 0)


class SlowSessions(MemoryStore):
    """Opening a session takes ``seconds`` (a pool waiting for a free connection);
    ``put_back`` takes ``put_back_seconds``."""

    def __init__(self, seconds: float, put_back_seconds: float = 0) -> None:
        super().__init__()
        self.seconds = seconds
        self.put_back_seconds = put_back_seconds

    def open_session(self, call: StoredCall) -> Any:
        parent = super().open_session(call)
        seconds = self.seconds

        class Slow:
            async def __aenter__(self) -> Any:
                await trio.sleep(seconds)
                return await parent.__aenter__()

            async def __aexit__(self, *exc: Any) -> None:
                await parent.__aexit__(*exc)

        return Slow()

    async def put_back(self, calls: Sequence[StoredCall], owner: str | None) -> int:
        await trio.sleep(self.put_back_seconds)
        return await super().put_back(calls, owner)


async def test_a_call_handed_back_before_invoke_is_not_counted_as_started(
    autojump_clock: MockClock, clock: Callable[[], datetime]
) -> None:
    one = probe("one")
    store = SlowSessions(10)
    await schedule_rows(store, "one", 1, clock())
    async with open_scheduler(store, [one], clock=clock, grace_period=0) as s:
        await trio.sleep(1)
    assert Probe.runs == []
    assert len(await store.pending(PendingQuery())) == 1  # handed back: held
    stats = s.statistics().classes["one"]
    assert (stats.started, stats.cancelled, stats.wait.count) == (0, 0, 0)


async def test_statistics_add_up_while_an_unstarted_call_is_handed_back(
    autojump_clock: MockClock, clock: Callable[[], datetime]
) -> None:
    one = probe("one")
    store = SlowSessions(10, put_back_seconds=5)
    await schedule_rows(store, "one", 1, clock())
    async with trio.open_nursery() as nursery, open_scheduler(store, [one], clock=clock) as s:
        await trio.sleep(1)  # waiting for its session
        nursery.start_soon(s.shutdown, 0)
        await trio.sleep(1)  # the hand-back write is in flight
        stats = s.statistics()
    cls = stats.classes["one"]
    assert stats.total.running == sum(c.running for c in stats.classes.values())
    assert cls.started == cls.finished + cls.running


class CardDeclinedError(Exception):
    pass


class Charge(FutureCall):
    """Fails with a no_retry_on error raised in a child task (so, in a group)."""

    name = "charge"
    max_attempts = 5
    retry_backoff = FixedBackoff(1)
    no_retry_on = (CardDeclinedError,)
    attempts: ClassVar[list[int]] = []

    async def invoke(self, session: Any, payload: Any) -> None:
        Charge.attempts.append(self.info.attempt)

        async def decline() -> None:
            raise CardDeclinedError("declined")

        async with trio.open_nursery() as nursery:
            nursery.start_soon(decline)


async def test_a_no_retry_error_inside_a_group_fails_at_once(
    autojump_clock: MockClock, clock: Callable[[], datetime]
) -> None:
    Charge.attempts = []
    store = MemoryStore()
    await schedule_rows(store, "charge", 1, clock())
    async with open_scheduler(store, [Charge], clock=clock):
        await trio.sleep(60)
    assert Charge.attempts == [1]


class SlowClaimsFailingPutBack(MemoryStore):
    """Claims take 5 s (shielded); handing calls back fails for good."""

    async def claim(
        self, now: datetime, slots: Mapping[str, int], limit: int, lease: Lease | None = None
    ) -> Claim:
        with trio.CancelScope(shield=True):
            await trio.sleep(5)
        return await super().claim(now, slots, limit, lease)

    async def put_back(self, calls: Sequence[StoredCall], owner: str | None) -> int:
        raise StoreError("constraint violated")


async def test_a_mixed_claim_that_cannot_be_handed_back_logs_every_lost_call(
    autojump_clock: MockClock, clock: Callable[[], datetime], caplog: pytest.LogCaptureFixture
) -> None:
    once = probe("once", delivery=Delivery.AT_MOST_ONCE)
    leased = probe("leased", delivery=Delivery.AT_LEAST_ONCE)
    store = SlowClaimsFailingPutBack()
    (once_id,) = await schedule_rows(store, "once", 1, clock())
    await schedule_rows(store, "leased", 1, clock())
    async with open_scheduler(store, [once, leased], clock=clock, grace_period=0):
        await trio.sleep(1)  # the claim answers at 5, after shutdown began
    assert Probe.runs == []
    # The at-most-once row is gone from the store: only the log has it now.
    assert [c.name for c in await store.pending(PendingQuery())] == []
    critical = [r for r in caplog.records if r.levelname == "CRITICAL"]
    assert [getattr(r, "call_id", None) for r in critical] == [once_id]


async def test_an_unknown_name_left_leased_by_a_dead_worker_is_reported(
    autojump_clock: MockClock, clock: Callable[[], datetime], caplog: pytest.LogCaptureFixture
) -> None:
    store = MemoryStore()
    now = clock()
    (old_id,) = await schedule_rows(store, "old", 1, now)
    # A worker of the old deployment claims it (leased for 30 s), then dies.
    dead = Lease(
        owner="dead-worker", expires_at=now + timedelta(seconds=30), names=frozenset({"old"})
    )
    (claimed,) = (await store.claim(now, {"old": 1}, 1, dead)).calls
    assert claimed.id == old_id
    await trio.sleep(60)  # the lease has expired: the row is anyone's
    new = probe("new")
    async with open_scheduler(store, [new], clock=clock) as s:
        await trio.sleep(1)
        assert [c.id for c in await s.unknown_calls()] == [old_id]
        assert await s.move_unknown_to_dead_letters() == 1
    assert any("'old'" in r.getMessage() for r in caplog.records if r.levelname == "ERROR")


# ====================================================================================
# Promises that held
# ====================================================================================


class SlowClaims(MemoryStore):
    """Claims take ``seconds`` and cannot be interrupted (the SQL stores shield theirs)."""

    def __init__(self, seconds: float) -> None:
        super().__init__()
        self.seconds = seconds
        self.in_flight = False

    async def claim(
        self, now: datetime, slots: Mapping[str, int], limit: int, lease: Lease | None = None
    ) -> Claim:
        self.in_flight = True
        try:
            with trio.CancelScope(shield=True):
                await trio.sleep(self.seconds)
            return await super().claim(now, slots, limit, lease)
        finally:
            self.in_flight = False


@pytest.mark.parametrize("delivery", BOTH)
async def test_outer_cancellation_during_a_claim_loses_nothing(
    autojump_clock: MockClock, clock: Callable[[], datetime], delivery: Delivery
) -> None:
    one = probe("one", delivery=delivery)
    store = SlowClaims(5)
    ids = await schedule_rows(store, "one", 4, clock())
    with trio.move_on_after(1) as outer:
        async with open_scheduler(store, [one], clock=clock, grace_period=60):
            await trio.sleep_forever()
    assert outer.cancelled_caught
    assert Probe.runs == []
    pending = await store.pending(PendingQuery())
    assert [(c.id, c.attempts) for c in pending] == [(i, 0) for i in ids]
    assert store._owners == {}


@pytest.mark.parametrize("delivery", BOTH)
async def test_outer_cancellation_while_calls_wait_for_sessions_loses_nothing(
    autojump_clock: MockClock, clock: Callable[[], datetime], delivery: Delivery
) -> None:
    one = probe("one", delivery=delivery)
    store = SlowSessions(10)
    ids = await schedule_rows(store, "one", 3, clock())
    with trio.move_on_after(1):
        async with open_scheduler(store, [one], clock=clock, grace_period=60):
            await trio.sleep_forever()
    assert Probe.runs == []
    pending = await store.pending(PendingQuery())
    assert [(c.id, c.attempts) for c in pending] == [(i, 0) for i in ids]
    assert not store.open_sessions


@pytest.mark.parametrize("delivery", BOTH)
@pytest.mark.parametrize("when", [0.0, 0.5, 1.0, 1.5, 2.0, 2.5])
async def test_shutdown_at_any_moment_of_a_slow_claim_loses_nothing(
    autojump_clock: MockClock, clock: Callable[[], datetime], delivery: Delivery, when: float
) -> None:
    # Calls due over time, claims that take 1 s, shutdown with grace 0 at moments that
    # fall before, during and between claims: each call ran to the end, or is pending
    # with no attempt counted, or (leased, interrupted) released with it refunded.
    one = probe("one", delivery=delivery)
    store = SlowClaims(1)
    start = clock()
    ids = await store.schedule(
        [row("one", '{"sleep": 0.25}', start + timedelta(seconds=i * 0.5)) for i in range(8)]
    )
    async with open_scheduler(store, [one], clock=clock, grace_period=0) as s:
        await trio.sleep(when)
    finished = {r["id"] for r in Probe.runs if r["how"] == "succeeded"}
    cancelled = {r["id"] for r in Probe.runs if r["how"] == "cancelled"}
    pending = {c.id: c for c in await store.pending(PendingQuery())}
    if delivery is Delivery.AT_MOST_ONCE:
        # An at-most-once call that started and was cancelled is the only loss allowed.
        assert set(ids) == finished | cancelled | set(pending)
    else:
        assert set(ids) == finished | set(pending)
    assert all(c.attempts == 0 for c in pending.values())
    assert store._owners == {}
    stats = s.statistics().total
    assert stats.started == len(Probe.runs)
    assert stats.running == 0


async def test_limits_hold_and_tokens_come_back_under_a_mixed_load(
    autojump_clock: MockClock, clock: Callable[[], datetime]
) -> None:
    limits = {"a": 1, "b": 2, "c": 3, "d": None}
    classes = [probe(name, max_concurrent=limit) for name, limit in limits.items()]
    store = MemoryStore()
    start = clock()
    calls = []
    for i in range(200):
        name = "abcd"[i % 4]
        fail = "true" if i % 7 == 0 else "false"
        payload = f'{{"sleep": {0.1 * (i % 5)}, "fail": {fail}}}'
        calls.append(row(name, payload, start + timedelta(seconds=0.05 * (i % 13))))
    await store.schedule(calls)
    peaks: dict[str, int] = dict.fromkeys(limits, 0)
    peak_total = 0
    async with open_scheduler(store, classes, clock=clock, max_concurrent=4) as s:
        for _ in range(400):
            await trio.testing.wait_all_tasks_blocked()
            now = running_now()
            peak_total = max(peak_total, len(now))
            for name in limits:
                peaks[name] = max(peaks[name], sum(r["name"] == name for r in now))
            stats = s.statistics()
            assert stats.total.running == len(s.running()) <= 4
            for name, limit in limits.items():
                assert stats.classes[name].running <= (limit or math.inf)
            await trio.sleep(0.05)
        stats = s.statistics()
    assert peak_total == 4
    assert all(peaks[name] <= (limit or math.inf) for name, limit in limits.items())
    assert peaks["a"] == 1
    assert peaks["b"] == 2
    assert len(Probe.runs) == 200
    total = stats.total
    assert total.started == 200 == total.finished
    assert total.failed == sum(1 for i in range(200) if i % 7 == 0)
    assert total.dead_lettered == total.failed  # at-most-once: no retries by default
    assert s._engine.slots.busy is False  # every token given back
    assert await store.pending(PendingQuery()) == []


async def test_a_saturated_class_never_holds_back_a_due_call_of_another(
    autojump_clock: MockClock, clock: Callable[[], datetime]
) -> None:
    busy = probe("busy", max_concurrent=2)
    other = probe("other", max_concurrent=1)
    store = MemoryStore()
    await schedule_rows(store, "busy", 50, clock(), '{"sleep": 1000}')
    async with open_scheduler(store, [busy, other], clock=clock, max_concurrent=10) as s:
        await trio.sleep(1)
        t = trio.current_time()
        await s.schedule(other, {"sleep": 1})
        await trio.testing.wait_all_tasks_blocked()
        # Started at once, with no time passing: no polling delay.
        assert [r["start"] for r in Probe.runs if r["name"] == "other"] == [t]
        await s.shutdown(grace_period=0)


async def test_a_freed_slot_starts_the_next_due_call_with_no_delay(
    autojump_clock: MockClock, clock: Callable[[], datetime]
) -> None:
    serial = probe("serial", max_concurrent=1)
    store = MemoryStore()
    start = clock()
    await store.schedule([row("serial", f'{{"sleep": {s}}}', start) for s in (3, 4, 5)])
    async with open_scheduler(store, [serial], clock=clock):
        await trio.sleep(60)
    starts = [r["start"] for r in Probe.runs]
    ends = [r["end"] for r in Probe.runs]
    assert starts[1:] == ends[:-1]  # each starts the instant the previous one ends


class GatedClaims(MemoryStore):
    """Claims wait for ``gate`` (set by the test) after the first one."""

    def __init__(self) -> None:
        super().__init__()
        self.claims = 0
        self.gate = trio.Event()
        self.waiting = False

    async def claim(
        self, now: datetime, slots: Mapping[str, int], limit: int, lease: Lease | None = None
    ) -> Claim:
        self.claims += 1
        if self.claims == 2:
            self.waiting = True
            await self.gate.wait()
            self.waiting = False
        return await super().claim(now, slots, limit, lease)


async def test_a_release_during_a_claim_round_is_not_lost(
    autojump_clock: MockClock, clock: Callable[[], datetime]
) -> None:
    # Global limit 5, an unlimited class: no limiter is full when a call ends, so only
    # the doorbell's "awake" state can bring the dispatcher back.
    wide = probe("wide")
    store = GatedClaims()
    await schedule_rows(store, "wide", 3, clock(), '{"sleep": 1}')
    async with open_scheduler(store, [wide], clock=clock, max_concurrent=5) as s:
        await trio.testing.wait_all_tasks_blocked()
        assert (store.claims, len(running_now())) == (1, 3)
        await trio.sleep(0.5)
        # Four calls due now: the claim they wake (2 free slots) hangs on the gate.
        await schedule_rows(store, "wide", 4, clock(), '{"sleep": 100}')
        await trio.testing.wait_all_tasks_blocked()
        assert store.waiting
        await trio.sleep(0.6)  # the first three calls end while the claim is in flight
        assert running_now() == []
        store.gate.set()
        await trio.testing.wait_all_tasks_blocked()
        # The claim takes 2 (what it counted) and says nothing more (its limit is used
        # up); the releases during it must bring the dispatcher straight back.
        assert len(running_now()) == 4
        await s.shutdown(grace_period=0)


async def test_run_due_calls_saturated_and_mixed_classes_stop_exactly_when_done(
    autojump_clock: MockClock, clock: Callable[[], datetime]
) -> None:
    serial = probe("serial", max_concurrent=1)
    pair = probe("pair", max_concurrent=2)
    store = SlowClaims(0.3)
    start = clock()
    await store.schedule(
        [row("serial", '{"sleep": 1}', start) for _ in range(3)]
        + [row("pair", '{"sleep": 0.7}', start) for _ in range(5)]
        + [row("pair", "{}", start + timedelta(seconds=1))]  # due after the start
    )
    t0 = trio.current_time()
    with trio.fail_after(60):
        stats = await run_due_calls(store, [serial, pair], clock=clock, max_concurrent=2)
    assert stats.total.succeeded == 8
    assert len(await store.pending(PendingQuery())) == 1
    # It returned when the last call ended plus one claim, not later.
    assert trio.current_time() - t0 == pytest.approx(max(r["end"] for r in Probe.runs) + 0.3 - t0)


class BrokenWrites(MemoryStore):
    """Writes after a call fail with a plain StoreError (not 'unavailable')."""

    async def put_back(self, calls: Sequence[StoredCall], owner: str | None) -> int:
        raise StoreError("constraint violated")

    async def dead_letter(
        self, call: StoredCall, error: str, failed_at: datetime, owner: str | None = None
    ) -> int | None:
        raise StoreError("disk full")


async def test_failing_writes_after_calls_neither_leak_tokens_nor_stop_others(
    autojump_clock: MockClock, clock: Callable[[], datetime], caplog: pytest.LogCaptureFixture
) -> None:
    serial = probe("serial", max_concurrent=1, max_attempts=2, retry_backoff=FixedBackoff(1))
    store = BrokenWrites()
    start = clock()
    await store.schedule(
        [row("serial", '{"fail": true}', start), row("serial", '{"fail": true}', start)]
        + [row("serial", "{}", start) for _ in range(3)]
    )
    async with open_scheduler(store, [serial], clock=clock) as s:
        await trio.sleep(30)
        assert s._engine.slots.busy is False
        stats = s.statistics().classes["serial"]
    assert [r["how"] for r in Probe.runs] == ["failed", "failed", *["succeeded"] * 3]
    assert (stats.started, stats.failed, stats.succeeded, stats.retried) == (5, 2, 3, 0)
    # The rows are gone and could not be stored again: the log says so, loudly.
    assert sum("lost" in r.getMessage() for r in caplog.records if r.levelname == "CRITICAL") == 2


class HangingDeadLetters(MemoryStore):
    async def dead_letter(
        self, call: StoredCall, error: str, failed_at: datetime, owner: str | None = None
    ) -> int | None:
        await trio.sleep_forever()
        raise AssertionError("unreachable")


async def test_a_hanging_write_is_bounded_by_cleanup_timeout(
    autojump_clock: MockClock, clock: Callable[[], datetime]
) -> None:
    serial = probe("serial", max_concurrent=1)
    store = HangingDeadLetters()
    start = clock()
    _, second = await store.schedule(
        [row("serial", '{"fail": true}', start), row("serial", "{}", start)]
    )
    async with open_scheduler(store, [serial], clock=clock, grace_period=0) as s:
        await trio.sleep(1)
        shutdown_at = trio.current_time()
        await s.shutdown()
        took = trio.current_time() - shutdown_at
    # The dead-letter write held the class's only slot for CLEANUP_TIMEOUT, no longer,
    # and shutdown (grace 0) waited for it, shielded, and no longer.
    assert took == pytest.approx(CLEANUP_TIMEOUT - 1)
    assert [r["how"] for r in Probe.runs] == ["failed"]
    # The second call never got the slot: it is still stored, untouched.
    assert [(c.id, c.attempts) for c in await store.pending(PendingQuery())] == [(second, 0)]


@pytest.mark.parametrize("delivery", BOTH)
async def test_a_call_that_turns_shutdown_into_an_error_is_kept(
    autojump_clock: MockClock, clock: Callable[[], datetime], delivery: Delivery
) -> None:
    class Rude(FutureCall):
        """Swallows the shutdown's Cancelled and raises an error instead."""

        name = "rude"
        max_attempts = 2
        retry_backoff = FixedBackoff(60)
        ran: ClassVar[int] = 0

        async def invoke(self, session: Any, payload: Any) -> None:
            Rude.ran += 1
            try:
                await trio.sleep(100)
            except trio.Cancelled:
                raise RuntimeError("interrupted") from None

    rude = type("RudeVariant", (Rude,), {"delivery": delivery})
    store = MemoryStore()
    (call_id,) = await schedule_rows(store, "rude", 1, clock())
    async with open_scheduler(store, [rude], clock=clock, grace_period=1) as s:
        await trio.sleep(1)
    assert Rude.ran == 1
    # The error is the call's failure: retried (kept in the store), not lost.
    (kept,) = await store.pending(PendingQuery())
    assert (kept.id, kept.attempts) == (call_id, 1)
    assert s.statistics().classes["rude"].retried == 1


@pytest.mark.parametrize("delivery", BOTH)
async def test_a_group_mixing_shutdown_and_errors_releases_the_call(
    autojump_clock: MockClock, clock: Callable[[], datetime], delivery: Delivery
) -> None:
    class Messy(FutureCall):
        """A nursery whose child fails while shutdown cancels the call."""

        name = "messy"

        async def invoke(self, session: Any, payload: Any) -> None:
            async def child() -> None:
                try:
                    await trio.sleep_forever()
                finally:
                    raise ValueError("cleanup failed")

            async with trio.open_nursery() as nursery:
                nursery.start_soon(child)
                await trio.sleep_forever()

    messy = type("MessyVariant", (Messy,), {"delivery": delivery})
    other = probe("other")
    store = MemoryStore()
    (call_id,) = await schedule_rows(store, "messy", 1, clock())
    await schedule_rows(store, "other", 1, clock(), '{"sleep": 3}')
    async with open_scheduler(store, [messy, other], clock=clock, grace_period=5) as s:
        await trio.sleep(1)
    stats = s.statistics()
    assert [r["how"] for r in Probe.runs] == ["succeeded"]  # the other call finished
    assert stats.classes["messy"].cancelled == 1
    pending = await store.pending(PendingQuery())
    if delivery is Delivery.AT_LEAST_ONCE:
        # Released at once, its attempt refunded.
        assert [(c.id, c.attempts) for c in pending] == [(call_id, 0)]
    else:
        assert pending == []  # it had started: at-most-once
    assert store._owners == {}


async def test_lease_keeper_stops_a_call_before_its_lease_ends_when_renewals_fail(
    autojump_clock: MockClock, clock: Callable[[], datetime]
) -> None:
    class Down(MemoryStore):
        async def renew(self, owner: str, call_ids: Any, expires_at: datetime) -> set[int]:
            raise StoreError("renewals refused")

    leased = probe("leased", delivery=Delivery.AT_LEAST_ONCE)
    store = Down()
    start = clock()
    # Claimed at various offsets from the keeper's ticks (every 10 s, lease 30 s).
    await store.schedule(
        [row("leased", '{"sleep": 500}', start + timedelta(seconds=d)) for d in (0, 3, 9.9, 17)]
    )
    async with open_scheduler(
        store, [leased], clock=clock, lease_duration=30, lease_renew_interval=10
    ) as s:
        await trio.sleep(200)
        await s.shutdown(grace_period=0)
    firsts = [r for r in Probe.runs if r["attempt"] == 1]
    assert len(firsts) == 4
    for run in firsts:
        assert run["how"] == "cancelled"
        assert run["end"] - run["start"] < 30  # before the lease ran out


async def test_memory_claim_answers_next_due_for_names_with_room_only(
    autojump_clock: MockClock, clock: Callable[[], datetime]
) -> None:
    store = MemoryStore()
    now = clock()
    later = now + timedelta(seconds=10)
    latest = now + timedelta(seconds=20)
    await store.schedule([row("a", "1", now), row("a", "2", later), row("b", "3", latest)])
    claim = await store.claim(now, {"a": 1, "b": 1}, 5)
    assert [c.payload for c in claim.calls] == ["1"]
    assert claim.next_due == latest  # "a" has no slot left: its next row does not count
    claim = await store.claim(later, {"a": 2, "b": 1}, 1)  # the total limit used up
    assert ([c.payload for c in claim.calls], claim.next_due) == (["2"], None)
    # Putting back twice is harmless; the row is back once, under its id.
    (two,) = claim.calls
    assert await store.put_back([two], None) == 1
    assert await store.put_back([two], None) == 0
    assert [c.id for c in await store.pending(PendingQuery())] == [two.id, 3]


async def test_memory_put_back_leaves_another_owners_lease_alone(
    autojump_clock: MockClock, clock: Callable[[], datetime]
) -> None:
    store = MemoryStore()
    now = clock()
    (call_id,) = await store.schedule([row("a", "1", now)])
    lease = Lease(owner="me", expires_at=now + timedelta(seconds=30), names=frozenset({"a"}))
    (mine,) = (await store.claim(now, {"a": 1}, 1, lease)).calls
    assert await store.put_back([mine], "someone-else") == 0
    assert store._owners == {call_id: "me"}
    assert await store.put_back([mine], "me") == 1
    assert store._owners == {}
    (back,) = await store.pending(PendingQuery())
    assert (back.id, back.due_at, back.attempts) == (call_id, now, 1)

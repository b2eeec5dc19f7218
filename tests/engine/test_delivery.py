"""Delivery guarantees on the memory store with autojump_clock: retries, backoff,
timeouts, dead letters, leases (renewal, loss, takeover, release at shutdown)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any, ClassVar

import attrs
import pytest
import trio
from helpers import BOTH
from trio.testing import MockClock

from trio_futurecalls import (
    Claim,
    Delivery,
    ExponentialBackoff,
    FixedBackoff,
    FutureCall,
    Lease,
    MemoryStore,
    NewCall,
    PendingQuery,
    StoreUnavailableError,
    open_scheduler,
)


class Flaky(FutureCall):
    """Fails until its attempt number reaches payload["succeed_on"]; records attempts."""

    name = "flaky"
    max_attempts = 4
    retry_backoff = FixedBackoff(10)
    attempts: ClassVar[list[tuple[int, int, float]]] = []  # (call id, attempt, time)

    async def invoke(self, session: Any, payload: Any) -> None:
        Flaky.attempts.append((self.info.id, self.info.attempt, trio.current_time()))
        await trio.sleep(payload.get("sleep", 0))
        if self.info.attempt < payload["succeed_on"]:
            raise (ValueError if payload.get("fatal") else RuntimeError)(
                f"attempt {self.info.attempt}"
            )


def flaky(delivery: Delivery, **attrs: Any) -> type[FutureCall]:
    Flaky.attempts = []
    return type("FlakyVariant", (Flaky,), {"delivery": delivery, **attrs})


@pytest.mark.parametrize("delivery", BOTH)
async def test_failed_attempts_are_retried_with_backoff(
    autojump_clock: MockClock, clock: Callable[[], datetime], delivery: Delivery
) -> None:
    cls = flaky(delivery)
    store = MemoryStore()
    async with open_scheduler(store, [cls], clock=clock) as s:
        t0 = trio.current_time()
        await s.schedule(cls, {"succeed_on": 3})
        await trio.sleep(100)
        stats = s.statistics().classes["flaky"]
    assert [(a, t - t0) for _, a, t in Flaky.attempts] == [(1, 0), (2, 10), (3, 20)]
    assert (stats.started, stats.failed, stats.retried, stats.succeeded) == (3, 2, 2, 1)
    assert await store.pending(PendingQuery()) == []
    assert await store.dead_letters() == []


@pytest.mark.parametrize("delivery", BOTH)
async def test_last_failed_attempt_goes_to_dead_letters(
    autojump_clock: MockClock, clock: Callable[[], datetime], delivery: Delivery
) -> None:
    cls = flaky(delivery, max_attempts=2)
    store = MemoryStore()
    async with open_scheduler(store, [cls], clock=clock) as s:
        await s.schedule(cls, {"succeed_on": 99}, identifier="doomed")
        await trio.sleep(100)
    assert [a for _, a, _ in Flaky.attempts] == [1, 2]
    (dead,) = await store.dead_letters()
    assert (dead.name, dead.identifier, dead.attempts) == ("flaky", "doomed", 2)
    assert "RuntimeError: attempt 2" in dead.error
    assert await store.pending(PendingQuery()) == []


@pytest.mark.parametrize("delivery", BOTH)
async def test_requeued_dead_letter_runs_again(
    autojump_clock: MockClock, clock: Callable[[], datetime], delivery: Delivery
) -> None:
    cls = flaky(delivery, max_attempts=1)
    store = MemoryStore()
    async with open_scheduler(store, [cls], clock=clock):
        await store.schedule(
            [
                NewCall(
                    name="flaky", payload='{"succeed_on": 2}', due_at=clock(), scheduled_at=clock()
                )
            ]
        )
        await trio.sleep(10)
        (dead,) = await store.dead_letters()
        # Requeued, it starts over at attempt 1 - and fails again (succeed_on 2 > 1).
        new_id = await store.requeue_dead_letter(dead.id, clock())
        assert new_id is not None
        await trio.sleep(10)
    assert [(i, a) for i, a, _ in Flaky.attempts] == [(1, 1), (new_id, 1)]
    assert len(await store.dead_letters()) == 1


async def test_non_retryable_exceptions_fail_at_once(
    autojump_clock: MockClock, clock: Callable[[], datetime]
) -> None:
    cls = flaky(Delivery.AT_LEAST_ONCE, no_retry_on=(ValueError,))
    store = MemoryStore()
    async with open_scheduler(store, [cls], clock=clock):
        await store.schedule(
            [
                NewCall(
                    name="flaky",
                    payload='{"succeed_on": 3, "fatal": true}',
                    due_at=clock(),
                    scheduled_at=clock(),
                )
            ]
        )
        await trio.sleep(100)
    assert [a for _, a, _ in Flaky.attempts] == [1]
    (dead,) = await store.dead_letters()
    assert "ValueError" in dead.error


async def test_exponential_backoff_and_custom_backoff_functions(
    autojump_clock: MockClock, clock: Callable[[], datetime]
) -> None:
    cls = flaky(Delivery.AT_MOST_ONCE, retry_backoff=ExponentialBackoff(base=1, jitter=0))
    async with open_scheduler(MemoryStore(), [cls], clock=clock) as s:
        t0 = trio.current_time()
        await s.schedule(cls, {"succeed_on": 4})
        await trio.sleep(100)
    assert [t - t0 for _, _, t in Flaky.attempts] == [0, 1, 3, 7]

    def by_attempt(attempt: int) -> float:
        return attempt * 100.0

    cls = flaky(Delivery.AT_MOST_ONCE, retry_backoff=by_attempt)
    async with open_scheduler(MemoryStore(), [cls], clock=clock) as s:
        t0 = trio.current_time()
        await s.schedule(cls, {"succeed_on": 3})
        await trio.sleep(1000)
    assert [t - t0 for _, _, t in Flaky.attempts] == [0, 100, 300]


def test_exponential_backoff_jitter_stays_in_bounds() -> None:
    policy = ExponentialBackoff(base=2, factor=3, maximum=50, jitter=0.25)
    for attempt in range(1, 30):
        ideal = min(2 * 3 ** (attempt - 1), 50)
        assert ideal * 0.75 <= policy(attempt) <= ideal * 1.25
    assert ExponentialBackoff(jitter=0)(10_000) == 3600


@pytest.mark.parametrize("delivery", BOTH)
async def test_timeout_cancels_the_attempt_and_counts_as_failure(
    autojump_clock: MockClock,
    clock: Callable[[], datetime],
    delivery: Delivery,
    caplog: pytest.LogCaptureFixture,
) -> None:
    cls = flaky(delivery, timeout=5, max_attempts=2)
    store = MemoryStore()
    async with open_scheduler(store, [cls], clock=clock) as s:
        t0 = trio.current_time()
        await s.schedule(cls, {"succeed_on": 1, "sleep": 100})
        await trio.sleep(1000)
        stats = s.statistics().classes["flaky"]
    # Two attempts of 5 s each, 10 s apart; then a dead letter.
    assert [t - t0 for _, _, t in Flaky.attempts] == [0, 15]
    assert (stats.failed, stats.retried, stats.dead_lettered) == (2, 1, 1)
    (dead,) = await store.dead_letters()
    assert "timed out after 5 s" in dead.error
    assert any("timed out" in r.getMessage() for r in caplog.records)


class Hang(FutureCall):
    name = "hang"
    delivery = Delivery.AT_LEAST_ONCE
    max_attempts = 3
    runs: ClassVar[list[tuple[int, float]]] = []  # (attempt, time)
    finished: ClassVar[list[int]] = []

    async def invoke(self, session: Any, payload: Any) -> None:
        Hang.runs.append((self.info.attempt, trio.current_time()))
        await trio.sleep(payload.get("sleep", 0))
        Hang.finished.append(self.info.id)


class SometimesDown(MemoryStore):
    """A memory store whose lease renewals fail for chosen owners (a cut-off worker)."""

    def __init__(self) -> None:
        super().__init__()
        self.cut_off: set[str] = set()

    async def renew(self, owner: str, call_ids: Any, expires_at: datetime) -> set[int]:
        if owner in self.cut_off:
            raise StoreUnavailableError("connection lost")
        return await super().renew(owner, call_ids, expires_at)


async def test_leases_are_renewed_while_a_long_call_runs(
    autojump_clock: MockClock, clock: Callable[[], datetime]
) -> None:
    store = MemoryStore()
    Hang.runs, Hang.finished = [], []
    async with (
        open_scheduler(store, [Hang], clock=clock, lease_duration=30) as a,
        open_scheduler(store, [Hang], clock=clock, lease_duration=30) as b,
    ):
        await store.schedule(
            [NewCall(name="hang", payload='{"sleep": 600}', due_at=clock(), scheduled_at=clock())]
        )
        await trio.sleep(1000)
        assert a.statistics().total.started + b.statistics().total.started == 1
    # Ten minutes, twenty lease lengths: it ran once, in one worker, and finished.
    assert len(Hang.runs) == 1
    assert len(Hang.finished) == 1
    assert await store.pending(PendingQuery()) == []


async def test_cut_off_worker_cancels_its_call_and_another_takes_it_over(
    autojump_clock: MockClock,
    clock: Callable[[], datetime],
    caplog: pytest.LogCaptureFixture,
) -> None:
    store = SometimesDown()
    Hang.runs, Hang.finished = [], []
    async with open_scheduler(
        store, [Hang], clock=clock, lease_duration=30, lease_renew_interval=10
    ) as first:
        t0 = trio.current_time()
        await store.schedule(
            [NewCall(name="hang", payload='{"sleep": 100}', due_at=clock(), scheduled_at=clock())]
        )
        await trio.sleep(1)
        store.cut_off.add(first.owner)
        # Renewals from 10 on fail; once the lease (expiring at 30) is within the
        # margin (a tenth of it: at 27), the first worker cancels its call instead of
        # running on unaware.
        await trio.sleep(25.5)  # 26.5
        assert len(first.running()) == 1
        await trio.sleep(1)  # 27.5
        assert first.running() == []
        assert first.statistics().classes["hang"].cancelled == 1
        # The cut-off worker goes away without releasing the lost call.
    assert first.statistics().classes["hang"].started == 1
    assert len(await store.pending(PendingQuery())) == 0  # still leased until 30
    # Its row stays leased until expiry; another worker takes it over then.
    async with open_scheduler(store, [Hang], clock=clock, lease_duration=30) as second:
        await trio.sleep(200)
        assert second.statistics().classes["hang"].succeeded == 1
    assert [(attempt, t - t0) for attempt, t in Hang.runs] == [(1, 0), (2, 30)]
    assert len(Hang.finished) == 1
    assert any("lost its lease" in r.getMessage() for r in caplog.records)
    assert await store.pending(PendingQuery()) == []


async def test_stolen_lease_cancels_the_running_call(
    autojump_clock: MockClock,
    clock: Callable[[], datetime],
    caplog: pytest.LogCaptureFixture,
) -> None:
    store = MemoryStore()
    Hang.runs, Hang.finished = [], []
    async with open_scheduler(
        store, [Hang], clock=clock, lease_duration=30, lease_renew_interval=10
    ) as s:
        await store.schedule(
            [NewCall(name="hang", payload='{"sleep": 100}', due_at=clock(), scheduled_at=clock())]
        )
        await trio.sleep(1)
        (running,) = s.running()
        # Simulate another worker holding the lease now (ours expired behind our back).
        await store.release(s.owner, running.id, clock() + timedelta(hours=1))
        await trio.sleep(15)
        assert s.running() == []
        assert s.statistics().classes["hang"].cancelled == 1
    assert Hang.finished == []
    assert any("lost its lease" in r.getMessage() for r in caplog.records)


async def test_shutdown_releases_leased_calls_at_once(
    autojump_clock: MockClock, clock: Callable[[], datetime]
) -> None:
    store = MemoryStore()
    Hang.runs, Hang.finished = [], []
    async with open_scheduler(store, [Hang], clock=clock, grace_period=5):
        call_id = (
            await store.schedule(
                [
                    NewCall(
                        name="hang", payload='{"sleep": 100}', due_at=clock(), scheduled_at=clock()
                    )
                ]
            )
        )[0]
        await trio.sleep(1)
    end = clock()
    (pending,) = await store.pending(PendingQuery())
    # Back at once (due now, not at lease expiry), and the interrupted attempt refunded.
    assert (pending.id, pending.due_at, pending.attempts) == (call_id, end, 0)
    assert Hang.finished == []


async def test_call_that_keeps_killing_its_worker_ends_in_dead_letters(
    autojump_clock: MockClock, clock: Callable[[], datetime]
) -> None:
    store = MemoryStore()
    Hang.runs, Hang.finished = [], []
    # Three "crashed" attempts: leased rows whose leases simply expired.
    (call_id,) = await store.schedule(
        [NewCall(name="hang", payload="{}", due_at=clock(), scheduled_at=clock(), attempts=0)]
    )
    for n in range(3):
        await store.claim(
            clock(),
            {"hang": 1},
            1,
            Lease(owner=f"crashed-{n}", expires_at=clock(), names=frozenset({"hang"})),
        )
    async with open_scheduler(store, [Hang], clock=clock):
        await trio.sleep(10)
    assert Hang.runs == []
    (dead,) = await store.dead_letters()
    assert dead.call_id == call_id
    assert "lease expired during attempt 3 of 3" in dead.error


async def test_unknown_names_can_be_moved_to_dead_letters(
    autojump_clock: MockClock, clock: Callable[[], datetime], caplog: pytest.LogCaptureFixture
) -> None:
    store = MemoryStore()
    later = clock() + timedelta(days=9)
    await store.schedule(
        [
            NewCall(name="ghost", payload="1", due_at=clock(), scheduled_at=clock()),
            NewCall(name="ghost", payload="2", due_at=clock(), scheduled_at=clock()),
            NewCall(name="ghost", payload="3", due_at=later, scheduled_at=clock()),
        ]
    )
    # One "ghost" call is running in another deployment that knows the name.
    await store.claim(
        clock(),
        {"ghost": 1},
        1,
        Lease(owner="other", expires_at=clock() + timedelta(hours=1), names=frozenset({"ghost"})),
    )
    async with open_scheduler(store, [Hang], clock=clock) as s:
        assert await s.move_unknown_to_dead_letters() == 1
        left = await s.unknown_calls()
    # The due, pending one moved; the one due later stays pending; the running one
    # (leased elsewhere) was not touched.
    assert [c.payload for c in left] == ["3"]
    (dead,) = await store.dead_letters()
    assert dead.payload == "2"
    assert "no FutureCall class named 'ghost'" in dead.error
    assert await store.complete("other", 1) is True
    assert any("moved 1 due call(s) named 'ghost'" in r.getMessage() for r in caplog.records)


@attrs.frozen
class Strict:
    n: int

    def __attrs_post_init__(self) -> None:
        if self.n < 0:
            raise LookupError("v2 of this class refuses negative numbers")


class StrictCall(FutureCall):
    name = "strict"
    payload_type = Strict
    ran: ClassVar[list[int]] = []

    async def invoke(self, session: Any, payload: Strict) -> None:
        StrictCall.ran.append(payload.n)


async def test_payload_failing_in_its_own_class_code_goes_to_dead_letters(
    autojump_clock: MockClock, clock: Callable[[], datetime]
) -> None:
    StrictCall.ran = []
    Hang.runs, Hang.finished = [], []
    store = MemoryStore()
    await store.schedule(
        [
            NewCall(name="strict", payload='{"n": -1}', due_at=clock(), scheduled_at=clock()),
            NewCall(name="strict", payload='{"n": 2}', due_at=clock(), scheduled_at=clock()),
        ]
    )
    async with open_scheduler(store, [StrictCall, Hang], clock=clock) as s:
        await s.schedule(Hang, {"sleep": 5})
        await trio.sleep(10)
    # The bad payload is kept; the scheduler and the other calls carried on.
    (dead,) = await store.dead_letters()
    assert "LookupError" in dead.error
    assert StrictCall.ran == [2]
    assert len(Hang.finished) == 1


async def test_backoff_that_overflows_ends_in_dead_letters_not_a_crash(
    autojump_clock: MockClock, clock: Callable[[], datetime]
) -> None:
    cls = flaky(Delivery.AT_MOST_ONCE, retry_backoff=FixedBackoff(1e12))
    store = MemoryStore()
    async with open_scheduler(store, [cls], clock=clock) as s:
        await s.schedule(cls, {"succeed_on": 2})
        await trio.sleep(10)
    (dead,) = await store.dead_letters()
    assert "retry_backoff failed" in dead.error


class HangingRenewals(MemoryStore):
    """Renewals never answer (a database that stopped responding)."""

    async def renew(self, owner: str, call_ids: Any, expires_at: datetime) -> set[int]:
        await trio.sleep_forever()
        raise AssertionError("unreachable")


async def test_hanging_renewal_still_cancels_the_call_before_its_lease_expires(
    autojump_clock: MockClock, clock: Callable[[], datetime]
) -> None:
    store = HangingRenewals()
    Hang.runs, Hang.finished = [], []
    async with open_scheduler(
        store, [Hang], clock=clock, lease_duration=30, lease_renew_interval=10
    ) as s:
        t0 = trio.current_time()
        await store.schedule(
            [NewCall(name="hang", payload='{"sleep": 100}', due_at=clock(), scheduled_at=clock())]
        )
        while not s.running():  # noqa: ASYNC110 - autojump clock, deterministic
            await trio.sleep(0.001)
        while s.running():  # noqa: ASYNC110 - autojump clock, deterministic
            await trio.sleep(0.001)
        stopped = trio.current_time() - t0
    assert Hang.finished == []
    assert stopped < 30  # stopped before the lease (claimed at 0 for 30 s) ran out


class SlowClaims(MemoryStore):
    """Claims that take 50 s to answer (and cannot be interrupted, like a shielded one)."""

    async def claim(
        self, now: datetime, slots: Any, limit: int, lease: Lease | None = None
    ) -> Claim:
        with trio.CancelScope(shield=True):
            await trio.sleep(50)
        return await super().claim(now, slots, limit, lease)


async def test_grace_period_starts_when_shutdown_is_asked_for(
    autojump_clock: MockClock, clock: Callable[[], datetime]
) -> None:
    store = SlowClaims()
    Hang.runs, Hang.finished = [], []
    start = clock()
    await store.schedule(
        [
            NewCall(name="hang", payload='{"sleep": 30}', due_at=start, scheduled_at=start),
            NewCall(
                name="hang",
                payload='{"sleep": 30}',
                due_at=start + timedelta(seconds=55),
                scheduled_at=start,
            ),
        ]
    )
    wide = type("HangWide", (Hang,), {"max_concurrent": None})
    async with open_scheduler(store, [wide], clock=clock, grace_period=10) as s:
        # The first claim (from 0) answers at 50 with the first call, and says the next
        # is due at 55; the claim made then is in flight (until 105) at shutdown.
        await trio.sleep(60)
        assert [t for _, t in Hang.runs] == [pytest.approx(50)]
        t0 = trio.current_time()
        await s.shutdown()
        took = trio.current_time() - t0
    # The running call was cancelled when the grace ran out (at +10), not after the
    # claim in flight came back; shutdown itself waited for that claim (+45).
    assert Hang.finished == []
    assert s.statistics().classes["hang"].cancelled >= 1
    assert took == pytest.approx(45)

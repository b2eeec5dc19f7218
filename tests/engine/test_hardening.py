"""No row, call or fault stops the scheduler or loses a call (the per-call life).

Each test reproduces a way the scheduler used to die or lose calls; all run on the
memory store (or a subclass injecting the fault) under the autojump clock.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any, ClassVar

import pytest
import trio
from helpers import BOTH, row
from trio.testing import MockClock

from trio_futurecalls import (
    Claim,
    Delivery,
    FixedBackoff,
    FutureCall,
    InvalidPayloadError,
    Lease,
    MemoryStore,
    PendingQuery,
    QueueLength,
    StoredCall,
    StoreUnavailableError,
    open_scheduler,
)


class Ok(FutureCall):
    """Records what ran; the payload may ask it to sleep."""

    name = "ok"
    max_concurrent = None
    ran: ClassVar[list[Any]] = []

    async def invoke(self, session: Any, payload: Any) -> None:
        if isinstance(payload, dict):
            await trio.sleep(payload.get("sleep", 0))
        Ok.ran.append(payload)


def ok(delivery: Delivery, **attrs: Any) -> type[FutureCall]:
    Ok.ran = []
    return type("OkVariant", (Ok,), {"delivery": delivery, **attrs})


# -- a hostile payload ------------------------------------------------------------------


@pytest.mark.parametrize("delivery", BOTH)
async def test_a_payload_nested_too_deep_is_a_dead_letter_not_a_crash(
    autojump_clock: MockClock, clock: Callable[[], datetime], delivery: Delivery
) -> None:
    call = ok(delivery)
    store = MemoryStore()
    deep = "[" * 50_000 + "]" * 50_000  # written by another tool: no call site checked it
    (bad,) = await store.schedule([row("ok", deep, clock())])
    await store.schedule([row("ok", '"fine"', clock() + timedelta(seconds=1))])
    async with open_scheduler(store, [call], clock=clock) as s:
        await trio.sleep(10)
        stats = s.statistics().classes["ok"]
    assert Ok.ran == ["fine"]  # the scheduler kept running the others
    (dead,) = await store.dead_letters()
    assert dead.call_id == bad
    assert dead.attempts == 1  # the attempt counts: no worker retries it forever
    assert "nested too deeply" in dead.error
    assert (stats.failed, stats.dead_lettered, stats.succeeded) == (1, 1, 1)
    assert await store.pending(PendingQuery()) == []


async def test_the_call_site_refuses_a_payload_nested_too_deep(
    autojump_clock: MockClock, clock: Callable[[], datetime]
) -> None:
    call = ok(Delivery.AT_MOST_ONCE)
    deep: list[Any] = []
    for _ in range(10_000):
        deep = [deep]
    async with open_scheduler(MemoryStore(), [call], clock=clock) as s:
        with pytest.raises(InvalidPayloadError, match="nested deeper than 100 levels"):
            await s.schedule(call, deep)


# -- shutdown while a claim is in flight -----------------------------------------------


class SlowClaims(MemoryStore):
    """Claims take ``seconds`` to answer and cannot be interrupted (like a shielded one)."""

    def __init__(self, seconds: float) -> None:
        super().__init__()
        self.seconds = seconds
        self.claims = 0

    async def claim(
        self, now: datetime, slots: Mapping[str, int], limit: int, lease: Lease | None = None
    ) -> Claim:
        self.claims += 1
        with trio.CancelScope(shield=True):
            await trio.sleep(self.seconds)
        return await super().claim(now, slots, limit, lease)


@pytest.mark.parametrize("delivery", BOTH)
async def test_calls_claimed_as_shutdown_begins_go_back_to_the_store(
    autojump_clock: MockClock, clock: Callable[[], datetime], delivery: Delivery
) -> None:
    call = ok(delivery)
    store = SlowClaims(5)
    ids = await store.schedule([row("ok", f'"c{i}"', clock()) for i in range(5)])
    async with open_scheduler(store, [call], clock=clock, grace_period=0) as s:
        await trio.sleep(1)  # the first claim is in flight until 5
        assert store.claims == 1
    # The five calls were claimed after shutdown began: none ran, none is lost.
    assert Ok.ran == []
    pending = await store.pending(PendingQuery())
    assert [c.id for c in pending] == ids
    assert all(c.attempts == 0 for c in pending)  # never started: nothing counted
    assert s.statistics().total.started == 0
    # The next scheduler runs them.
    async with open_scheduler(store, [call], clock=clock):
        await trio.sleep(30)
    assert sorted(Ok.ran) == [f"c{i}" for i in range(5)]


@pytest.mark.parametrize("delivery", BOTH)
async def test_calls_that_cannot_start_within_the_grace_go_back(
    autojump_clock: MockClock, clock: Callable[[], datetime], delivery: Delivery
) -> None:
    class SlowSessions(MemoryStore):
        """Opening a session takes 10 s (a pool waiting for a free connection)."""

        def open_session(self, call: StoredCall) -> Any:
            parent = super().open_session(call)

            class Slow:
                async def __aenter__(self) -> Any:
                    await trio.sleep(10)
                    return await parent.__aenter__()

                async def __aexit__(self, *exc: Any) -> None:
                    await parent.__aexit__(*exc)

            return Slow()

    call = ok(delivery)
    store = SlowSessions()
    (call_id,) = await store.schedule([row("ok", '"late"', clock())])
    async with open_scheduler(store, [call], clock=clock, grace_period=2):
        await trio.sleep(1)  # started, waiting for its session
    assert Ok.ran == []
    (back,) = await store.pending(PendingQuery())
    assert (back.id, back.attempts) == (call_id, 0)


# -- what invoke raises ----------------------------------------------------------------


class Messy(FutureCall):
    """Holds a nursery whose child fails while being cancelled (a timeout)."""

    name = "messy"
    timeout = 5
    max_attempts = 1

    async def invoke(self, session: Any, payload: Any) -> None:
        async def child() -> None:
            try:
                await trio.sleep_forever()
            finally:
                raise RuntimeError("cleanup failed")

        async with trio.open_nursery() as nursery:
            nursery.start_soon(child)
            await trio.sleep_forever()


async def test_timeout_with_a_failing_child_fails_only_that_call(
    autojump_clock: MockClock, clock: Callable[[], datetime]
) -> None:
    call = ok(Delivery.AT_MOST_ONCE)
    store = MemoryStore()
    await store.schedule([row("messy", "null", clock())])
    await store.schedule([row("ok", '{"sleep": 20}', clock())])
    async with open_scheduler(store, [Messy, call], clock=clock) as s:
        await trio.sleep(60)
        stats = s.statistics()
    assert Ok.ran == [{"sleep": 20}]  # an unrelated call was not cancelled
    assert stats.classes["messy"].failed == 1
    (dead,) = await store.dead_letters()
    assert "timed out after 5 s" in dead.error
    assert "cleanup failed" in dead.error


class Grouped(FutureCall):
    """Raises an exception group of its own."""

    name = "grouped"
    max_attempts = 1

    async def invoke(self, session: Any, payload: Any) -> None:
        raise ExceptionGroup("several", [ValueError("one"), KeyError("two")])


async def test_an_exception_group_from_invoke_is_that_calls_failure(
    autojump_clock: MockClock, clock: Callable[[], datetime]
) -> None:
    store = MemoryStore()
    await store.schedule([row("grouped", "null", clock())])
    async with open_scheduler(store, [Grouped], clock=clock) as s:
        await trio.sleep(5)
        assert s.statistics().classes["grouped"].failed == 1
    (dead,) = await store.dead_letters()
    assert "ExceptionGroup: several" in dead.error


# -- the same call twice in one process -------------------------------------------------


class Stuck(FutureCall):
    """The first attempt cannot be cancelled (as if blocked in a thread)."""

    name = "stuck"
    delivery = Delivery.AT_LEAST_ONCE
    max_concurrent = None
    runs: ClassVar[list[int]] = []

    async def invoke(self, session: Any, payload: Any) -> None:
        Stuck.runs.append(self.info.attempt)
        if self.info.attempt == 1:
            with trio.CancelScope(shield=True):
                await trio.sleep(100)


class RenewalsDown(MemoryStore):
    """Lease renewals fail while ``down`` (a database blip for the lease keeper)."""

    down = False

    async def renew(self, owner: str, call_ids: Any, expires_at: datetime) -> set[int]:
        if self.down:
            raise StoreUnavailableError("connection reset")
        return await super().renew(owner, call_ids, expires_at)


async def test_a_call_claimed_again_while_its_old_run_is_stuck_runs_again(
    autojump_clock: MockClock, clock: Callable[[], datetime]
) -> None:
    Stuck.runs = []
    store = RenewalsDown()
    (call_id,) = await store.schedule([row("stuck", "null", clock())])
    async with open_scheduler(
        store, [Stuck], clock=clock, lease_duration=30, lease_renew_interval=10
    ) as s:
        await trio.sleep(5)
        store.down = True
        # Renewals fail; at 20 the lease keeper gives the lease up and cancels the
        # first run, which cancellation cannot reach. At 30 the lease expires and this
        # same scheduler claims the call again: a second run, tracked on its own.
        await trio.sleep(30)
        store.down = False
        assert Stuck.runs == [1, 2]
        assert [c.attempt for c in s.running()] == [1]  # the second run is done
        await trio.sleep(100)
        assert s.running() == []
        stats = s.statistics().classes["stuck"]
    assert stats.started == 2
    # The first run returned too, late: its lease was given up, so it wrote nothing
    # and counts as cancelled; the second completed the call.
    assert (stats.succeeded, stats.cancelled) == (1, 1)
    assert await store.pending(PendingQuery()) == []
    assert await store.dead_letters() == []
    assert call_id not in store._owners


# -- a store that answers with something unexpected -------------------------------------


class WrongNames(MemoryStore):
    """The first claim also hands over a call of a class nobody registered."""

    def __init__(self) -> None:
        super().__init__()
        self.tricked = False

    async def claim(
        self, now: datetime, slots: Mapping[str, int], limit: int, lease: Lease | None = None
    ) -> Claim:
        if not self.tricked:
            self.tricked = True
            return await super().claim(now, {**slots, "ghost": 1}, limit, lease)
        return await super().claim(now, slots, limit, lease)


async def test_a_call_of_an_unknown_class_from_the_store_is_handed_back(
    autojump_clock: MockClock, clock: Callable[[], datetime]
) -> None:
    call = ok(Delivery.AT_MOST_ONCE)
    store = WrongNames()
    (ghost,) = await store.schedule([row("ghost", "null", clock())])
    await store.schedule([row("ok", '"fine"', clock())])
    async with open_scheduler(store, [call], clock=clock, max_concurrent=1) as s:
        await trio.sleep(10)
        assert s.statistics().running == 0
    assert Ok.ran == ["fine"]
    assert [c.id for c in await store.pending(PendingQuery())] == [ghost]


# -- store writes after a call ----------------------------------------------------------


class FlakyWrites(MemoryStore):
    """The first ``failures`` writes after a call find the store unavailable."""

    def __init__(self, failures: int) -> None:
        super().__init__()
        self.failures = failures

    def _maybe_fail(self) -> None:
        if self.failures:
            self.failures -= 1
            raise StoreUnavailableError("connection reset")

    async def put_back(self, calls: Sequence[StoredCall], owner: str | None) -> int:
        self._maybe_fail()
        return await super().put_back(calls, owner)

    async def release(
        self, owner: str, call_id: int, due_at: datetime, *, refund_attempt: bool = False
    ) -> bool:
        self._maybe_fail()
        return await super().release(owner, call_id, due_at, refund_attempt=refund_attempt)

    async def dead_letter(
        self, call: StoredCall, error: str, failed_at: datetime, owner: str | None = None
    ) -> int | None:
        self._maybe_fail()
        return await super().dead_letter(call, error, failed_at, owner)


class FailsOnce(FutureCall):
    name = "fails-once"
    max_attempts = 2
    retry_backoff = FixedBackoff(5)
    attempts: ClassVar[list[tuple[int, int]]] = []  # (call id, attempt)

    async def invoke(self, session: Any, payload: Any) -> None:
        FailsOnce.attempts.append((self.info.id, self.info.attempt))
        if self.info.attempt == 1:
            raise RuntimeError("first attempt fails")


@pytest.mark.parametrize("delivery", BOTH)
async def test_a_retry_write_is_tried_again_when_the_store_blips(
    autojump_clock: MockClock, clock: Callable[[], datetime], delivery: Delivery
) -> None:
    FailsOnce.attempts = []
    cls = type("FailsOnceVariant", (FailsOnce,), {"delivery": delivery})
    store = FlakyWrites(3)
    (call_id,) = await store.schedule([row("fails-once", "null", clock())])
    async with open_scheduler(store, [cls], clock=clock) as s:
        await trio.sleep(60)
        stats = s.statistics().classes["fails-once"]
    # Both attempts ran under the call's own id (an at-most-once retry is put back
    # under it, so a write tried twice cannot store it twice).
    assert FailsOnce.attempts == [(call_id, 1), (call_id, 2)]
    assert (stats.retried, stats.succeeded) == (1, 1)
    assert store.failures == 0
    assert await store.pending(PendingQuery()) == []


async def test_a_dead_letter_write_is_tried_again_when_the_store_blips(
    autojump_clock: MockClock, clock: Callable[[], datetime]
) -> None:
    store = FlakyWrites(2)
    await store.schedule([row("grouped", "null", clock())])
    async with open_scheduler(store, [Grouped], clock=clock):
        await trio.sleep(10)
    (dead,) = await store.dead_letters()
    assert dead.name == "grouped"


async def test_a_second_shutdown_with_a_shorter_grace_shortens_it(
    autojump_clock: MockClock, clock: Callable[[], datetime]
) -> None:
    call = ok(Delivery.AT_MOST_ONCE)
    store = MemoryStore()
    await store.schedule([row("ok", '{"sleep": 100}', clock())])
    async with open_scheduler(store, [call], clock=clock) as s, trio.open_nursery() as nursery:
        await trio.sleep(1)
        t0 = trio.current_time()
        nursery.start_soon(s.shutdown, 60)  # a first SIGTERM: a minute to finish
        await trio.sleep(5)
        await s.shutdown(2)  # a second one: two more seconds, not 55
        assert trio.current_time() - t0 == pytest.approx(7)
        await s.shutdown(300)  # a longer one does not extend it
    assert Ok.ran == []
    assert s.statistics().total.cancelled == 1


class OddCounts(MemoryStore):
    """pending_counts answers something no store should (a buggy third-party store)."""

    answers: ClassVar[list[Any]] = [
        {b"blob": QueueLength(pending=1, due=1), "fine": QueueLength(pending=2, due=0)},
        {"counts": 3},  # not even QueueLength values
    ]

    async def pending_counts(self, due_by: datetime) -> Any:
        return self.answers.pop(0) if self.answers else {}


async def test_an_odd_answer_to_the_unknown_names_check_does_not_stop_the_scheduler(
    autojump_clock: MockClock, clock: Callable[[], datetime], caplog: pytest.LogCaptureFixture
) -> None:
    call = ok(Delivery.AT_MOST_ONCE)
    store = OddCounts()
    async with open_scheduler(store, [call], clock=clock, unknown_check_interval=1) as s:
        await trio.sleep(3)
        await s.schedule(call, "after")
        await trio.sleep(1)
    assert Ok.ran == ["after"]
    assert not OddCounts.answers  # both odd answers were met
    assert any("named 'fine'" in r.getMessage() for r in caplog.records)


class LeaksADsn(FutureCall):
    name = "leaks"
    max_attempts = 1

    async def invoke(self, session: Any, payload: Any) -> None:
        raise ConnectionError(
            "could not reach postgresql://app:s3cr3t-pw@db/app (or host=db password=hunter22)"
        )


async def test_a_dead_letter_keeps_no_password_from_the_error(
    autojump_clock: MockClock, clock: Callable[[], datetime]
) -> None:
    store = MemoryStore()
    await store.schedule([row("leaks", "null", clock())])
    async with open_scheduler(store, [LeaksADsn], clock=clock):
        await trio.sleep(5)
    (dead,) = await store.dead_letters()
    assert "ConnectionError" in dead.error
    assert "s3cr3t-pw" not in dead.error
    assert "hunter22" not in dead.error
    assert "postgresql://app:***@db/app" in dead.error

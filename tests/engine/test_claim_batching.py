"""Claims made for many freed slots at once, and completions that do not hold slots.

The dispatcher waits for slots that calls writing their outcome (a retry, a dead
letter) are about to free, so one claim fills them all; an at-least-once call that
succeeded gives its slots back as its completion is sent, so the next claim overlaps
that write. What neither may break: no lost or repeated call when a write is slow,
fails, never answers, or is cut by shutdown."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any, ClassVar

import pytest
import trio
from trio.testing import MockClock

from trio_futurecalls import (
    Claim,
    Delivery,
    FutureCall,
    Lease,
    MemoryStore,
    NewCall,
    PendingQuery,
    StoredCall,
    StoreUnavailableError,
    open_scheduler,
)


class Sleeper(FutureCall):
    """Sleeps ``payload["sleep"]`` seconds, then fails if ``payload["fail"]``; records
    (tag, start time) of each run, and how many run at once."""

    name = "sleeper"
    delivery = Delivery.AT_LEAST_ONCE
    max_concurrent = 4
    max_attempts = 1
    runs: ClassVar[list[tuple[int, float]]] = []
    now: ClassVar[int] = 0
    peak: ClassVar[int] = 0

    async def invoke(self, session: Any, payload: Any) -> None:
        Sleeper.runs.append((payload["tag"], trio.current_time()))
        Sleeper.now += 1
        Sleeper.peak = max(Sleeper.peak, Sleeper.now)
        try:
            await trio.sleep(payload["sleep"])
        finally:
            Sleeper.now -= 1
        if payload.get("fail"):
            raise RuntimeError("failed on purpose")


class Recording(MemoryStore):
    """Records each claim that handed calls over: (time, limit asked, calls). Each
    completion and each dead letter takes ``write_for`` seconds; completions fail with
    StoreUnavailableError while ``down`` > 0."""

    def __init__(self, write_for: float = 1.0) -> None:
        super().__init__()
        self.claims: list[tuple[float, int, int]] = []
        self.write_for = write_for
        self.down = 0
        self.completing = 0

    async def claim(
        self, now: datetime, slots: Any, limit: int, lease: Lease | None = None
    ) -> Claim:
        claim = await super().claim(now, slots, limit, lease)
        if claim.calls:
            self.claims.append((trio.current_time(), limit, len(claim.calls)))
        return claim

    async def complete(self, owner: str, call_id: int) -> bool:
        self.completing += 1
        try:
            await trio.sleep(self.write_for)
            if self.down:
                self.down -= 1
                raise StoreUnavailableError("the store is down (test)")
            return await super().complete(owner, call_id)
        finally:
            self.completing -= 1

    async def dead_letter(
        self, call: StoredCall, error: str, failed_at: datetime, owner: str | None = None
    ) -> int | None:
        await trio.sleep(self.write_for)
        return await super().dead_letter(call, error, failed_at, owner)


async def _schedule(store: MemoryStore, now: datetime, payloads: list[str]) -> None:
    await store.schedule(
        [
            NewCall(name="sleeper", payload=p, due_at=now, scheduled_at=now)
            for k, p in enumerate(payloads)
        ]
    )


def _payloads(sleeps: list[float], fail: bool = False) -> list[str]:
    suffix = ', "fail": true' if fail else ""
    return [f'{{"tag": {k}, "sleep": {s}{suffix}}}' for k, s in enumerate(sleeps)]


@pytest.fixture(autouse=True)
def _fresh_runs() -> None:
    Sleeper.runs, Sleeper.now, Sleeper.peak = [], 0, 0


def _with_leased(now: datetime) -> PendingQuery:
    """Pending rows, leased ones included (as if their leases had expired)."""
    return PendingQuery(now=now + timedelta(days=1))


async def _until(predicate: Callable[[], bool]) -> None:
    while not predicate():  # noqa: ASYNC110 - autojump clock, deterministic
        await trio.sleep(0.01)


# -- the dispatcher waits for slots about to be freed ----------------------------------


async def test_a_slot_freed_while_others_write_waits_for_them(
    autojump_clock: MockClock, clock: Callable[[], datetime]
) -> None:
    # Failing calls write dead letters (1 s each) holding their slots. One fails at
    # once (its slot frees at 1), three at 0.5 (theirs at 1.5): the slot freed at 1 is
    # not claimed alone; one claim at 1.5 fills all four.
    store = Recording(write_for=1.0)
    await _schedule(store, clock(), _payloads([0, 0.5, 0.5, 0.5] + [0] * 4, fail=True))
    async with open_scheduler(store, [Sleeper], clock=clock, max_concurrent=4) as s:
        await _until(lambda: s.statistics().classes["sleeper"].dead_lettered == 8)
        await s.shutdown()
    assert store.claims == [(0, 4, 4), (pytest.approx(1.5), 4, 4)]
    assert sorted(tag for tag, _ in Sleeper.runs) == list(range(8))
    assert len(await store.dead_letters()) == 8
    assert await store.pending(PendingQuery()) == []


async def test_calls_ending_together_are_claimed_for_together(
    autojump_clock: MockClock, clock: Callable[[], datetime]
) -> None:
    # The four that end together free four slots in one scheduling round, and one
    # claim fills them (not one, then three).
    store = Recording()
    at_most_once = type("AtMostOnce", (Sleeper,), {"delivery": Delivery.AT_MOST_ONCE})
    await _schedule(store, clock(), _payloads([1.0] * 12))
    async with open_scheduler(store, [at_most_once], clock=clock, max_concurrent=4) as s:
        await _until(lambda: len(Sleeper.runs) == 12)
        await s.shutdown()
    assert [n for _, _, n in store.claims] == [4, 4, 4]


async def test_dead_letters_that_never_answer_hold_the_claim_back_for_their_bound_only(
    autojump_clock: MockClock, clock: Callable[[], datetime]
) -> None:
    # The writes hang; each gives up after CLEANUP_TIMEOUT (10 s), and its row stays
    # leased (it runs again once the lease expires). The dispatcher claims again once
    # those slots are free: it does not stall with them.
    store = Recording(write_for=1000.0)
    await _schedule(store, clock(), _payloads([0.0] * 8, fail=True))
    async with open_scheduler(
        store, [Sleeper], clock=clock, max_concurrent=4, lease_duration=600
    ) as s:
        await trio.sleep(15)
        assert [(t, n) for t, _, n in store.claims] == [(0, 4), (pytest.approx(10), 4)]
        await s.shutdown()
    assert len(await store.pending(_with_leased(clock()))) == 8  # leased, not lost


async def test_shutdown_while_waiting_for_writes_loses_nothing(
    autojump_clock: MockClock, clock: Callable[[], datetime]
) -> None:
    # Shutdown begins while the dispatcher waits for the slots of calls writing dead
    # letters: the writes finish (shielded), nothing more is claimed, and the calls
    # not started are still pending, each once.
    store = Recording(write_for=5.0)
    await _schedule(store, clock(), _payloads([0.0] * 8, fail=True))
    async with open_scheduler(store, [Sleeper], clock=clock, max_concurrent=4) as s:
        await _until(lambda: len(Sleeper.runs) == 4)
        await trio.sleep(1)
        await s.shutdown()
    assert sorted(tag for tag, _ in Sleeper.runs) == [0, 1, 2, 3]
    assert len(await store.dead_letters()) == 4
    pending = await store.pending(PendingQuery())
    assert len(pending) == len({c.id for c in pending}) == 4
    assert len(store.claims) == 1


# -- a completion being written holds no slot ------------------------------------------


async def test_a_completion_being_written_holds_no_slot(
    autojump_clock: MockClock, clock: Callable[[], datetime]
) -> None:
    # Completions take 1 s: the next four calls start as the first four end (their
    # rows still leased), never more than four at once; every row is gone at the end.
    store = Recording(write_for=1.0)
    await _schedule(store, clock(), _payloads([0.5] * 12))
    async with open_scheduler(store, [Sleeper], clock=clock, max_concurrent=4) as s:
        await _until(lambda: s.statistics().classes["sleeper"].succeeded == 12)
        await s.shutdown()
    assert [t for t, _, _ in store.claims] == [0, pytest.approx(0.5), pytest.approx(1.0)]
    assert Sleeper.peak == 4
    assert sorted(tag for tag, _ in Sleeper.runs) == list(range(12))
    assert await store.pending(PendingQuery()) == []


async def test_an_outage_during_completions_loses_and_repeats_nothing(
    autojump_clock: MockClock, clock: Callable[[], datetime]
) -> None:
    # The store is down for the first completions: they are tried again (with
    # backoff) while later calls run; every call runs once, every row is gone.
    store = Recording(write_for=0.1)
    store.down = 6
    await _schedule(store, clock(), _payloads([0.0] * 12))
    async with open_scheduler(store, [Sleeper], clock=clock, max_concurrent=4) as s:
        await _until(lambda: s.statistics().classes["sleeper"].succeeded == 12)
        await s.shutdown()
    assert sorted(tag for tag, _ in Sleeper.runs) == list(range(12))
    assert await store.pending(PendingQuery()) == []


async def test_shutdown_waits_for_completions_in_flight(
    autojump_clock: MockClock, clock: Callable[[], datetime]
) -> None:
    # Shutdown while completions are being written: it waits for them (the rows are
    # gone when it returns); the calls claimed meanwhile ran or went back, none lost.
    store = Recording(write_for=3.0)
    await _schedule(store, clock(), _payloads([0.0] * 8))
    async with open_scheduler(store, [Sleeper], clock=clock, max_concurrent=4) as s:
        await _until(lambda: store.completing >= 4)
        await s.shutdown()
    assert store.completing == 0
    ran = {tag for tag, _ in Sleeper.runs}
    assert len(ran) == len(Sleeper.runs)  # none ran twice
    pending = await store.pending(PendingQuery())
    assert len(pending) == 8 - s.statistics().classes["sleeper"].succeeded


async def test_completions_that_never_answer_leave_the_rows_leased(
    autojump_clock: MockClock, clock: Callable[[], datetime]
) -> None:
    # The completions hang and give up after 10 s each: the calls succeeded, but their
    # rows stay leased (they run again once the lease expires: at-least-once), and
    # the scheduler did not stall meanwhile.
    store = Recording(write_for=1000.0)
    await _schedule(store, clock(), _payloads([0.0] * 8))
    async with open_scheduler(
        store, [Sleeper], clock=clock, max_concurrent=4, lease_duration=600
    ) as s:
        await _until(lambda: len(Sleeper.runs) == 8)
        assert trio.current_time() < 1
        await s.shutdown()
    assert len(await store.pending(_with_leased(clock()))) == 8

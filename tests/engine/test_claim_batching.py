"""Claims made for many freed slots at once (the dispatcher waits for slots that calls
writing their outcome are about to free), and what that must not break: no lost or
repeated call when a write is slow, fails or is cut by shutdown."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
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
    StoreUnavailableError,
    open_scheduler,
)


class Sleeper(FutureCall):
    """Sleeps ``payload["sleep"]`` seconds; records (tag, start time) of each run."""

    name = "sleeper"
    delivery = Delivery.AT_LEAST_ONCE
    max_concurrent = 4
    runs: ClassVar[list[tuple[int, float]]] = []

    async def invoke(self, session: Any, payload: Any) -> None:
        Sleeper.runs.append((payload["tag"], trio.current_time()))
        await trio.sleep(payload["sleep"])


class Recording(MemoryStore):
    """Records each claim that handed calls over: (time, limit asked, calls); each
    completion takes ``complete_for`` seconds (or fails while ``down``)."""

    def __init__(self, complete_for: float = 1.0) -> None:
        super().__init__()
        self.claims: list[tuple[float, int, int]] = []
        self.complete_for = complete_for
        self.down = 0  # completions that fail with StoreUnavailableError, from now
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
            await trio.sleep(self.complete_for)
            if self.down:
                self.down -= 1
                raise StoreUnavailableError("the store is down (test)")
            return await super().complete(owner, call_id)
        finally:
            self.completing -= 1


async def _schedule(store: MemoryStore, now: datetime, sleeps: list[float]) -> None:
    await store.schedule(
        [
            NewCall(
                name="sleeper",
                payload=f'{{"tag": {k}, "sleep": {s}}}',
                due_at=now,
                scheduled_at=now,
            )
            for k, s in enumerate(sleeps)
        ]
    )


@pytest.fixture(autouse=True)
def _fresh_runs() -> None:
    Sleeper.runs = []


async def test_a_slot_freed_while_others_write_waits_for_them(
    autojump_clock: MockClock, clock: Callable[[], datetime]
) -> None:
    # One call ends at once (its write ends at 1), three at 0.5 (theirs end at 1.5):
    # the slot freed at 1 is not claimed alone; one claim at 1.5 fills all four.
    store = Recording(complete_for=1.0)
    await _schedule(store, clock(), [0, 0.5, 0.5, 0.5] + [0] * 4)
    async with open_scheduler(store, [Sleeper], clock=clock, max_concurrent=4) as s:
        while len(Sleeper.runs) < 8:  # noqa: ASYNC110 - autojump clock, deterministic
            await trio.sleep(0.01)
        await s.shutdown()
    assert [(t, limit, n) for t, limit, n in store.claims] == [
        (0, 4, 4),
        (pytest.approx(1.5), 4, 4),
    ]
    assert sorted(tag for tag, _ in Sleeper.runs) == list(range(8))
    assert await store.pending(PendingQuery()) == []


async def test_calls_ending_together_are_claimed_for_together(
    autojump_clock: MockClock, clock: Callable[[], datetime]
) -> None:
    # At-most-once calls write nothing: the four that end together free four slots in
    # one scheduling round, and one claim fills them (not one, then three).
    store = Recording()
    at_most_once = type("AtMostOnce", (Sleeper,), {"delivery": Delivery.AT_MOST_ONCE})
    await _schedule(store, clock(), [1.0] * 12)
    async with open_scheduler(store, [at_most_once], clock=clock, max_concurrent=4) as s:
        while len(Sleeper.runs) < 12:  # noqa: ASYNC110 - autojump clock, deterministic
            await trio.sleep(0.01)
        await s.shutdown()
    assert [n for _, _, n in store.claims] == [4, 4, 4]


async def test_an_outage_during_the_writes_delays_the_claim_and_loses_nothing(
    autojump_clock: MockClock, clock: Callable[[], datetime]
) -> None:
    # The store is down for the first completions: they are tried again (with
    # backoff) while the dispatcher waits for their slots; then every call runs once
    # and every row is gone.
    store = Recording(complete_for=0.1)
    store.down = 6
    await _schedule(store, clock(), [0.0] * 12)
    async with open_scheduler(store, [Sleeper], clock=clock, max_concurrent=4) as s:
        while s.statistics().classes["sleeper"].succeeded < 12:  # noqa: ASYNC110
            await trio.sleep(0.01)
        await s.shutdown()
    assert sorted(tag for tag, _ in Sleeper.runs) == list(range(12))
    assert await store.pending(PendingQuery()) == []


async def test_writes_that_never_answer_hold_the_claim_back_for_their_bound_only(
    autojump_clock: MockClock, clock: Callable[[], datetime]
) -> None:
    # Completions hang; each write gives up after CLEANUP_TIMEOUT (10 s) and its row
    # stays leased (it runs again once the lease expires). The dispatcher claims
    # again once those slots are free: it does not stall with them.
    store = Recording(complete_for=1000.0)
    await _schedule(store, clock(), [0.0] * 8)
    async with open_scheduler(
        store, [Sleeper], clock=clock, max_concurrent=4, lease_duration=600
    ) as s:
        await trio.sleep(15)
        assert [(t, n) for t, _, n in store.claims] == [(0, 4), (pytest.approx(10), 4)]
        await s.shutdown()


async def test_shutdown_while_waiting_for_writes_hands_nothing_over_twice(
    autojump_clock: MockClock, clock: Callable[[], datetime]
) -> None:
    # Shutdown begins while the dispatcher waits for the slots of calls writing their
    # completions: those writes finish (shielded), nothing more is claimed, and the
    # calls not started are still pending, each once.
    store = Recording(complete_for=5.0)
    await _schedule(store, clock(), [0.0] * 8)
    async with open_scheduler(store, [Sleeper], clock=clock, max_concurrent=4) as s:
        while store.completing < 4:  # noqa: ASYNC110 - autojump clock, deterministic
            await trio.sleep(0.01)
        await s.shutdown()
    assert sorted(tag for tag, _ in Sleeper.runs) == [0, 1, 2, 3]
    assert s.statistics().classes["sleeper"].succeeded == 4
    pending = await store.pending(PendingQuery())
    assert sorted(c.id for c in pending) == sorted({c.id for c in pending})
    assert len(pending) == 4
    assert len(store.claims) == 1

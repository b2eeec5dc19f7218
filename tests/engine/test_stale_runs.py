"""A run whose lease was given up writes nothing when it ends (found in the final review).

All run on the memory store (or a subclass injecting a fault) under the autojump clock.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any, ClassVar

import trio
from trio.testing import MockClock

from trio_futurecalls import (
    Delivery,
    FixedBackoff,
    FutureCall,
    MemoryStore,
    NewCall,
    PendingQuery,
    StoreUnavailableError,
    open_scheduler,
)


class RenewalsDown(MemoryStore):
    """Lease renewals fail while ``down``."""

    down = False

    async def renew(self, owner: str, call_ids: Any, expires_at: datetime) -> set[int]:
        if self.down:
            raise StoreUnavailableError("connection reset")
        return await super().renew(owner, call_ids, expires_at)


class StuckThenFails(FutureCall):
    """Attempt 1 cannot be cancelled (as if blocked in a thread) and then fails;
    later attempts run for 200 s."""

    name = "stuck-then-fails"
    delivery = Delivery.AT_LEAST_ONCE
    max_concurrent = None
    retry_backoff = FixedBackoff(1)
    runs: ClassVar[list[tuple[int, float]]] = []

    async def invoke(self, session: Any, payload: Any) -> None:
        StuckThenFails.runs.append((self.info.attempt, trio.current_time()))
        if self.info.attempt == 1:
            with trio.CancelScope(shield=True):
                await trio.sleep(100)
            raise RuntimeError("the old run ends, late, with an error")
        await trio.sleep(200)


async def test_the_old_run_of_a_call_claimed_again_writes_nothing(
    autojump_clock: MockClock, clock: Callable[[], datetime]
) -> None:
    StuckThenFails.runs = []
    store = RenewalsDown()
    due = clock()
    (call_id,) = await store.schedule(
        [NewCall(name=StuckThenFails.name, payload="null", due_at=due, scheduled_at=due)]
    )
    async with open_scheduler(
        store, [StuckThenFails], clock=clock, lease_duration=30, lease_renew_interval=10
    ) as s:
        await trio.sleep(5)
        store.down = True  # attempt 1 loses its lease; at 30 s the call is claimed again
        await trio.sleep(30)
        store.down = False
        assert [a for a, _ in StuckThenFails.runs] == [1, 2]
        await trio.sleep(80)  # attempt 1 has ended (at ~100 s); attempt 2 runs until ~230 s
        running = sorted(c.attempt for c in s.running())
        assert running == [2]
        # The second run still holds the row; nothing else runs the call meanwhile.
        assert store._owners.get(call_id) == s.owner
        assert await store.pending(PendingQuery(now=clock())) == []
        assert [a for a, _ in StuckThenFails.runs] == [1, 2]
        await s.shutdown(0)

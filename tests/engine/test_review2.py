"""Second review of cancelling running calls, pause and cluster tokens (memory store,
autojump clock)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any, ClassVar

import trio
import trio.testing
from trio.testing import MockClock

from trio_futurecalls import (
    CancelOutcome,
    Delivery,
    FixedBackoff,
    FutureCall,
    MemoryStore,
    PendingQuery,
    open_scheduler,
)
from trio_futurecalls._model import StoredCall


class SlowPutBack(MemoryStore):
    """A memory store whose ``put_back`` takes a second (a slow database write)."""

    async def put_back(self, calls: Sequence[StoredCall], owner: str | None) -> int:
        await trio.sleep(1)
        return await super().put_back(calls, owner)


async def test_cancel_while_a_failed_at_most_once_call_stores_its_retry(
    autojump_clock: MockClock, clock: Callable[[], datetime]
) -> None:
    """The call failed and its retry is being stored (put_back) when it is cancelled:
    the cancel must not answer NOT_FOUND and let the retry run."""

    class Flaky(FutureCall):
        name = "flaky"
        delivery = Delivery.AT_MOST_ONCE
        max_attempts = 3
        retry_backoff = FixedBackoff(600)  # longer than a request lives
        starts: ClassVar[list[int]] = []

        async def invoke(self, session: Any, payload: Any) -> None:
            type(self).starts.append(self.info.id)
            raise RuntimeError("boom")

    store = SlowPutBack()
    async with open_scheduler(store, [Flaky], clock=clock) as s:
        call_id = await s.schedule(Flaky, None)
        await trio.sleep(0.5)  # it ran, failed, and its retry is being stored
        assert Flaky.starts == [call_id]
        outcome = await s.cancel(call_id)
        await trio.sleep(3600)
        assert Flaky.starts == [call_id], "a cancelled call ran again"
        assert outcome is not CancelOutcome.NOT_FOUND
        assert await store.pending(PendingQuery(now=clock())) == []
        await s.shutdown()


async def test_dependents_end_once_when_a_retry_being_stored_is_cancelled(
    autojump_clock: MockClock, clock: Callable[[], datetime]
) -> None:
    class Flaky(FutureCall):
        name = "flaky"
        delivery = Delivery.AT_MOST_ONCE
        max_attempts = 3
        retry_backoff = FixedBackoff(5)
        starts: ClassVar[list[int]] = []

        async def invoke(self, session: Any, payload: Any) -> None:
            type(self).starts.append(self.info.id)
            raise RuntimeError("boom")

    class After(FutureCall):
        name = "after"
        ran: ClassVar[list[int]] = []

        async def invoke(self, session: Any, payload: Any) -> None:
            type(self).ran.append(self.info.id)

    store = SlowPutBack()
    async with open_scheduler(store, [Flaky, After], clock=clock) as s:
        first = await s.schedule(Flaky, None, delay=1)
        second = await s.schedule(After, None, after=[first])
        await trio.sleep(1.5)  # it ran, failed, and its retry is being stored
        assert Flaky.starts == [first]
        assert await s.cancel(first) is not CancelOutcome.NOT_FOUND
        await trio.sleep(3600)
        assert Flaky.starts == [first]
        assert After.ran == []
        (dead,) = await store.dead_letters()
        assert dead.call_id == second
        assert "cancelled" in dead.error
        assert await store.pending(PendingQuery(now=clock())) == []
        await s.shutdown()


async def test_a_call_claimed_as_shutdown_begins_is_not_handed_back_if_cancelled(
    autojump_clock: MockClock, clock: Callable[[], datetime]
) -> None:
    """A claim races a cancel request and shutdown: the claimed call never starts,
    and it must not go back to the store (it would run at the next start)."""
    ran: list[int] = []

    class Once(FutureCall):
        name = "once"
        max_concurrent = 1

        async def invoke(self, session: Any, payload: Any) -> None:
            ran.append(self.info.id)

    class Racing(MemoryStore):
        scheduler: Any = None
        outcome: CancelOutcome | None = None

        async def claim(self, now: datetime, slots: Any, limit: int, lease: Any = None) -> Any:
            taken = await super().claim(now, slots, limit, lease)
            if taken.calls and self.outcome is None:
                # Between the claim and the start: the request is stored and handled
                # (this worker runs nothing of it yet), then shutdown begins.
                self.outcome = await self.scheduler.cancel(taken.calls[0].id)
                self.scheduler._engine.request_shutdown(None)
            return taken

    store = Racing()
    async with open_scheduler(store, [Once], clock=clock) as s:
        store.scheduler = s
        (call_id,) = [await s.schedule(Once, None)]
        await trio.sleep(5)
    assert store.outcome is not None
    assert await store.pending(PendingQuery()) == []
    async with open_scheduler(store, [Once], clock=clock):
        await trio.sleep(5)
    assert ran == []
    assert call_id > 0

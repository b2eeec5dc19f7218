"""Second review of dependencies through the engine: the lease keeper now also ends
the records other workers abandoned."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

import trio
from trio.testing import MockClock

from trio_futurecalls import Delivery, FutureCall, Lease, MemoryStore, open_scheduler


class SlowAbandonedLookups(MemoryStore):
    """A store whose look for abandoned prerequisites hangs (on PostgreSQL: its
    transaction waits for a row another transaction holds; or the server is slow),
    while renewals answer at once."""

    async def end_abandoned_prerequisites(self, now: datetime) -> int:
        await trio.sleep_forever()
        raise AssertionError("unreachable")


async def test_a_slow_look_for_abandoned_prerequisites_does_not_let_a_lease_run_out(
    autojump_clock: MockClock, clock: Callable[[], datetime]
) -> None:
    """An at-least-once call runs for long; lease_duration=10, lease_renew_interval=6
    (allowed: shorter than the lease). The keeper renews at 6 (until 16) and plans
    its next renewal 4.5 s later; but the look for abandoned prerequisites that
    follows each round may take up to an interval (6 s), and the pause is not
    shortened by it: the next renewal comes at 16.5, after the lease ran out at 16.
    Meanwhile the call runs on, not stopped, while another worker can claim it: it
    runs twice at once (the keeper's promise is to stop it a margin before)."""
    running: list[bool] = []

    class Long(FutureCall):
        name = "long"
        delivery = Delivery.AT_LEAST_ONCE

        async def invoke(self, session: Any, payload: Any) -> None:
            running.append(True)
            try:
                await trio.sleep(100)
            finally:
                running.clear()

    store = SlowAbandonedLookups()
    async with open_scheduler(
        store, [Long], clock=clock, lease_duration=10, lease_renew_interval=6
    ) as s:
        await s.schedule(Long, None)
        await trio.sleep(16.2)
        other = Lease(owner="other", expires_at=clock() + timedelta(seconds=10), names={"long"})
        taken = (await store.claim(clock(), {"long": 1}, 1, other)).calls
        # Either the first run was stopped before its lease ran out, or it still holds it.
        assert not (running and taken), "the call runs on while another worker has it"
        await s.shutdown(0.1)

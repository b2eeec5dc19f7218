"""Second review of dependencies through the engine: the lease keeper now also ends
the records other workers abandoned."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

import trio
from helpers import Recorder, make_call
from trio.testing import MockClock

from trio_futurecalls import (
    Delivery,
    FutureCall,
    Lease,
    MemoryStore,
    open_scheduler,
    run_due_calls,
    schedule_chain,
)


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
        other = Lease(
            owner="other", expires_at=clock() + timedelta(seconds=10), names=frozenset({"long"})
        )
        taken = (await store.claim(clock(), {"long": 1}, 1, other)).calls
        # Either the first run was stopped before its lease ran out, or it still holds it.
        assert not (running and taken), "the call runs on while another worker has it"
        await s.shutdown(0.1)


async def test_run_once_workers_end_what_a_stopped_worker_abandoned(
    autojump_clock: MockClock, clock: Callable[[], datetime]
) -> None:
    """A deployment of run-once workers (``run_due_calls``, ``futurecalls run --once``
    from cron): a worker was killed while it ran an at-most-once prerequisite, and
    its record expired long ago. Every later run-once worker finishes well within a
    renewal interval, so its lease keeper never makes a round: no worker ever ends
    the record, and the dependent waits forever (the README: "once the record
    expired, the lease keeper of any worker on the store ends its dependents")."""
    rec = Recorder()
    first, after = make_call("first", rec), make_call("after", rec)
    store = MemoryStore()
    _, after_id = await schedule_chain(
        store, [(first, {"tag": "1"}), (after, {"tag": "2"})], clock=clock
    )
    lease = Lease(owner="dead", expires_at=clock() + timedelta(seconds=60), names=frozenset())
    (claimed,) = (await store.claim(clock(), {"first": 1}, 1, lease)).calls
    assert claimed.dependents
    await trio.sleep(3600)  # the worker is long gone, its record long expired
    for _ in range(3):  # run-once workers, one a minute
        await run_due_calls(store, [first, after], clock=clock, lease_duration=60)
        await trio.sleep(60)
    assert [d.call_id for d in await store.dead_letters()] == [after_id]

"""Recurring schedules on PostgreSQL when the database goes away and comes back.

Real server, real time: a scheduler reaches the server through a proxy the test cuts
(every connection reset, as when the server restarts) and restores. No tick may run
twice and, with ``misfire="all"``, none may be missing once the server is back.
"""

from __future__ import annotations

from collections import Counter
from datetime import datetime, timedelta
from typing import Any

import pytest
import trio
from pg_support import store_behind_proxy, until

from trio_futurecalls import Delivery, FutureCall, open_scheduler

EVERY = 0.2


async def test_ticks_survive_a_database_outage_once_each(
    caplog: pytest.LogCaptureFixture,
) -> None:
    ran: Counter[datetime] = Counter()

    class Tick(FutureCall):
        name = "pg.tick"
        delivery = Delivery.AT_LEAST_ONCE
        max_concurrent = None

        async def invoke(self, session: Any, payload: Any) -> None:
            assert self.info.tick_at is not None
            ran[self.info.tick_at] += 1

    async with (
        store_behind_proxy(connect_timeout=1.0, command_timeout=2.0, min_pool_size=1) as (
            store,
            proxy,
        ),
        open_scheduler(store, [Tick], grace_period=5) as scheduler,
    ):
        info = await scheduler.schedule_recurring(Tick, key="k", every=EVERY, misfire="all")
        await until(lambda: len(ran) >= 3, 10)
        proxy.cut("reset")  # the server is gone: fires and claims fail
        await trio.sleep(1.5)
        proxy.cut("forward")  # back: the ticks due meanwhile are fired once each
        before = len(ran)
        await until(lambda: len(ran) >= before + 10, 30)
        (stored,) = await scheduler.recurring()
    assert stored.last_tick is not None
    assert info.next_tick is not None
    expected = []
    tick = info.next_tick
    while tick <= stored.last_tick:
        expected.append(tick)
        tick += timedelta(seconds=EVERY)
    twice = {t: n for t, n in ran.items() if n > 1}
    assert not twice, f"ran more than once: {twice}"
    # Every tick up to the last one fired ran, except runs still pending at the end.
    assert set(ran) <= set(expected)
    assert len(expected) - len(ran) <= 3, sorted(set(expected) - set(ran))
    assert stored.runs == len(expected)
    assert stored.skipped_misfire == 0
    assert "could not fire recurring schedules" in caplog.text  # the outage was real

"""Metrics: one unreadable recurring row must not take the queue-length metrics down
too (it did; found by a review)."""

from __future__ import annotations

import sqlite3
from contextlib import closing
from pathlib import Path
from typing import Any

from trio_futurecalls import FutureCall, open_scheduler, open_sqlite_store
from trio_futurecalls.metrics import SchedulerCollector


class Quick(FutureCall):
    name = "quick"

    async def invoke(self, session: Any, payload: Any) -> None:
        pass


async def test_a_hostile_recurring_row_does_not_hide_queue_lengths(tmp_path: Path) -> None:
    path = tmp_path / "calls.sqlite3"
    async with open_sqlite_store(path) as store, open_scheduler(store, [Quick], execute=False) as s:
        await s.schedule(Quick, None, delay=3600)
        await s.schedule_recurring(Quick, key="good", every=60)
        # Another program wrote a schedule past the CHECKs (time zone as a blob).
        with closing(sqlite3.connect(path, isolation_level=None)) as conn:
            conn.execute("PRAGMA ignore_check_constraints=ON")
            conn.execute(
                "INSERT INTO futurecalls_recurring SELECT 'bad', name, payload, identifier, cron,"
                " every, CAST('UTC' AS BLOB), start_at, end_at, misfire, overlap, anchor,"
                " next_tick, last_tick,"
                " last_call_id, runs, skipped_overlap, skipped_misfire, created_at, updated_at"
                " FROM futurecalls_recurring WHERE key = 'good'"
            )
        assert await s.queue_lengths()  # the queue lengths are readable
        collector = SchedulerCollector(s)
        up = await collector.refresh_queue_lengths()
        names = {m.name for m in collector.collect() if m.samples}
        assert up, "store_up=0 although the store answers"
        assert "futurecalls_calls_pending" in names, names

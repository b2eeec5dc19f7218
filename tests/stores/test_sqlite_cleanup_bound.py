"""SQLite: a write after a call is bounded by CLEANUP_TIMEOUT, even while another
process holds the lock (found in the final review).

Real files, threads and time (a second SQLite connection holds the write lock).
"""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path
from typing import Any

import pytest
import trio

from trio_futurecalls import Delivery, FutureCall, open_scheduler, open_sqlite_store, schedule_call


async def test_cleanup_timeout_bounds_a_release_on_a_locked_sqlite_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bound = 1.0
    monkeypatch.setattr("trio_futurecalls._writes.CLEANUP_TIMEOUT", bound)
    # Deregistering the worker (after the calls' writes) is bounded on its own; the
    # file is still locked then, so it takes all of its (shortened) bound.
    monkeypatch.setattr("trio_futurecalls._presence.DEREGISTER_TIMEOUT", 0.2)
    started = trio.Event()

    class Hold(FutureCall):
        name = "hold"
        delivery = Delivery.AT_LEAST_ONCE

        async def invoke(self, session: Any, payload: Any) -> None:
            started.set()
            await trio.sleep_forever()

    path = tmp_path / "calls.sqlite3"
    # Each attempt would wait 3 s for the lock: without the bound's cut, shutdown
    # took up to CLEANUP_TIMEOUT + 3 s (the last attempt started just before the bound).
    async with open_sqlite_store(path, busy_timeout=3.0) as store:
        await schedule_call(store, Hold, None)
        other = sqlite3.connect(path)
        try:
            async with open_scheduler(store, [Hold], grace_period=0):
                with trio.fail_after(10):
                    await started.wait()
                other.execute("BEGIN EXCLUSIVE")  # another program holds the write lock
                begun = time.monotonic()
            took = time.monotonic() - begun
        finally:
            other.rollback()
            other.close()
    # A bound, not a speed target: 1 s plus scheduling noise, far from the 4 s of old.
    assert took < bound + 1.5, f"shutdown took {took:.2f} s; CLEANUP_TIMEOUT is {bound} s"

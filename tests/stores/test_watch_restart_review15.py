"""Review of issue 15: a store's watcher stopped and wanted again before its run has
ended (one scheduler stops as the next starts on the same store) hears every change."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import trio

from trio_futurecalls import NewCall, open_sqlite_store


async def test_a_watcher_wanted_again_while_ending_misses_no_commit(tmp_path: Path) -> None:
    path = tmp_path / "calls.sqlite3"
    now = datetime.now(UTC)
    async with (
        open_sqlite_store(path, recheck_interval=0.05) as store,
        open_sqlite_store(path, recheck_interval=None) as other,
    ):
        first = store.add_listener(lambda due: None)
        assert await store.wait_listening()
        heard = trio.Event()
        first()  # the watcher's run is cancelled...
        second = store.add_listener(lambda due: heard.set())  # ...wanted before it ended
        await store.wait_listening()
        # Another process commits before the next run reads data_version for the
        # first time (the store's thread is busy meanwhile).
        async with store._limiter:
            await other.schedule([NewCall(name="a", payload="1", due_at=now, scheduled_at=now)])
        with trio.move_on_after(3):
            await heard.wait()
        second()
        assert heard.is_set(), "the listener never heard of the other connection's commit"

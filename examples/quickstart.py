"""Quickstart: future calls on the embedded SQLite store, no server needed.

Two kinds of call with different limits: a slow report (one at a time) and quick
emails (three at a time). The long report does not hold back the emails. Finally the
scheduler shuts down gracefully: a call due later stays in the file for next time.

Run it with:  python examples/quickstart.py [PATH]
Without PATH the file is in a temporary folder, removed when the script exits (so
each run starts empty); with PATH it is kept, and the next run finds tomorrow's call.
"""

from __future__ import annotations

import logging
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import attrs
import trio

from trio_futurecalls import FutureCall, SQLiteSession, open_scheduler, open_sqlite_store

STARTED = time.monotonic()


def say(message: str) -> None:
    print(f"[{time.monotonic() - STARTED:5.2f}s] {message}", flush=True)


@attrs.frozen
class Email:
    to: str
    subject: str


class SendEmail(FutureCall):
    name = "send-email"
    max_concurrent = 3  # up to three emails at once
    payload_type = Email  # payloads round-trip through JSON into this attrs class

    async def invoke(self, session: SQLiteSession, payload: Email) -> None:
        say(f"email #{self.info.id} to {payload.to}: {payload.subject!r} ...")
        await trio.sleep(0.2)  # pretend to talk to a mail server
        # The session is this call's own connection to the store's database. Its
        # methods and $1 placeholders are PostgreSQL's too: this code runs on both.
        await session.execute("CREATE TABLE IF NOT EXISTS sent (recipient TEXT)")
        await session.execute("INSERT INTO sent VALUES ($1)", payload.to)
        say(f"email #{self.info.id} sent")


class BuildReport(FutureCall):
    name = "build-report"
    # max_concurrent defaults to 1: reports run one at a time.

    async def invoke(self, session: SQLiteSession, payload: Any) -> None:
        say(f"report {payload['title']!r} started (slow)")
        await trio.sleep(2.0)
        say(f"report {payload['title']!r} done")


async def main(path: Path, kept: bool) -> None:
    async with (
        open_sqlite_store(path) as store,
        open_scheduler(store, [SendEmail, BuildReport], max_concurrent=10) as scheduler,
    ):
        await scheduler.schedule(BuildReport, {"title": "quarterly"})
        for i in range(6):
            await scheduler.schedule(
                SendEmail, Email(f"user{i}@example.com", "hello"), delay=0.1, identifier="batch-1"
            )
        tomorrow = await scheduler.schedule(BuildReport, {"title": "tomorrow"}, delay=86400)
        await trio.sleep(1.5)
        say("all six emails went out while the report was still running")
        say(f"pending now: {[c.id for c in await scheduler.pending()]} (call #{tomorrow})")
        say("leaving the block: graceful shutdown waits for the report")
    stats = scheduler.statistics()
    for name, cls_stats in stats.classes.items():
        say(f"{name}: {cls_stats.succeeded} succeeded, {cls_stats.failed} failed")
    if kept:
        say(f"the call due tomorrow is still stored in {path}")
    else:
        say(f"the call due tomorrow is stored in {path}, a temporary file removed on exit")
        say("(give a path to keep it: python examples/quickstart.py calls.sqlite3)")


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING)
    with tempfile.TemporaryDirectory() as folder:
        kept = len(sys.argv) > 1
        target = Path(sys.argv[1]) if kept else Path(folder) / "calls.sqlite3"
        trio.run(main, target, kept)

"""``futurecalls workers``: the live workers of a store (read-only).

Each scheduler that executes calls registers in its store and heartbeats; this lists
the rows not expired, by start time. Host and id are shown with control characters
escaped: another program may have written them, and a table cell must stay one line.
"""

from __future__ import annotations

import argparse
from datetime import UTC, datetime

from ._commands import store_of
from ._output import iso, print_json, print_table


def cell(text: str) -> str:
    """``text`` with control characters (newlines, escapes) shown as ``\\xNN``."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


async def cmd_workers(args: argparse.Namespace) -> int:
    async with store_of(args) as store:
        workers = await store.workers(datetime.now(UTC))
    if args.json:
        print_json(
            [
                {
                    "id": w.id,
                    "host": w.host,
                    "pid": w.pid,
                    "started_at": iso(w.started_at),
                    "heartbeat_at": iso(w.heartbeat_at),
                    "expires_at": iso(w.expires_at),
                    "running": w.running,
                    "limits": w.limits,
                }
                for w in workers
            ]
        )
    else:
        print_table(
            ["ID", "HOST", "PID", "STARTED", "LAST HEARTBEAT", "RUNNING"],
            (
                [
                    cell(w.id),
                    cell(w.host),
                    w.pid,
                    iso(w.started_at),
                    iso(w.heartbeat_at),
                    w.running,
                ]
                for w in workers
            ),
        )
    return 0

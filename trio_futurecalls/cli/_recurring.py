"""The ``recurring`` commands: add, list and cancel recurring schedules by key.

A thin layer over the library: ``add`` builds the schedule as ``schedule_recurring``
does (the same checks) *before* the store is opened, so a bad cron expression, time
zone or key is a usage error (exit 2) that opens no store, then stores it with
``Store.put_recurring``; ``list`` and ``cancel`` are ``list_recurring`` and
``cancel_recurring``.
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import UTC, datetime

from .. import FutureCallsError, RecurringInfo, cancel_recurring, list_recurring
from .._recurring import build_schedule
from .._validate import check_recurring_key
from ._arguments import checked, parse_duration, parse_payload, parse_time
from ._commands import store_of
from ._known_names import check_known_name
from ._output import iso, json_or_text, print_json, print_table


def _optional_iso(value: datetime | None) -> str | None:
    return None if value is None else iso(value)


def schedule_json(info: RecurringInfo) -> dict[str, object]:
    """A schedule as one JSON object (times as ISO 8601 UTC, ``null`` when unset)."""
    return {
        "key": info.key,
        "name": info.name,
        "expression": info.expression,
        "cron": info.cron,
        "every": info.every,
        "timezone": info.timezone,
        "start": _optional_iso(info.start),
        "end": _optional_iso(info.end),
        "misfire": info.misfire,
        "overlap": info.overlap,
        "identifier": info.identifier,
        "payload": json_or_text(info.payload),
        "next_tick": _optional_iso(info.next_tick),
        "last_tick": _optional_iso(info.last_tick),
        "last_call_id": info.last_call_id,
        "runs": info.runs,
        "skipped_overlap": info.skipped_overlap,
        "skipped_misfire": info.skipped_misfire,
        "created_at": iso(info.created_at),
        "updated_at": iso(info.updated_at),
    }


def _table(schedules: list[RecurringInfo]) -> None:
    print_table(
        [
            "KEY",
            "NAME",
            "EXPRESSION",
            "TIMEZONE",
            "NEXT TICK",
            "LAST TICK",
            "RUNS",
            "SKIPPED OVERLAP/MISFIRE",
        ],
        (
            [
                s.key,
                s.name,
                s.expression,
                s.timezone,
                "finished" if s.next_tick is None else iso(s.next_tick),
                _optional_iso(s.last_tick),
                s.runs,
                f"{s.skipped_overlap}/{s.skipped_misfire}",
            ]
            for s in schedules
        ),
    )


async def cmd_recurring_add(args: argparse.Namespace) -> int:
    # Every argument is checked as schedule_recurring checks it, before the store is
    # opened; the schedule built here is what schedule_recurring would store.
    payload = json.loads(parse_payload(args.payload))
    every = None if args.every is None else parse_duration(args.every).total_seconds()
    start = None if args.start is None else parse_time(args.start, "--start")
    end = None if args.end is None else parse_time(args.end, "--end")
    now = datetime.now(UTC)

    def build(name: str) -> RecurringInfo:
        return build_schedule(
            name,
            payload,
            key=args.key,
            cron=args.cron,
            every=every,
            timezone=args.timezone,
            start=start,
            end=end,
            misfire=args.misfire,
            overlap=args.overlap,
            identifier=args.identifier,
            now=now,
        )

    info: RecurringInfo = checked(build, args.name)
    async with store_of(args) as store:
        if not args.allow_unknown:
            await check_known_name(store, info.name)
        stored = await store.put_recurring(info, not args.keep)
    if stored.overlap == "skip":
        print(
            f"note: overlap=skip holds only if {stored.name!r} is at-least-once on the "
            "workers (delivery = Delivery.AT_LEAST_ONCE); a worker that runs it at most "
            "once logs an error",
            file=sys.stderr,
        )
    if stored.created_at != info.created_at:
        status = "updated" if stored.updated_at == info.updated_at else "unchanged"
    else:
        status = "added"
    if args.json:
        print_json({"status": status, **schedule_json(stored)})
        return 0
    if status == "unchanged":
        why = "--keep" if args.keep else "same definition"
        print(f"unchanged ({why}): a schedule with key {stored.key!r} exists, as stored:")
    else:
        print(f"{status}:")
    _table([stored])
    return 0


async def cmd_recurring_list(args: argparse.Namespace) -> int:
    async with store_of(args) as store:
        schedules = await list_recurring(store)
    if args.json:
        print_json([schedule_json(s) for s in schedules])
    else:
        _table(schedules)
    return 0


async def cmd_recurring_cancel(args: argparse.Namespace) -> int:
    key: str = checked(check_recurring_key, args.key)
    async with store_of(args) as store:
        existed = await cancel_recurring(store, key)
    if not existed:
        raise FutureCallsError(f"no recurring schedule with key {key!r}")
    print(1)
    return 0

"""The store commands: migrate, schedule, list, cancel, stats and dead-letters
(``pause`` and ``resume`` are in ``_pause.py``).

Each opens the store of ``--store`` (``--schema`` for PostgreSQL), makes one or two
calls of the public API, prints the result and returns the exit code.
"""

from __future__ import annotations

import argparse
from contextlib import AbstractAsyncContextManager
from datetime import UTC, datetime

from .. import FutureCallsError, NewCall, Store, list_pending, queue_lengths
from .._cancels import cancel_call, cancel_identifier_calls
from .._open_store import parse_store_url
from .._options import utc_now
from .._redact import redact
from .._validate import (
    check_identifier,
    check_name,
    check_on_conflict,
    check_priority,
    check_unique_key,
)
from ._arguments import checked, due_time, parse_payload, parse_time
from ._known_names import check_known_name
from ._output import (
    ago,
    iso,
    iso_seconds,
    json_or_text,
    last_line,
    print_json,
    print_table,
    relative,
    shorten,
)
from ._scrape import stats_from_metrics
from ._store import open_cli_store


def store_of(args: argparse.Namespace) -> AbstractAsyncContextManager[Store]:
    """The store of ``--store`` (``--schema``, ``--pool-size`` for PostgreSQL), which
    must exist: no command but ``migrate`` (and ``worker --create``) creates one."""
    return open_cli_store(args)


async def cmd_migrate(args: argparse.Namespace) -> int:
    async with open_cli_store(args, create=True) as store:
        postgres = parse_store_url(args.store).kind == "postgres"
        where = f"schema {args.schema!r} of " if postgres else ""
        print(f"migrated: {where}{redact(args.store)} is up to date ({type(store).__name__})")
    return 0


async def cmd_schedule(args: argparse.Namespace) -> int:
    name = checked(check_name, args.name)
    identifier = checked(check_identifier, args.identifier)
    unique_key = checked(check_unique_key, args.unique_key)
    on_conflict = checked(check_on_conflict, args.on_conflict)
    priority = checked(check_priority, args.priority)
    payload = parse_payload(args.payload)
    now = datetime.now(UTC)
    due_at = due_time(args, now)
    new_call = NewCall(
        name=name,
        payload=payload,
        due_at=due_at,
        identifier=identifier,
        scheduled_at=now,
        unique_key=unique_key,
        on_conflict=on_conflict,
        priority=priority,
        after=tuple(args.after),
    )
    async with store_of(args) as store:
        if not args.allow_unknown:
            await check_known_name(store, name)
        (call_id,) = await store.schedule([new_call])
    print(call_id)
    return 0


async def cmd_list(args: argparse.Namespace) -> int:
    name = None if args.name is None else checked(check_name, args.name)
    identifier = checked(check_identifier, args.identifier)
    due_after = None if args.due_after is None else parse_time(args.due_after, "--due-after")
    due_before = None if args.due_before is None else parse_time(args.due_before, "--due-before")
    async with store_of(args) as store:
        calls = await list_pending(
            store,
            name,
            identifier=identifier,
            due_after=due_after,
            due_before=due_before,
            limit=args.limit,
        )
    now = datetime.now(UTC)
    if args.json:
        print_json(
            [
                {
                    "id": c.id,
                    "name": c.name,
                    "identifier": c.identifier,
                    "unique_key": c.unique_key,
                    "priority": c.priority,
                    "due_at": iso(c.due_at),
                    "scheduled_at": iso(c.scheduled_at),
                    "waiting_for": list(c.waiting_for),
                    "payload": json_or_text(c.payload),
                }
                for c in calls
            ]
        )
    else:
        print_table(
            [
                "ID",
                "NAME",
                "DUE",
                "DUE AT",
                "PRIORITY",
                "IDENTIFIER",
                "UNIQUE KEY",
                "WAITS FOR",
                "PAYLOAD",
            ],
            (
                [
                    c.id,
                    c.name,
                    relative(c.due_at, now),
                    iso_seconds(c.due_at),
                    c.priority,
                    c.identifier,
                    c.unique_key,
                    " ".join(map(str, c.waiting_for)) or None,
                    shorten(c.payload),
                ]
                for c in calls
            ),
        )
    return 0


async def cmd_cancel(args: argparse.Namespace) -> int:
    identifier = checked(check_identifier, args.identifier)
    async with store_of(args) as store:
        if identifier is not None:
            print(await cancel_identifier_calls(store, identifier, utc_now))
            return 0
        outcome = await cancel_call(store, args.id, utc_now)
    # pending / running / not_found (exit 1, as "recurring cancel" of an unknown key).
    print(outcome.value)
    return 0 if outcome else 1


async def cmd_stats(args: argparse.Namespace) -> int:
    if args.metrics_url is not None:
        return await stats_from_metrics(args.metrics_url, as_json=args.json)
    async with store_of(args) as store:
        # Paused classes are listed even with no pending call.
        paused = await store.paused()
        lengths = await queue_lengths(store, paused)
    if args.json:
        print_json(
            {
                name: {
                    "pending": q.pending,
                    "due": q.due,
                    "waiting": q.waiting,
                    "paused": name in paused,
                    "paused_at": iso(paused[name]) if name in paused else None,
                }
                for name, q in lengths.items()
            }
        )
    else:
        print_table(
            ["NAME", "PENDING", "DUE", "WAITING", "PAUSED"],
            (
                [n, q.pending, q.due, q.waiting, "yes" if n in paused else None]
                for n, q in lengths.items()
            ),
        )
    return 0


async def cmd_dead_list(args: argparse.Namespace) -> int:
    # An error is a call's failure as it was kept: it may name a connection string,
    # whose password is not shown (before shortening, which could cut the URL).
    name = None if args.name is None else checked(check_name, args.name)
    async with store_of(args) as store:
        letters = await store.dead_letters(name=name, limit=args.limit)
    if args.json:
        print_json(
            [
                {
                    "id": d.id,
                    "call_id": d.call_id,
                    "name": d.name,
                    "identifier": d.identifier,
                    "due_at": iso(d.due_at),
                    "scheduled_at": iso(d.scheduled_at),
                    "failed_at": iso(d.failed_at),
                    "attempts": d.attempts,
                    "error": redact(d.error),
                    "payload": json_or_text(d.payload),
                }
                for d in letters
            ]
        )
    else:
        # The error's last line: a traceback ends with the exception and its message.
        now = datetime.now(UTC)
        print_table(
            ["ID", "CALL ID", "NAME", "FAILED", "ATTEMPTS", "ERROR"],
            (
                [
                    d.id,
                    d.call_id,
                    d.name,
                    ago(d.failed_at, now),
                    d.attempts,
                    last_line(redact(d.error)),
                ]
                for d in letters
            ),
        )
    return 0


async def cmd_dead_requeue(args: argparse.Namespace) -> int:
    due_at = due_time(args, datetime.now(UTC))
    async with store_of(args) as store:
        call_id = await store.requeue_dead_letter(args.id, due_at, after=args.after)
    if call_id is None:
        raise FutureCallsError(f"no dead letter with id {args.id}")
    print(call_id)
    return 0


async def cmd_dead_purge(args: argparse.Namespace) -> int:
    async with store_of(args) as store:
        count = await store.purge_dead_letters(None if args.all else args.id)
    print(count)
    return 0

"""``futurecalls unknown-calls list|dead-letter``: pending calls whose name no one runs.

Such rows are kept by every worker (during a rolling deploy another may still know the
name), so an operator lists them and decides. The known names are those of ``--calls
MODULE:ATTR`` or, by default, those the live workers registered.
"""

from __future__ import annotations

import argparse
from datetime import UTC, datetime

from .. import FutureCallsError, Store
from .._admin import move_unknown_to_dead_letters, unknown_calls
from .._validate import check_name
from ._arguments import checked
from ._commands import store_of
from ._known_names import live_names
from ._output import iso, json_or_text, print_json, print_table, relative, shorten
from ._worker import load_calls


async def _known(args: argparse.Namespace, store: Store) -> set[str]:
    if args.calls is not None:
        return {cls.name for cls in load_calls(args.calls)}
    count, names = await live_names(store)
    if not count:
        raise FutureCallsError(
            "no live worker is registered in this store, so no one says which names are "
            "known; pass --calls MODULE:ATTR (the classes your workers run)"
        )
    return names


async def cmd_unknown_list(args: argparse.Namespace) -> int:
    if args.calls is not None:
        load_calls(args.calls)  # an import error before the store is opened
    async with store_of(args) as store:
        known = await _known(args, store)
        now = datetime.now(UTC)
        calls = await unknown_calls(store, known, now)
    if args.json:
        print_json(
            [
                {
                    "id": c.id,
                    "name": c.name,
                    "identifier": c.identifier,
                    "due_at": iso(c.due_at),
                    "scheduled_at": iso(c.scheduled_at),
                    "payload": json_or_text(c.payload),
                }
                for c in calls
            ]
        )
    else:
        print_table(
            ["ID", "NAME", "DUE", "IDENTIFIER", "PAYLOAD"],
            (
                [c.id, c.name, relative(c.due_at, now), c.identifier, shorten(c.payload)]
                for c in calls
            ),
        )
    return 0


async def cmd_unknown_dead_letter(args: argparse.Namespace) -> int:
    names = None if args.name is None else [checked(check_name, n) for n in args.name]
    if args.calls is not None:
        load_calls(args.calls)
    async with store_of(args) as store:
        known = await _known(args, store)
        moved = await move_unknown_to_dead_letters(store, known, names, datetime.now(UTC))
    print(moved)
    return 0

"""The ``pause`` and ``resume`` commands: pause a call class in the store, or end its
pause, by name (no import of the class).

A pause is kept in the store: every worker on it obeys at its next claim (see the
README, "Cancel and pause"). Exit 0 whether or not the class was paused already; the
message says which.
"""

from __future__ import annotations

import argparse
from datetime import UTC, datetime

from .._validate import check_name
from ._arguments import checked
from ._commands import store_of
from ._output import iso


async def cmd_pause(args: argparse.Namespace) -> int:
    name = checked(check_name, args.name)
    async with store_of(args) as store:
        if await store.pause(name, datetime.now(UTC)):
            print(f"paused: {name}")
            return 0
        since = (await store.paused()).get(name)
    when = "" if since is None else f" (since {iso(since)})"
    print(f"already paused: {name}{when}")
    return 0


async def cmd_resume(args: argparse.Namespace) -> int:
    name = checked(check_name, args.name)
    async with store_of(args) as store:
        resumed = await store.resume(name)
    print(f"resumed: {name}" if resumed else f"not paused: {name}")
    return 0

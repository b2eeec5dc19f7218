"""``futurecalls limits``: the cluster-wide limits of a store; set and remove them.

``limits list`` prints what every worker on the store obeys (README, "Cluster-wide
limits" and "Rate limits"); ``limits set NAME --concurrency N`` or ``--rate N --per
DURATION`` stores one (NAME ``*``: all classes together, concurrency only), as a
worker's start would (the last value set wins); ``limits remove NAME --concurrency``
(or ``--rate``) drops one. A thin layer over ``Store.cluster_limits``,
``set_cluster_limit`` and ``remove_cluster_limit``.
"""

from __future__ import annotations

import argparse
import getpass
import socket
from datetime import UTC, datetime

from .._cluster import describe
from .._cluster_limits import ALL_CLASSES, ClusterLimit
from .._validate import check_name
from ._arguments import UsageError, checked
from ._commands import store_of
from ._output import iso, print_json, print_table


def _name(text: str, rate: bool) -> str:
    if text == ALL_CLASSES and not rate:
        return text
    name: str = checked(check_name, text)
    return name


async def cmd_limits_list(args: argparse.Namespace) -> int:
    async with store_of(args) as store:
        limits = await store.cluster_limits()
    if args.json:
        print_json(
            [
                {
                    "kind": lim.kind,
                    "name": lim.name,
                    "tokens": lim.tokens,
                    "per_seconds": None if lim.per is None else lim.per.total_seconds(),
                    "set_at": iso(lim.set_at),
                    "set_by": lim.set_by,
                }
                for lim in limits
            ]
        )
    else:
        print_table(
            ["NAME", "KIND", "LIMIT", "PER", "SET AT", "SET BY"],
            (
                [
                    lim.name,
                    lim.kind,
                    lim.tokens,
                    None if lim.per is None else f"{lim.per.total_seconds():g} s",
                    iso(lim.set_at),
                    lim.set_by,
                ]
                for lim in limits
            ),
        )
    return 0


async def cmd_limits_set(args: argparse.Namespace) -> int:
    rate = args.rate is not None
    if rate == (args.concurrency is not None):
        raise UsageError("give one of --concurrency N or --rate N --per DURATION")
    if rate != (args.per is not None):
        raise UsageError("--per goes with --rate (and only with it)")
    limit = ClusterLimit(
        kind="rate" if rate else "concurrency",
        name=_name(args.name, rate),
        tokens=args.rate if rate else args.concurrency,
        per=args.per,
        set_at=datetime.now(UTC),
        set_by=f"futurecalls limits set ({getpass.getuser()}@{socket.gethostname()})",
    )
    async with store_of(args) as store:
        previous = await store.set_cluster_limit(limit)
    print(f"set: {describe(limit)}" + ("" if previous is None else f" (was {previous.tokens})"))
    return 0


async def cmd_limits_remove(args: argparse.Namespace) -> int:
    kind = "rate" if args.rate else "concurrency"
    name = _name(args.name, args.rate)
    async with store_of(args) as store:
        removed = await store.remove_cluster_limit(kind, name)
    print(f"removed: {kind} limit of {name}" if removed else f"no {kind} limit of {name}")
    return 0

"""Which store a command opens, and how: never a new one by surprise, and a PostgreSQL
pool the command sized itself.

* Only ``migrate``, and ``worker``/``run-once`` with ``--create``, create a store (an
  SQLite file, a PostgreSQL schema). Every other command needs one that exists: else
  :class:`NoStoreError` ("no trio_futurecalls store at ...; run `futurecalls migrate`"),
  an older one is refused (not migrated), and nothing is created by looking (an
  SQLite file is read through a read-only connection first; a PostgreSQL schema is
  opened without migrating).
* The PostgreSQL pool: ``--pool-size`` if given. Else a worker's is ``max_concurrent
  + 2`` (:func:`recommended_pool_size`) capped by what the server has room for (read
  through a first, small opening) less a tenth left to other clients; when the global
  limit is the default (not chosen by ``--max-concurrent`` or the environment) and
  that does not fit, the limit is lowered to what fits, and the worker says so. Other
  commands run one statement at a time: the smallest useful pool.
"""

from __future__ import annotations

import argparse
import logging
import os
import sqlite3
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, closing
from typing import Any, Final
from urllib.parse import quote

import attrs
import trio

from .. import (
    ENV_MAX_CONCURRENT,
    FutureCallsError,
    Store,
    StoreError,
    StoreNotFoundError,
    open_store,
)
from .._open_store import parse_store_url
from .._options import global_limit_from_env
from .._redact import redact
from ..stores._sql import migrations
from ._arguments import NOT_GIVEN

_log = logging.getLogger("trio_futurecalls.cli")

#: A command's pool: the dispatcher-less minimum (one statement at a time, one spare).
COMMAND_POOL_SIZE: Final = 3


class NoStoreError(FutureCallsError):
    """The command needs a store that exists, and there is none (exit code 1)."""


def where(args: argparse.Namespace) -> str:
    """The store of ``args`` as the messages name it (no password)."""
    target = parse_store_url(args.store)
    if target.kind == "postgres":
        return f"schema {args.schema!r} of {redact(args.store)}"
    return target.location if target.kind == "sqlite" else "memory://"


def _no_store(args: argparse.Namespace, create_hint: bool) -> NoStoreError:
    hint = " (or pass --create)" if create_hint else ""
    return NoStoreError(
        f"no trio_futurecalls store at {where(args)}; run `futurecalls migrate`{hint}"
    )


def _sqlite_version(path: str) -> int | None:
    """``PRAGMA user_version`` of the file at ``path`` read without writing anything
    (None: no such file; an unreadable file is left to the store to report)."""
    if not os.path.exists(path):
        return None
    uri = f"file:{quote(os.path.abspath(path))}?mode=ro"
    try:
        with closing(sqlite3.connect(uri, uri=True)) as conn:
            (version,) = conn.execute("PRAGMA user_version").fetchone()
    except sqlite3.Error:
        return -1
    return int(version)


@attrs.frozen
class Sizing:
    """A worker's PostgreSQL pool, and the global limit it was sized for."""

    #: The pool's size (None: not PostgreSQL, the store's own default).
    pool_size: int | None
    #: The global limit to run with (NOT_GIVEN: the scheduler's own default).
    max_concurrent: object
    #: Why the limit was lowered from the default (logged by the worker), or "".
    note: str = ""


def wanted_limit(args: argparse.Namespace) -> tuple[int | None, bool]:
    """The global limit a worker will run with, and whether someone chose it (the
    option or ``$TRIO_FUTURECALLS_MAX_CONCURRENT``)."""
    if args.max_concurrent is not NOT_GIVEN:
        limit: int | None = args.max_concurrent
        return limit, True
    chosen = bool(os.environ.get(ENV_MAX_CONCURRENT, "").strip())
    return global_limit_from_env(), chosen


def size_pool(limit: int | None, chosen: bool, room: int | None) -> Sizing:
    """The pool for ``limit`` running calls on a server with ``room`` connections free
    for this store (None: not known); a default limit that does not fit is lowered."""
    from ..stores.postgres import recommended_pool_size

    given: object = limit if chosen else NOT_GIVEN
    if room is None:
        return Sizing(recommended_pool_size(limit), given)
    spare = headroom(room)
    usable = room - spare
    fits = usable - 1  # next to the LISTEN connection
    if not chosen and limit is not None and limit + 2 > fits and fits >= 3:
        lowered = fits - 2
        note = (
            f"max_concurrent {lowered} (not {limit}): the PostgreSQL server has room for "
            f"{room} connections of this store: a pool of {fits}, the LISTEN connection, "
            f"and {spare} left for other clients; --max-concurrent or --pool-size choose "
            "otherwise"
        )
        return Sizing(fits, lowered, note)
    return Sizing(recommended_pool_size(limit, server_room=usable), given)


def headroom(room: int) -> int:
    """Free connections a worker leaves to others (a tenth, at least 2): the room was
    read a moment ago, the first opening's own connections may not have left the
    server yet, and an operator's psql or another worker starting should still fit."""
    return max(2, room // 10)


async def _options(args: argparse.Namespace, create: bool, pool_size: int | None) -> dict[str, Any]:
    target = parse_store_url(args.store)
    if target.kind == "postgres":
        size = args.pool_size if args.pool_size is not None else pool_size or COMMAND_POOL_SIZE
        return {"schema": args.schema, "migrate": create, "max_pool_size": size}
    if target.kind == "sqlite" and not create:
        version = await trio.to_thread.run_sync(_sqlite_version, target.location)
        if version is None or version == 0:
            raise _no_store(args, create_hint=hasattr(args, "create"))
        wanted = len(migrations("sqlite"))
        if 0 < version < wanted:
            # Opening would migrate it: only migrate (or --create) changes a store, as
            # on PostgreSQL; workers of the older version may still run on it.
            raise StoreError(
                f"the store at {where(args)} is at schema version {version} but this "
                f"library needs {wanted}: migrate it first (`futurecalls migrate`)"
            )
    return {}


@asynccontextmanager
async def open_cli_store(
    args: argparse.Namespace, *, create: bool = False, pool_size: int | None = None
) -> AsyncIterator[Store]:
    """The store of ``--store`` (``--schema``, ``--pool-size`` for PostgreSQL); unless
    ``create``, it must exist (:class:`NoStoreError`). ``pool_size``: the PostgreSQL
    pool this command wants (default: a command's); ``--pool-size`` beats it."""
    options = await _options(args, create, pool_size)
    try:
        async with open_store(args.store, **options) as store:
            yield store
    except StoreNotFoundError:
        raise _no_store(args, create_hint=hasattr(args, "create")) from None


async def read_room(args: argparse.Namespace, create: bool) -> int | None:
    """Connections the PostgreSQL server of ``args`` has free for a store (None: not
    known), read through a first, small opening (which creates the store if
    ``create``, and checks that it exists otherwise)."""
    async with open_cli_store(args, create=create) as store:
        room = getattr(store, "server_room", None)
    return None if room is None else int(room.free)


async def worker_sizing(args: argparse.Namespace, create: bool) -> Sizing:
    """The pool and global limit of a ``worker`` or ``run-once`` (see the module's
    opening comment)."""
    limit, chosen = wanted_limit(args)
    given: object = limit if chosen else NOT_GIVEN
    if parse_store_url(args.store).kind != "postgres":
        return Sizing(None, given)
    if args.pool_size is not None:
        return Sizing(args.pool_size, given)
    return size_pool(limit, chosen, await read_room(args, create))

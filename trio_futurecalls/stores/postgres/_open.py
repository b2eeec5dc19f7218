"""Opening the store: :func:`open_postgres_store` checks its options, opens the asyncio
loop and the pool, migrates the schema, runs the listener task while something listens,
and closes it all on exit.
"""

from __future__ import annotations

import logging
import math
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, Final

import asyncpg
import trio
import trio_asyncio

from ..._errors import FutureCallsError, InvalidArgumentError, StoreError, StoreUnavailableError
from ..._util import BlockError, background_nursery, raise_unwrapped
from ..._validate import check_bool, check_positive_seconds
from ._errors import bridge
from ._inserts import ScheduleCommit, check_schedule_commit
from ._migrations import check_current, check_server
from ._migrations import migrate as migrate_schema
from ._pool import pool_options, recommended_pool_size
from ._schema import DEFAULT_SCHEMA, check_schema_name
from ._store import PostgresStore

_log = logging.getLogger("trio_futurecalls.store.postgres.open")

#: Seconds between the dispatcher's fallback re-checks (for lost notifications).
DEFAULT_RECHECK_INTERVAL: Final = 5.0


def _log_loop_exception(loop: Any, context: dict[str, Any]) -> None:
    _log.warning("asyncio: %s", context.get("message", "error"), exc_info=context.get("exception"))


def _wrap_internal(exc: BaseException) -> BaseException:
    # The store's own errors are already library errors (translated at the edge).
    if isinstance(exc, FutureCallsError):
        return exc
    return StoreError(f"the PostgreSQL store failed: {exc!r}")


async def _check_server_room(store: PostgresStore, max_pool_size: int) -> None:
    """Read how many connections the server has room for; warn if the pool could
    outgrow it (its connections past that would be refused, and other clients'
    with them)."""
    try:
        room = await store.read_server_room()
    except StoreUnavailableError:
        raise
    except StoreError as exc:  # a proxy or a restricted server: no advice, no harm
        _log.info("could not read the server's connection limits: %s", exc)
        return
    if max_pool_size + 1 > room.free:
        _log.warning(
            "max_pool_size=%d (and the LISTEN connection) is more than %s; use "
            "max_pool_size <= %d, or raise max_connections on the server",
            max_pool_size,
            room.describe(),
            max(room.free - 1, 1),
        )


@asynccontextmanager
async def open_postgres_store(
    dsn: str,
    *,
    schema: str = DEFAULT_SCHEMA,
    min_pool_size: int = 1,
    max_pool_size: int = 10,
    recheck_interval: float | None = DEFAULT_RECHECK_INTERVAL,
    connect_timeout: float = 5.0,
    command_timeout: float = 30.0,
    acquire_timeout: float | None = None,
    application_name: str = "trio_futurecalls",
    migrate: bool = True,
    schedule_commit: ScheduleCommit = "durable",
) -> AsyncIterator[PostgresStore]:
    """Open the PostgreSQL store in ``schema`` (created and migrated if needed).

    * ``dsn``: an asyncpg/libpq connection string (``postgresql://user@host/db``).
    * ``schema``: lower-case identifier; the store's tables and channel live there.
    * ``min_pool_size``/``max_pool_size``: the asyncpg pool's bounds; see
      :func:`recommended_pool_size` (``max_concurrent + 2``).
    * ``recheck_interval``: seconds between the dispatcher's fallback re-checks in case
      a notification was lost (None: rely on NOTIFY alone).
    * ``connect_timeout``: seconds to open a connection; ``command_timeout``: seconds
      a statement may take; ``acquire_timeout``: seconds to wait for a pool connection
      (default: ``connect_timeout + command_timeout``). Together they bound how long a
      method takes to raise :class:`StoreUnavailableError` during an outage. The
      store's single statements are bounded by a Trio deadline of
      ``command_timeout`` (asyncpg's per-statement timer costs a pass of
      trio-asyncio's loop); claims, the store's transactions and running calls'
      sessions (raw connections included) keep asyncpg's ``command_timeout``.
    * ``application_name``: shown in ``pg_stat_activity`` (the LISTEN connection adds
      ``:listen``).
    * ``migrate=False``: do not create or upgrade the schema (it must be current:
      :class:`StoreError` otherwise).
    * ``schedule_commit``: ``"durable"`` (the default): a schedule returns once its
      commit is on disk, as the server's ``synchronous_commit`` says.
      ``"asynchronous"``, an opt-in for producers that trade durability for rate: the
      statements that store scheduled calls (``schedule_call``, ``schedule_many``,
      ``Scheduler.schedule`` and its group commits, unique keys included) commit with
      ``synchronous_commit = off`` for their own transaction only (PostgreSQL's
      asynchronous commit: one round trip, no wait for the WAL flush). A server crash
      (not a client crash) can then lose the schedules acknowledged in the last few
      hundred milliseconds (up to three times ``wal_writer_delay``); nothing is
      corrupted, and what was lost is lost whole, batch by batch. Claims,
      completions, releases, dead letters, cancels, leases, recurring runs, calls
      scheduled with ``after`` (chains) and running calls' sessions keep the
      server's setting, so execution guarantees do not change.

    Raises :class:`StoreUnavailableError` if the database cannot be reached at start.
    """
    if not isinstance(dsn, str) or not dsn:
        raise InvalidArgumentError("dsn must be a non-empty connection string")
    checked_schema = check_schema_name(schema)
    check_bool(migrate, "migrate")
    schedule_commit = check_schedule_commit(schedule_commit)
    if checked_schema == "public":
        # Accepted (0.1.0 accepted it, and stores there keep working), but its tables
        # (calls, dead_letters, schema_version) share a namespace with the application's.
        _log.warning(
            "schema 'public' is shared with the application: the store's tables (calls, "
            "dead_letters, schema_version) may collide with its own; prefer a schema of "
            "the store's own, such as %r",
            DEFAULT_SCHEMA,
        )
    for value, what in ((min_pool_size, "min_pool_size"), (max_pool_size, "max_pool_size")):
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise InvalidArgumentError(f"{what} must be a non-negative int, got {value!r}")
    if max_pool_size < 1 or min_pool_size > max_pool_size:
        raise InvalidArgumentError(
            f"need 0 <= min_pool_size <= max_pool_size and max_pool_size >= 1, got "
            f"{min_pool_size} and {max_pool_size}"
        )
    recheck = check_positive_seconds(recheck_interval, "recheck_interval", allow_none=True)
    if recheck == 0:
        raise InvalidArgumentError("recheck_interval must be > 0 or None")
    timeouts: dict[str, float | None] = {}
    for seconds_arg, what in (
        (connect_timeout, "connect_timeout"),
        (command_timeout, "command_timeout"),
        (acquire_timeout, "acquire_timeout"),
    ):
        seconds = check_positive_seconds(seconds_arg, what, allow_none=what == "acquire_timeout")
        if seconds is not None and (seconds == 0 or math.isinf(seconds)):
            raise InvalidArgumentError(f"{what} must be > 0, got {seconds_arg!r}")
        timeouts[what] = seconds
    connect_s = timeouts["connect_timeout"]
    command_s = timeouts["command_timeout"]
    assert connect_s is not None
    assert command_s is not None
    acquire_s = timeouts["acquire_timeout"] or connect_s + command_s
    if not isinstance(application_name, str) or not application_name.isprintable():
        raise InvalidArgumentError("application_name must be a printable str")
    if max_pool_size < recommended_pool_size(1):
        _log.warning(
            "max_pool_size=%d is below the minimum useful size %d (the dispatcher's claims, "
            "one running call, the store's other statements); see recommended_pool_size()",
            max_pool_size,
            recommended_pool_size(1),
        )

    block = BlockError()
    try:
        async with trio_asyncio.open_loop() as loop:
            # asyncpg reports some conditions (a connection released with a transaction
            # still open, say) to the loop's exception handler; trio-asyncio's default
            # handler raises them inside the loop and would take the store down. They
            # are already dealt with (asyncpg rolls back), so log them.
            loop.set_exception_handler(_log_loop_exception)
            try:
                pool: asyncpg.Pool = await bridge(
                    loop,
                    "create pool",
                    asyncpg.create_pool,
                    dsn,
                    min_size=min_pool_size,
                    max_size=max_pool_size,
                    timeout=connect_s,
                    command_timeout=command_s,
                    # jit off: the claim's estimated cost grows with the rows due or
                    # waiting (the planner cannot see that it reads a few of them), and
                    # past jit_above_cost PostgreSQL would compile it on every claim,
                    # ~0.4 s each time, for a statement that runs in a millisecond. A
                    # startup setting, so RESET ALL (when a session's connection goes
                    # back to the pool) keeps it; a session may SET jit = on for itself.
                    server_settings={"application_name": application_name[:63], "jit": "off"},
                    **pool_options(),
                )
            except (ValueError, OverflowError) as exc:  # a malformed DSN
                raise InvalidArgumentError(f"bad PostgreSQL DSN: {exc}") from exc
            store = PostgresStore(
                loop=loop,
                dsn=dsn,
                schema=checked_schema,
                pool=pool,
                max_pool_size=max_pool_size,
                recheck_interval=recheck,
                acquire_timeout=acquire_s,
                connect_timeout=connect_s,
                command_timeout=command_s,
                application_name=application_name,
                schedule_commit=schedule_commit,
            )
            try:
                await check_server(loop, pool, checked_schema, acquire_s)
                if migrate:
                    await migrate_schema(loop, pool, checked_schema, acquire_s)
                else:
                    await check_current(loop, pool, checked_schema, acquire_s)
                await _check_server_room(store, max_pool_size)
                async with background_nursery(block) as nursery:
                    # LISTEN only once something listens: a store opened only to
                    # schedule opens no such connection (stores/_on_demand.py).
                    store._listen.attach(nursery)
                    try:
                        yield store
                    finally:
                        store._listen.detach()
            finally:
                with trio.CancelScope(shield=True):
                    await store._aclose()
    except BaseExceptionGroup as group:
        # The nursery and trio-asyncio's loop wrap what crosses them in groups; do not
        # leak those: re-raise the body's own exception, or the store's own error.
        raise_unwrapped(group, block.exc, _wrap_internal)

"""PostgreSQL test support: the server probe, skip rules and isolated test stores.

The DSN comes from ``$TRIO_FUTURECALLS_TEST_DSN`` (default: the local trust-auth server).
When the server cannot be reached, PostgreSQL tests are skipped with the reason, except
when ``$CI`` is ``true``: there they fail, so CI can never go green without running them.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import socket
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from datetime import UTC, datetime, timedelta
from functools import cache
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest
import trio
import trio_asyncio
from trio_asyncio import aio_as_trio

from trio_futurecalls import NewCall, Store, StoredCall, WorkerInfo
from trio_futurecalls.stores._sql import migrations
from trio_futurecalls.stores.postgres import PostgresStore, open_postgres_store
from trio_futurecalls.stores.postgres._schema import in_schema, schema_queries

DEFAULT_TEST_DSN = "postgresql://postgres@127.0.0.1:5432/test"


def pg_dsn() -> str:
    """The DSN of the test server."""
    return os.environ.get("TRIO_FUTURECALLS_TEST_DSN", DEFAULT_TEST_DSN)


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() == "true"


@cache
def postgres_problem() -> str | None:
    """None if the test server answers a query; else why not (checked once per run)."""
    dsn = pg_dsn()
    parts = urlsplit(dsn)
    host = parts.hostname or "127.0.0.1"
    port = parts.port or 5432
    try:
        with socket.create_connection((host, port), timeout=2):
            pass
    except OSError as exc:
        return f"cannot connect to {host}:{port}: {exc}"

    async def probe() -> None:
        conn = await asyncpg.connect(dsn, timeout=5)
        try:
            await conn.fetchval("SELECT 1")
        finally:
            await conn.close()

    # In a thread of its own: asyncio.run() refuses to run inside Trio (or trio-asyncio).
    with ThreadPoolExecutor(1) as executor:
        try:
            executor.submit(asyncio.run, probe()).result()
        except Exception as exc:
            return f"{type(exc).__name__}: {exc}"
    return None


def postgres_available() -> bool:
    """Whether the PostgreSQL variants of tests should be collected.

    In CI they are always collected, so an unreachable server fails them loudly.
    """
    return in_ci() or postgres_problem() is None


def require_postgres() -> None:
    """Skip (locally) or fail (CI=true) the current test if the server is unreachable."""
    problem = postgres_problem()
    if problem is None:
        return
    message = (
        f"PostgreSQL test server unreachable at {pg_dsn()} ({problem}); "
        "set TRIO_FUTURECALLS_TEST_DSN to run the PostgreSQL tests"
    )
    if in_ci():
        pytest.fail(f"CI=true but {message}", pytrace=False)
    pytest.skip(f"SKIPPING POSTGRESQL TESTS: {message}")


def now() -> datetime:
    return datetime.now(UTC)


async def register_worker(store: Store, worker: str, lifetime: timedelta) -> None:
    """Register ``worker`` as live (heartbeat now) until ``lifetime`` from now."""
    t = now()
    await store.register_worker(
        WorkerInfo(
            id=worker,
            host="h",
            pid=1,
            started_at=t,
            heartbeat_at=t,
            expires_at=t + lifetime,
        )
    )


def new(name: str = "a", due: datetime | None = None, payload: str = "null") -> NewCall:
    """A call to schedule, due at ``due`` (now by default)."""
    t = now()
    return NewCall(name=name, payload=payload, due_at=due or t, scheduled_at=t)


def stored_call(call_id: int = 1, name: str = "a") -> StoredCall:
    """A call as a claim hands it over (for sessions, dead letters)."""
    t = now()
    return StoredCall(
        id=call_id, name=name, payload="null", due_at=t, identifier=None, scheduled_at=t, attempts=1
    )


def random_schema() -> str:
    return f"test_fc_{secrets.token_hex(6)}"


async def admin_fetch(sql: str, *args: Any) -> list[Any]:
    """Run one statement on a fresh connection, on a short-lived asyncio loop of its own."""
    async with trio_asyncio.open_loop():
        conn = await aio_as_trio(asyncpg.connect)(pg_dsn(), timeout=10)
        try:
            rows: list[Any] = await aio_as_trio(conn.fetch)(sql, *args)
        finally:
            await aio_as_trio(conn.close)()
    return rows


async def admin_execute(sql: str) -> None:
    """Run a script (several statements, no arguments) on a fresh connection."""
    async with trio_asyncio.open_loop():
        conn = await aio_as_trio(asyncpg.connect)(pg_dsn(), timeout=10)
        try:
            await aio_as_trio(conn.execute)(sql)
        finally:
            await aio_as_trio(conn.close)()


async def migrate_to(schema: str, version: int) -> None:
    """Create ``schema`` as the migrations up to ``version`` leave it (an older
    library's schema), the way the store migrates it."""
    q = schema_queries(schema)
    script = [q["create_schema"], q["create_version_table"]]
    for migration in migrations("postgres")[:version]:
        script.append(in_schema(migration.sql, schema))
        script.append(
            f'INSERT INTO "{schema}".schema_version (version, name) '
            f"VALUES ({migration.version}, '{migration.name}')"
        )
    await admin_execute("BEGIN;\n" + ";\n".join(script) + ";\nCOMMIT;")


async def drop_schema(schema: str) -> None:
    assert schema.startswith("test_fc_"), schema
    await admin_fetch(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


@asynccontextmanager
async def open_test_postgres_store(**options: Any) -> AsyncIterator[PostgresStore]:
    """A fresh store in a new, randomly named schema, dropped afterwards.

    On exit, asserts that no session is open and no pool connection is checked out.
    """
    require_postgres()
    options.setdefault("schema", random_schema())
    options.setdefault("max_pool_size", 10)
    options.setdefault("connect_timeout", 5.0)
    options.setdefault("command_timeout", 15.0)
    schema = options["schema"]
    # Our own name in pg_stat_activity: a test that terminates connections picks its
    # own by this name and never touches other programs on the shared server.
    options.setdefault("application_name", f"fc-{schema}")
    try:
        async with open_postgres_store(options.pop("dsn", pg_dsn()), **options) as store:
            yield store
            assert store.open_sessions == 0, "a session was left open"
            assert store.connections_in_use() == 0, (
                f"{store.connections_in_use()} pool connection(s) left checked out"
            )
    finally:
        if schema.startswith("test_fc_"):
            with trio.CancelScope(shield=True):
                await drop_schema(schema)


@asynccontextmanager
async def holding_lock(schema: str, sql: str, *args: Any) -> AsyncIterator[None]:
    """Run ``sql`` (a statement that takes a lock: ``SELECT ... FOR UPDATE``, ``LOCK
    TABLE``...) in a transaction of the test's own, on a connection of its own, and
    keep that transaction open while the block runs."""
    async with trio_asyncio.open_loop():
        conn = await aio_as_trio(asyncpg.connect)(
            pg_dsn(), server_settings={"application_name": f"fc-{schema}:lock"}
        )
        try:
            async with aio_as_trio(conn.transaction()):
                await aio_as_trio(conn.execute)(sql, *args)
                yield
        finally:
            await aio_as_trio(conn.close)()


def locked_row(schema: str, call_id: int) -> AbstractAsyncContextManager[None]:
    """Hold the row of ``call_id`` locked (``FOR UPDATE``) while the block runs."""
    return holding_lock(schema, f'SELECT 1 FROM "{schema}".calls WHERE id = $1 FOR UPDATE', call_id)


async def until(predicate: Callable[[], bool], seconds: float) -> None:
    """Poll state that nothing signals (another process, the server) until it holds."""
    with trio.fail_after(seconds):
        while not predicate():  # noqa: ASYNC110
            await trio.sleep(0.02)


class Proxy:
    """A TCP proxy to the test server that the test can cut and restore.

    Modes: ``forward``; ``reset`` (accept and close); ``hang`` (accept, say nothing);
    ``linger``: forward, but when the server closes a connection, keep the client's
    side open (and drop what the client sends then), as a network that has not yet
    delivered the end of the stream. :attr:`lingering` is set once a connection's
    server side ended and everything it sent reached the client. ``deaf``: forward
    what the server sends, drop what the client sends (its requests never arrive).
    """

    def __init__(self) -> None:
        parts = urlsplit(pg_dsn())
        self.target = (parts.hostname or "127.0.0.1", parts.port or 5432)
        self.mode = "forward"
        self.port = 0
        self.lingering = trio.Event()
        self._scopes: set[trio.CancelScope] = set()

    def dsn(self) -> str:
        parts = urlsplit(pg_dsn())
        netloc = parts.netloc.rsplit("@", 1)
        user = netloc[0] + "@" if len(netloc) == 2 else ""
        return urlunsplit(parts._replace(netloc=f"{user}127.0.0.1:{self.port}"))

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        self.port = listeners[0].socket.getsockname()[1]
        task_status.started()
        await trio.serve_listeners(self._handle, listeners)

    def cut(self, mode: str = "reset") -> None:
        self.mode = mode
        for scope in list(self._scopes):
            scope.cancel()

    async def _handle(self, client: trio.SocketStream) -> None:
        with trio.CancelScope() as scope:
            self._scopes.add(scope)
            try:
                async with client:
                    if self.mode == "reset":
                        return
                    if self.mode == "hang":
                        await trio.sleep_forever()
                    upstream = await trio.open_tcp_stream(*self.target)
                    async with upstream, trio.open_nursery() as nursery:
                        done = nursery.cancel_scope
                        nursery.start_soon(self._pump, client, upstream, done, False)
                        nursery.start_soon(self._pump, upstream, client, done, True)
            except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                pass
            finally:
                self._scopes.discard(scope)

    async def _pump(
        self, src: trio.SocketStream, dst: trio.SocketStream, done: trio.CancelScope, server: bool
    ) -> None:
        try:
            async for data in src:
                if not server and self.mode == "deaf":
                    continue  # the request goes nowhere
                try:
                    await dst.send_all(data)
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    if self.mode != "linger":
                        raise
                    # The server side is gone: what the client sends goes nowhere.
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        if server and self.mode == "linger":
            self.lingering.set()
            return  # the client's side stays open until the client closes it
        done.cancel()


@asynccontextmanager
async def store_behind_proxy(**options: Any) -> AsyncIterator[tuple[PostgresStore, Proxy]]:
    """``open_test_postgres_store(**options)`` whose connections all go through a
    :class:`Proxy` the test can cut; both stop when the block ends."""
    proxy = Proxy()
    async with trio.open_nursery() as nursery:
        await nursery.start(proxy.serve)
        async with open_test_postgres_store(dsn=proxy.dsn(), **options) as store:
            yield store, proxy
        nursery.cancel_scope.cancel()


def recording_claims(store: PostgresStore) -> list[str]:
    """The claim statements ``store`` runs from now on, in order (names of queries.sql)."""
    used: list[str] = []
    claim = store._claim

    async def recording_claim(query: str, *args: Any) -> Any:
        used.append(query)
        return await claim(query, *args)

    store._claim = recording_claim  # type: ignore[method-assign]
    return used

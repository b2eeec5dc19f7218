"""Opening fresh, isolated stores for one measurement, and PostgreSQL administration."""

from __future__ import annotations

import asyncio
import secrets
import shutil
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any, TypeVar

import asyncpg
import attrs
import trio

from trio_futurecalls import MemoryStore, Store, open_sqlite_store

T = TypeVar("T")

STORES = ("memory", "sqlite", "postgres")


@attrs.frozen(kw_only=True)
class StoreConfig:
    """Where the stores live."""

    dsn: str
    sqlite_dir: Path | None = None  # None: a fresh temporary directory per store


def new_schema_name() -> str:
    return f"bench_{secrets.token_hex(6)}"


def pg_run(dsn: str, fn: Callable[[asyncpg.Connection], Awaitable[T]]) -> T:
    """Run ``fn(connection)`` on plain asyncio in a thread of its own (blocking).

    In a thread so that it works the same whether or not Trio runs in this thread.
    """

    async def go() -> T:
        conn: asyncpg.Connection = await asyncpg.connect(dsn, timeout=10)
        try:
            return await fn(conn)
        finally:
            await conn.close()

    with ThreadPoolExecutor(1) as executor:
        return executor.submit(asyncio.run, go()).result()


def pg_execute(dsn: str, sql: str, *args: Any) -> str:
    async def run(conn: asyncpg.Connection) -> str:
        status: str = await conn.execute(sql, *args)
        return status

    return pg_run(dsn, run)


def pg_fetchval(dsn: str, sql: str, *args: Any) -> Any:
    async def run(conn: asyncpg.Connection) -> Any:
        return await conn.fetchval(sql, *args)

    return pg_run(dsn, run)


def postgres_problem(dsn: str) -> str | None:
    """None if the server answers; else why not."""
    try:
        pg_fetchval(dsn, "SELECT 1")
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"
    return None


def drop_schema(dsn: str, schema: str) -> None:
    # The name comes from new_schema_name(): a safe identifier.
    pg_execute(dsn, f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


@contextmanager
def pg_schema(dsn: str) -> Iterator[str]:
    """A fresh schema name, dropped (if it was created) on exit."""
    schema = new_schema_name()
    try:
        yield schema
    finally:
        drop_schema(dsn, schema)


@contextmanager
def sqlite_path(config: StoreConfig) -> Iterator[Path]:
    """A path for a fresh SQLite file; the file (and -wal, -shm) is removed on exit."""
    directory = Path(tempfile.mkdtemp(prefix="futurecalls-bench-", dir=config.sqlite_dir))
    try:
        yield directory / "calls.sqlite3"
    finally:
        shutil.rmtree(directory, ignore_errors=True)


@asynccontextmanager
async def open_store(
    kind: str,
    config: StoreConfig,
    *,
    sqlite_recheck: float | None = 1.0,
    schema: str | None = None,
    pg_options: dict[str, Any] | None = None,
) -> AsyncIterator[Store]:
    """A fresh store of ``kind`` (its SQLite file or PostgreSQL schema is removed after).

    With ``schema``, PostgreSQL uses (and does not drop) that schema.
    """
    if kind == "memory":
        yield MemoryStore()
    elif kind == "sqlite":
        with sqlite_path(config) as path:
            # The library's defaults (synchronous=FULL), as users get them.
            async with open_sqlite_store(path, recheck_interval=sqlite_recheck) as store:
                yield store
    elif kind == "postgres":
        from trio_futurecalls.stores.postgres import open_postgres_store

        own = schema is None
        name = new_schema_name() if schema is None else schema
        try:
            async with open_postgres_store(
                config.dsn, schema=name, **(pg_options or {})
            ) as pg_store:
                yield pg_store
        finally:
            if own:
                with trio.CancelScope(shield=True):
                    await trio.to_thread.run_sync(drop_schema, config.dsn, name)
    else:
        raise ValueError(f"unknown store {kind!r}")

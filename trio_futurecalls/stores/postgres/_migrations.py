"""Schema migrations: bring the store's schema to the version this library knows.

The migrations themselves are ``stores/sql/postgres/migrations/NNNN_*.sql``. They are
applied in one transaction under ``pg_advisory_xact_lock`` (a key per schema), so
several processes may start at once: the first migrates, the others wait and find the
schema current.
"""

from __future__ import annotations

import hashlib
import logging
from typing import Any, Final

import asyncpg

from ..._errors import StoreError, StoreNotFoundError
from .._sql import migrations
from ._errors import bridge
from ._schema import in_schema, schema_queries

_log = logging.getLogger("trio_futurecalls.store.postgres.migrations")


def _lock_key(schema: str) -> int:
    digest = hashlib.blake2b(f"trio_futurecalls:migrate:{schema}".encode(), digest_size=8)
    return int.from_bytes(digest.digest(), "big", signed=True)


async def _aio_migrate(pool: asyncpg.Pool, schema: str, acquire_timeout: float) -> int:
    q = schema_queries(schema)
    wanted = migrations("postgres")
    async with pool.acquire(timeout=acquire_timeout) as conn, conn.transaction():
        await conn.execute(q["migration_lock"], _lock_key(schema))
        await conn.execute(q["create_schema"])
        await conn.execute(q["create_version_table"])
        version: int = await conn.fetchval(q["schema_version"])
        if version > len(wanted):
            raise StoreError(
                f"database schema version {version} is newer than this library knows "
                f"({len(wanted)}); upgrade trio_futurecalls"
            )
        for migration in wanted[version:]:
            # No arguments: the simple query protocol runs a multi-statement script.
            await conn.execute(in_schema(migration.sql, schema))
            await conn.execute(q["record_version"], migration.version, migration.name)
            _log.info("applied migration %s", migration.name)
    return len(wanted)


async def migrate(loop: Any, pool: asyncpg.Pool, schema: str, acquire_timeout: float) -> None:
    """Create or upgrade ``schema`` (checked) through ``pool``, on the store's ``loop``."""
    await bridge(loop, "migrate", _aio_migrate, pool, schema, acquire_timeout)


async def _aio_version(pool: asyncpg.Pool, schema: str, acquire_timeout: float) -> int:
    q = schema_queries(schema)
    async with pool.acquire(timeout=acquire_timeout) as conn:
        if not await conn.fetchval(q["version_table_exists"], f'"{schema}".schema_version'):
            return 0
        version: int = await conn.fetchval(q["schema_version"])
    return version


#: The oldest server the store's statements run on (``server_version_num``): 12 has
#: MATERIALIZED CTEs (the claim) and ``plan_cache_mode`` (the claims' connection).
MIN_SERVER_VERSION_NUM: Final = 120000


async def _aio_server(
    pool: asyncpg.Pool, schema: str, acquire_timeout: float
) -> tuple[str, int, str]:
    async with pool.acquire(timeout=acquire_timeout) as conn:
        row = await conn.fetchrow(schema_queries(schema)["server_checks"])
    if row is None:  # (a SELECT without FROM always answers one row)
        raise StoreError("the server answered no row to its checks")
    return str(row[0]), int(row[1]), str(row[2])


def server_problem(encoding: str, version_num: int, version: str) -> str | None:
    """What makes a server unfit for the store (None: nothing)."""
    if encoding.upper() not in ("UTF8", "UTF-8"):
        return (
            f"the database's encoding is {encoding}; the PostgreSQL store needs UTF8 "
            "(create the database with ENCODING 'UTF8')"
        )
    if version_num < MIN_SERVER_VERSION_NUM:
        return f"the server is PostgreSQL {version}; the PostgreSQL store needs 12 or later"
    return None


async def check_server(loop: Any, pool: asyncpg.Pool, schema: str, acquire_timeout: float) -> None:
    """Refuse a server the store cannot work with, before anything is created, on a
    connection that goes back to the pool (migrations then reuse it):

    * a database whose encoding is not UTF8 (e.g. ``SQL_ASCII``): there, a row another
      program writes with bytes that are not UTF-8 cannot be sent to the store, and
      every claim of every class would fail on it;
    * a server older than PostgreSQL 12: every claim would fail on its syntax.
    """
    encoding, version_num, version = await bridge(
        loop, "server checks", _aio_server, pool, schema, acquire_timeout
    )
    problem = server_problem(encoding, version_num, version)
    if problem is not None:
        raise StoreError(problem)


async def check_current(loop: Any, pool: asyncpg.Pool, schema: str, acquire_timeout: float) -> None:
    """Raise :class:`StoreError` unless ``schema`` is at the version this library knows.

    For a store opened without migrating: the statements rely on the schema's CHECKs
    (a claim on an older schema could delete rows it cannot hand over).
    """
    version = await bridge(loop, "schema version", _aio_version, pool, schema, acquire_timeout)
    wanted = len(migrations("postgres"))
    if version == 0:  # no version table: never migrated (the schema may not exist)
        raise StoreNotFoundError(
            f"no trio_futurecalls store in schema {schema!r}: create it first "
            "(futurecalls migrate, or open the store with migrate=True)"
        )
    if version != wanted:
        raise StoreError(
            f"schema {schema!r} is at version {version} but this library needs {wanted}: "
            + (
                "upgrade trio_futurecalls"
                if version > wanted
                else "migrate it first (futurecalls migrate, or open the store with migrate=True)"
            )
        )

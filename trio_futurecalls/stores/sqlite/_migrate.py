"""The SQLite schema's migrations: the numbered scripts, and the data steps some need.

A script (``stores/sql/sqlite/migrations/NNNN_*.sql``) changes the schema; a data step
(Python, run right after its script in the same transaction) moves rows that only the
store's row checks can judge. All of it runs in one ``BEGIN IMMEDIATE`` transaction:
one migrator at a time, across processes too, and all or nothing.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from typing import Final

from ..._errors import StoreError
from .._sql import migrations
from ._quarantine import after_0003

#: Data steps by the schema version whose script they follow.
DATA_STEPS: Final[dict[int, Callable[[sqlite3.Connection], None]]] = {3: after_0003}


def migrate(conn: sqlite3.Connection) -> int:
    """Bring the schema to the newest version; harmless when run again."""
    wanted = migrations("sqlite")
    conn.execute("BEGIN IMMEDIATE")  # one migrator at a time, across processes too
    try:
        (version,) = conn.execute("PRAGMA user_version").fetchone()
        if version > len(wanted):
            raise StoreError(
                f"database schema version {version} is newer than this library knows "
                f"({len(wanted)}); upgrade trio_futurecalls"
            )
        for migration in wanted[version:]:
            for statement in statements(migration.sql):
                conn.execute(statement)
            step = DATA_STEPS.get(migration.version)
            if step is not None:
                step(conn)
            conn.execute(f"PRAGMA user_version={migration.version:d}")
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    return len(wanted)


def statements(script: str) -> list[str]:
    out: list[str] = []
    current = ""
    for line in script.splitlines(keepends=True):
        current += line
        if sqlite3.complete_statement(current):
            if current.strip():
                out.append(current)
            current = ""
    if current.strip() and not all(
        part.strip().startswith("--") or not part.strip() for part in current.splitlines()
    ):
        raise StoreError(f"incomplete SQL statement in migration: {current!r}")
    return out

"""The SQLite schema's migrations: the numbered scripts, and the data steps some need.

A script (``stores/sql/sqlite/migrations/NNNN_*.sql``) changes the schema; a data step
(Python, run right after its script in the same transaction) moves rows that only the
store's row checks can judge. All of it runs in one ``BEGIN IMMEDIATE`` transaction:
one migrator at a time, across processes too, and all or nothing.
"""

from __future__ import annotations

import re
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
                _execute(conn, statement)
            step = DATA_STEPS.get(migration.version)
            if step is not None:
                step(conn)
            conn.execute(f"PRAGMA user_version={migration.version:d}")
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    return len(wanted)


_ADD_COLUMN: Final = re.compile(r"\s*ALTER\s+TABLE\s+\S+\s+ADD\s+COLUMN\s", re.IGNORECASE)


def _execute(conn: sqlite3.Connection, statement: str) -> None:
    """Run one statement of a migration script.

    Adding a column to a table with CHECKs makes SQLite check every existing row
    against all of them (``PRAGMA quick_check``): one row that another program wrote
    past them (``PRAGMA ignore_check_constraints``) would fail the migration, and the
    store would never open. Such rows are the claim's to dead-letter (``_claim.py``);
    and a new column's default meets its own CHECK. So columns are added without that
    check (an added column never touches the rows' other values).
    """
    code = "\n".join(line for line in statement.splitlines() if not line.lstrip().startswith("--"))
    if not _ADD_COLUMN.match(code):
        conn.execute(statement)
        return
    conn.execute("PRAGMA ignore_check_constraints=ON")
    try:
        conn.execute(statement)
    finally:
        conn.execute("PRAGMA ignore_check_constraints=OFF")


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

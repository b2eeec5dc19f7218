"""Review of issue 15: commands other than migrate (and worker --create) change no
store: an SQLite store at an older schema version is not migrated by looking."""

from __future__ import annotations

import sqlite3
from contextlib import closing
from pathlib import Path

import pytest

from trio_futurecalls.cli import main
from trio_futurecalls.stores._sql import migrations
from trio_futurecalls.stores.sqlite._migrate import statements


def _older_store(path: Path, version: int) -> None:
    with closing(sqlite3.connect(path, isolation_level=None)) as conn:
        for migration in migrations("sqlite")[:version]:
            for statement in statements(migration.sql):
                conn.execute(statement)
        conn.execute(f"PRAGMA user_version={version:d}")


def _version(path: Path) -> int:
    with closing(sqlite3.connect(path)) as conn:
        (version,) = conn.execute("PRAGMA user_version").fetchone()
    return int(version)


@pytest.mark.parametrize("args", [["list"], ["stats"], ["dead-letters", "list"]])
def test_a_command_does_not_migrate_an_older_sqlite_store(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str]
) -> None:
    # As on PostgreSQL (the schema is opened without migrating, and an older one is
    # refused): another version's workers may still run on it.
    db = tmp_path / "calls.sqlite3"
    _older_store(db, 2)
    code = main(["--store", f"sqlite:///{db}", *args])
    err = capsys.readouterr().err
    assert code == 1, err
    assert "futurecalls migrate" in err
    assert _version(db) == 2

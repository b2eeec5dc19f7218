"""How the SQLite store classifies sqlite3 errors: by result code, never by text."""

from __future__ import annotations

import sqlite3

import pytest

from trio_futurecalls import StoreError, StoreUnavailableError
from trio_futurecalls.stores.sqlite._connection import translate as _translate


def sqlite_error(cls: type[sqlite3.Error], message: str, code: int | None) -> sqlite3.Error:
    """An error as the sqlite3 module raises it for a failing SQLite call."""
    exc = cls(message)
    if code is not None:
        exc.sqlite_errorcode = code
    return exc


@pytest.mark.parametrize(
    ("code", "name"),
    [
        (5, "SQLITE_BUSY"),
        (517, "SQLITE_BUSY_SNAPSHOT"),
        (6, "SQLITE_LOCKED"),
        (262, "SQLITE_LOCKED_SHAREDCACHE"),
        (14, "SQLITE_CANTOPEN"),
        (526, "SQLITE_CANTOPEN_ISDIR"),
    ],
)
def test_busy_locked_and_cantopen_are_unavailable(code: int, name: str) -> None:
    error = _translate(sqlite_error(sqlite3.OperationalError, "whatever it says", code))
    assert isinstance(error, StoreUnavailableError), name
    assert str(error) == "SQLite database unavailable: whatever it says"


@pytest.mark.parametrize(
    "exc",
    [
        # The words the old text rules looked for, on errors that are not outages.
        sqlite_error(sqlite3.IntegrityError, "CHECK constraint failed: locked", 275),
        sqlite_error(sqlite3.OperationalError, "no such table: busy", 1),
        # The sqlite3 module's own errors carry no result code.
        sqlite_error(sqlite3.OperationalError, "database is locked", None),
        sqlite_error(sqlite3.ProgrammingError, "Cannot operate on a closed database.", None),
    ],
    ids=str,
)
def test_other_errors_are_store_errors(exc: sqlite3.Error) -> None:
    error = _translate(exc)
    assert type(error) is StoreError
    assert str(error) == f"SQLite error: {type(exc).__name__}: {exc}"

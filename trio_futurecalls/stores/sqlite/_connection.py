"""The SQLite side of the store: connections, time values and errors.

Times are stored as integer microseconds since the Unix epoch (UTC). Driver errors
are translated by result code (never by message text) at this edge.
"""

from __future__ import annotations

import sqlite3
import time
from datetime import UTC, datetime, timedelta
from typing import Final

from ..._errors import StoreError, StoreUnavailableError

_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_MICRO: Final = timedelta(microseconds=1)
#: What one write can raise on its own (a constraint, a value the driver cannot bind),
#: leaving the database and the other writes of its transaction fine.
OWN_ERRORS: Final = (
    sqlite3.IntegrityError,
    sqlite3.InterfaceError,
    sqlite3.ProgrammingError,
    ValueError,
    TypeError,
    OverflowError,
)
#: Values of ``PRAGMA synchronous`` a store accepts.
SYNC_MODES: Final = ("OFF", "NORMAL", "FULL", "EXTRA")


def to_micros(value: datetime) -> int:
    return (value - _EPOCH) // _MICRO


def from_micros(value: int) -> datetime:
    return _EPOCH + timedelta(microseconds=value)


#: Primary result codes that mean "not now": another connection holds the database or
#: a table, or the file cannot be opened (yet). Extended codes (SQLITE_BUSY_SNAPSHOT...)
#: carry the primary code in their low byte.
_UNAVAILABLE_CODES: Final = frozenset(
    {sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED, sqlite3.SQLITE_CANTOPEN}
)


def translate(exc: sqlite3.Error) -> StoreError:
    # By result code, never by message text. Errors the sqlite3 module raises itself
    # (a closed connection, a bad parameter) have no code.
    text = str(exc)
    code = getattr(exc, "sqlite_errorcode", None)
    if isinstance(code, int) and (code & 0xFF) in _UNAVAILABLE_CODES:
        return StoreUnavailableError(f"SQLite database unavailable: {text}")
    return StoreError(f"SQLite error: {type(exc).__name__}: {text}")


def connect(path: str, synchronous: str, busy_timeout: float) -> sqlite3.Connection:
    conn = sqlite3.connect(
        path, timeout=busy_timeout, isolation_level=None, check_same_thread=False
    )
    try:
        _switch_to_wal(conn, busy_timeout)
        conn.execute(f"PRAGMA synchronous={synchronous}")  # validated against SYNC_MODES
        conn.execute("PRAGMA foreign_keys=ON")
    except BaseException:
        conn.close()
        raise
    return conn


def _switch_to_wal(conn: sqlite3.Connection, busy_timeout: float) -> None:
    """``PRAGMA journal_mode=WAL``, waiting up to ``busy_timeout`` for the lock.

    Processes that open a new file at the same moment each switch it to WAL, which
    takes an exclusive lock; SQLite answers SQLITE_BUSY at once, without its busy
    handler, to the one that would otherwise deadlock. So the switch is tried again
    here (on the store's thread, never on the event loop).
    """
    deadline = time.monotonic() + busy_timeout
    while True:
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            code = getattr(exc, "sqlite_errorcode", None)
            busy = isinstance(code, int) and (code & 0xFF) == sqlite3.SQLITE_BUSY
            if not busy or time.monotonic() >= deadline:
                raise
        time.sleep(0.005)

"""Rows of the SQLite tables into values, defensively.

A row another program wrote may hold anything. Schema 0003's CHECKs keep most of it
out, but not all: ``PRAGMA ignore_check_constraints`` lets it in, and no CHECK can see
text whose bytes are not UTF-8. So every value is checked here against the library's
own limits (``_validate``) before it becomes a value, and a row that does not fit is
never a raw ``ValueError``/``OverflowError``/``TypeError``: the check says what is
wrong with each value (shown as an SQL literal) and which values a dead letter can
keep, with placeholders for the others.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any, Final

import attrs

from ..._errors import InvalidArgumentError, StoreError
from ..._model import DeadLetter, RecurringInfo, StoredCall
from ..._validate import (
    EARLIEST_TIME,
    LATEST_TIME,
    MAX_ATTEMPTS,
    MAX_PAYLOAD_BYTES,
    MAX_PRIORITY,
    MIN_PRIORITY,
    check_attempts,
    check_identifier,
    check_name,
    check_owner,
    check_payload_text,
    check_recurring_key,
    check_unique_key,
)
from .. import _rows as shared
from ._connection import from_micros, to_micros

#: Stored times (integer microseconds since the epoch) a row may hold.
EARLIEST_MICROS: Final = to_micros(EARLIEST_TIME)
LATEST_MICROS: Final = to_micros(LATEST_TIME)


class NotUTF8(bytes):
    """TEXT whose bytes are not UTF-8, as the store's connection reads it."""


def read_text(raw: bytes) -> str | NotUTF8:
    """The ``text_factory`` of the store's connection: TEXT that is not UTF-8 reaches
    the row checks as :class:`NotUTF8` instead of failing the whole query."""
    try:
        return raw.decode()
    except UnicodeDecodeError:
        return NotUTF8(raw)


def show(value: object) -> str:
    """A stored value as its type and an SQL literal (``text 'a''b'``, ``blob X'00'``):
    readable, lossless, and always valid text to keep in an error message."""
    if value is None:
        return "null NULL"
    if isinstance(value, NotUTF8):
        return f"text X'{value.hex().upper()}'"
    if isinstance(value, bytes):
        return f"blob X'{value.hex().upper()}'"
    if isinstance(value, str):
        if "\x00" in value:
            return f"text X'{value.encode().hex().upper()}'"
        return "text '" + value.replace("'", "''") + "'"
    if isinstance(value, float):
        return f"real {value!r}"
    return f"integer {value!r}"


def _passes(check: Callable[[Any], object], value: object) -> bool:
    try:
        check(value)
    except InvalidArgumentError:
        return False
    return True


def _is_time(value: object) -> bool:
    return type(value) is int and EARLIEST_MICROS <= value <= LATEST_MICROS


@attrs.frozen
class Column:
    """One column of a row: its check, what a failure says, and what a dead letter
    keeps instead of a value that fails (given the value and the time in
    microseconds)."""

    name: str
    ok: Callable[[object], bool]
    says: str
    placeholder: Callable[[object, int], object]


_NAME = Column(
    "name",
    lambda v: type(v) is str and _passes(check_name, v),
    "is not a call name (1 to 200 characters: letters, digits, _ . : -, "
    "starting with a letter or _)",
    lambda value, now: "futurecalls.invalid-name",
)
_PAYLOAD = Column(
    "payload",
    lambda v: type(v) is str and _passes(check_payload_text, v),
    f"is not JSON text of at most {MAX_PAYLOAD_BYTES} bytes of UTF-8 without NUL",
    lambda value, now: "null",
)
_IDENTIFIER = Column(
    "identifier",
    lambda v: v is None or (type(v) is str and _passes(check_identifier, v)),
    "is not an identifier (NULL, or 1 to 255 characters of UTF-8 without NUL)",
    lambda value, now: None,
)
_UNIQUE_KEY = Column(
    "unique_key",
    lambda v: v is None or (type(v) is str and _passes(check_unique_key, v)),
    "is not a unique key (NULL, or 1 to 255 characters of UTF-8 without NUL)",
    lambda value, now: None,
)
_TIME_SAYS: Final = (
    "is not a time (integer microseconds since 1970-01-01 UTC, from 0001-01-02 to 9999-12-30)"
)


def _time(name: str) -> Column:
    return Column(name, _is_time, _TIME_SAYS, lambda value, now: now)


_ATTEMPTS = Column(
    "attempts",
    lambda v: type(v) is int and _passes(check_attempts, v),
    f"is not a count of attempts (an integer from 0 to {MAX_ATTEMPTS})",
    lambda value, now: 0,
)
#: A claim counts an attempt: the stored count must leave room for one more.
_ATTEMPTS_TO_CLAIM = Column(
    "attempts",
    lambda v: type(v) is int and 0 <= v < MAX_ATTEMPTS,
    f"is not a count of attempts the claim can add one to (an integer from 0 to "
    f"{MAX_ATTEMPTS - 1})",
    lambda value, now: value if _ATTEMPTS.ok(value) else 0,
)

#: ``id`` then these: what ``pending`` and ``claim_candidates`` select.
CALL_COLUMNS: Final = (
    _NAME,
    _PAYLOAD,
    _time("due_at"),
    _IDENTIFIER,
    _time("scheduled_at"),
    _ATTEMPTS,
)
_RECURRING_KEY = Column(
    "recurring_key",
    lambda v: v is None or (type(v) is str and _passes(check_recurring_key, v)),
    "is not a recurring schedule key (NULL, or 1 to 200 characters of UTF-8 without NUL)",
    lambda value, now: None,
)
_TICK_AT = Column(
    "tick_at",
    lambda v: v is None or _is_time(v),
    "is not NULL or " + _TIME_SAYS.removeprefix("is not "),
    lambda value, now: None,
)
_PRIORITY = Column(
    "priority",
    lambda v: type(v) is int and MIN_PRIORITY <= v <= MAX_PRIORITY,
    f"is not a priority (an integer from {MIN_PRIORITY} to {MAX_PRIORITY})",
    lambda value, now: 0,
)
_CLAIMED_COLUMNS: Final = (
    *CALL_COLUMNS[:5],
    _ATTEMPTS_TO_CLAIM,
    _RECURRING_KEY,
    _TICK_AT,
    _PRIORITY,
)
#: The checks of _CLAIMED_COLUMNS, in order (claimed_call's usual path).
_CLAIMED_CHECKS: Final = tuple(column.ok for column in _CLAIMED_COLUMNS)
#: ``id`` then these: what ``pending`` selects (a claim never reads the unique key:
#: it frees it, so a bad one cannot stop a claim).
PENDING_COLUMNS: Final = (*CALL_COLUMNS, _RECURRING_KEY, _TICK_AT, _PRIORITY, _UNIQUE_KEY)
LEASE_OWNER = Column(
    "lease_owner",
    lambda v: v is None or (type(v) is str and _passes(check_owner, v)),
    "is not a lease owner (NULL, or 1 to 1000 characters of UTF-8 without NUL)",
    lambda value, now: None,
)
#: ``id`` then these: what ``dead_letters`` selects.
DEAD_LETTER_COLUMNS: Final = (
    Column("call_id", lambda v: type(v) is int, "is not an integer", lambda value, now: 0),
    _NAME,
    _PAYLOAD,
    _time("due_at"),
    _IDENTIFIER,
    _time("scheduled_at"),
    _time("failed_at"),
    Column("error", lambda v: type(v) is str, "is not text of UTF-8", lambda value, now: ""),
    _ATTEMPTS,
)


@attrs.frozen
class Checked:
    """A row's values checked against ``columns``: what is wrong, and what to keep."""

    id: int
    problems: list[str]
    #: Each value that passed, else its column's placeholder.
    kept: tuple[Any, ...]

    def reason(self, what: str) -> str:
        return f"{what} (written by another program?): " + "; ".join(self.problems)


def check_row(row: Sequence[Any], columns: Sequence[Column], now_us: int) -> Checked:
    """Check ``row`` (``id`` and then one value per column)."""
    problems: list[str] = []
    kept: list[Any] = []
    for column, value in zip(columns, row[1:], strict=True):
        if column.ok(value):
            kept.append(value)
        else:
            problems.append(f"{column.name} {show(value)} {column.says}")
            kept.append(column.placeholder(value, now_us))
    row_id = row[0]
    if type(row_id) is not int or row_id < 1:
        problems.append(f"id {row_id!r} is not positive")
    return Checked(row_id, problems, tuple(kept))


def claimed_call(row: Sequence[Any], now_us: int) -> StoredCall | Checked:
    """A row of ``claim_candidates`` as the claimed call (its attempts counted), or the
    :class:`Checked` row that says why it cannot be handed over.

    Its last value, ``dependents``, is a hint, never a reason to refuse a call:
    anything but 0 means calls may wait for this one (the safe side: its end is told).
    """
    row_id = row[0]
    usual = type(row_id) is int and row_id >= 1
    if usual:
        # The usual row passes every check: the same checks as check_row's, without
        # the report it builds (a fifth of a claimed row's decoding time).
        for ok, value in zip(_CLAIMED_CHECKS, row[1:-1], strict=True):
            if not ok(value):
                usual = False
                break
    if not usual:
        checked = check_row(row[:-1], _CLAIMED_COLUMNS, now_us)
        if checked.problems:
            return checked
    call = shared.call_from_row((*row[:6], row[6] + 1, *row[7:-1]), from_micros)
    return attrs.evolve(call, dependents=True) if has_dependents(row) else call


def has_dependents(row: Sequence[Any]) -> bool:
    """Whether a row of ``claim_candidates`` (``dependents`` last) may have dependents."""
    return bool(row[-1] != 0)


def pending_call(row: Sequence[Any]) -> StoredCall:
    """A row of ``pending``; one that does not decode is a :class:`StoreError` that
    says which row and why."""
    checked = check_row(row, PENDING_COLUMNS, 0)
    if checked.problems:
        raise StoreError(checked.reason(f"SQLite store: pending call {row[0]} cannot be read"))
    return shared.call_from_row(row, from_micros, keyed=True)


def dead_letter(row: Sequence[Any]) -> DeadLetter:
    """A row of ``dead_letters``; one that does not decode is a :class:`StoreError`."""
    checked = check_row(row, DEAD_LETTER_COLUMNS, 0)
    if checked.problems:
        raise StoreError(
            checked.reason(f"SQLite store: dead letter {row[0]} cannot be read")
            + f"; purge it with purge_dead_letters([{row[0]}])"
        )
    return shared.dead_letter_from_row(row, from_micros)


def due_time(value: object) -> datetime | None:
    """A due time found by ``next_due_of_name``, only to know when to wake: a number out
    of range is clamped (that row is claimed, and dead-lettered, once due), and text or
    a blob is never due (SQLite orders them after every number)."""
    if type(value) is not int and type(value) is not float:
        return None
    return from_micros(int(min(max(value, EARLIEST_MICROS), LATEST_MICROS)))


def recurring(row: Sequence[Any]) -> RecurringInfo:
    """A row of the ``RECURRING_COLUMNS``; one that does not decode (a row that
    bypassed the CHECKs) is a :class:`StoreError` that says which schedule."""
    try:
        if not all(type(row[i]) is int or row[i] is None for i in _RECURRING_INTS):
            raise TypeError("a time or count is not an integer")
        if not all(type(row[i]) is str or row[i] is None for i in _RECURRING_TEXTS):
            raise TypeError("a text column is not text")
        return shared.recurring_from_row(row, from_micros)
    except (TypeError, ValueError, OverflowError) as exc:
        raise StoreError(
            f"SQLite store: recurring schedule {show(row[0])} cannot be read "
            f"(written by another program?): {exc}"
        ) from None


_RECURRING_INTS: Final = (7, 8, 11, 12, 13, 14, 15, 16, 17, 18, 19)
_RECURRING_TEXTS: Final = (0, 1, 2, 3, 4, 6, 9, 10)

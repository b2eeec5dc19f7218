"""Rows that do not fit the schema become dead letters, with the reason: never handed
over, never dropped.

Two callers, each inside its own transaction: a claim that meets a call row it cannot
decode (a row that bypassed the CHECKs, or text that is not UTF-8), and the data step
of schema migration 0003, which takes the rows its CHECKs left behind in the old
tables. A dead letter keeps every value that passes the row checks of ``_rows.py``
(placeholders for the others) and says in its error what was wrong, each offending
value shown as an SQL literal.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from datetime import UTC, datetime

import attrs

from ._connection import to_micros
from ._rows import (
    CALL_COLUMNS,
    DEAD_LETTER_COLUMNS,
    LEASE_OWNER,
    Checked,
    check_row,
    read_text,
    show,
)

_INSERT = """
INSERT INTO futurecalls_dead_letters
    (id, call_id, name, payload, due_at, identifier, scheduled_at, failed_at, error, attempts)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
"""


def keep_as_dead_letters(
    conn: sqlite3.Connection, calls: Sequence[Checked], now_us: int, what: str
) -> None:
    """Keep the call rows ``calls`` (checked with the columns of ``CALL_COLUMNS``) as
    dead letters failed at ``now_us``, their error starting with ``what``. The caller
    deletes the rows in the same transaction."""
    for call in calls:
        name, payload, due_at, identifier, scheduled_at, attempts = call.kept[:6]
        conn.execute(
            _INSERT,
            (
                None,
                call.id,
                name,
                payload,
                due_at,
                identifier,
                scheduled_at,
                now_us,
                call.reason(what),
                attempts,
            ),
        )


def after_0003(conn: sqlite3.Connection) -> None:
    """The data step of schema migration 0003 (see its script): the rows of the old
    tables that its CHECKs did not let into the new ones become, or stay, dead
    letters; then the old tables go."""
    now_us = to_micros(datetime.now(UTC))
    factory = conn.text_factory
    conn.text_factory = read_text
    try:
        _fix_dead_letters(conn, now_us)
        _move_calls(conn, now_us)
    finally:
        conn.text_factory = factory
    conn.execute("DROP TABLE futurecalls_calls_v2")
    conn.execute("DROP TABLE futurecalls_dead_letters_v2")


_NOTE = "Schema migration 0003 fixed this dead letter, which broke the table's constraints"


def _fix_dead_letters(conn: sqlite3.Connection, now_us: int) -> None:
    rows = conn.execute(
        "SELECT id, call_id, name, payload, due_at, identifier, scheduled_at, failed_at,"
        " error, attempts FROM futurecalls_dead_letters_v2"
        " WHERE id NOT IN (SELECT id FROM futurecalls_dead_letters) ORDER BY id"
    ).fetchall()
    for row in rows:
        checked = _explained(row, check_row(row, DEAD_LETTER_COLUMNS, now_us))
        call_id, name, payload, due_at, identifier, scheduled_at, failed_at, error, attempts = (
            checked.kept
        )
        note = checked.reason(_NOTE)
        conn.execute(
            _INSERT,
            (
                # A dead letter keeps its id (purges and requeues name it), unless it
                # had none a caller could give (the sequence hands out a new one).
                row[0] if type(row[0]) is int and row[0] >= 1 else None,
                call_id,
                name,
                payload,
                due_at,
                identifier,
                scheduled_at,
                failed_at,
                f"{error}\n{note}" if error else note,
                attempts,
            ),
        )


def _move_calls(conn: sqlite3.Connection, now_us: int) -> None:
    rows = conn.execute(
        "SELECT id, name, payload, due_at, identifier, scheduled_at, attempts, lease_owner"
        " FROM futurecalls_calls_v2 WHERE id NOT IN (SELECT id FROM futurecalls_calls)"
        " ORDER BY id"
    ).fetchall()
    calls = []
    for row in rows:
        checked = check_row(row[:7], CALL_COLUMNS, now_us)
        if not LEASE_OWNER.ok(row[7]):
            problem = f"lease_owner {show(row[7])} {LEASE_OWNER.says}"
            checked = attrs.evolve(checked, problems=[*checked.problems, problem])
        calls.append(_explained(row, checked))
    # (They never reached the new table: the old one, with them, goes after this.)
    keep_as_dead_letters(
        conn,
        calls,
        now_us,
        "Moved to dead letters by schema migration 0003: this call broke the table's constraints",
    )


def _explained(row: Sequence[object], checked: Checked) -> Checked:
    """``checked``, or, if the row checks found nothing although a CHECK refused the
    row (they mirror each other; this is the net under that), every value shown."""
    if checked.problems:
        return checked
    values = ", ".join(show(value) for value in row)
    return attrs.evolve(checked, problems=[f"a CHECK constraint refused the values ({values})"])

"""Storing calls in SQLite: the parameters of ``insert_call``, and unique keys.

Runs inside the store's write transaction (``BEGIN IMMEDIATE``), on its thread.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping, Sequence

from ..._errors import DuplicateCallError
from ..._model import NewCall
from ._connection import to_micros


def insert_params(c: NewCall) -> tuple[object, ...]:
    """The parameters of ``insert_call`` for ``c``."""
    return (
        c.name,
        c.payload,
        to_micros(c.due_at),
        c.identifier,
        to_micros(c.scheduled_at),
        c.attempts,
        c.recurring_key,
        None if c.tick_at is None else to_micros(c.tick_at),
        c.priority,
    )


def insert_calls(
    q: Mapping[str, str], calls: Sequence[NewCall], conn: sqlite3.Connection
) -> list[int]:
    """Store ``calls`` in order; their ids (a keyed call's: see below)."""
    if not any(c.unique_key is not None for c in calls):
        return [conn.execute(q["insert_call"], insert_params(c)).fetchone()[0] for c in calls]
    return _insert_keyed(q, calls, conn)


def _insert_keyed(
    q: Mapping[str, str], calls: Sequence[NewCall], conn: sqlite3.Connection
) -> list[int]:
    """A batch with unique keys, in order: the unique index finds each conflict (with
    a pending call, or an earlier call of the batch); "ignore" takes the holder's id,
    "replace" updates the holder, "error" raises and the transaction rolls back
    (nothing of the batch is stored)."""
    ids: list[int] = []
    for c in calls:
        if c.unique_key is None:
            ids.append(conn.execute(q["insert_call"], insert_params(c)).fetchone()[0])
        else:
            ids.append(insert_keyed_call(q, c, conn))
    return ids


def insert_keyed_call(q: Mapping[str, str], c: NewCall, conn: sqlite3.Connection) -> int:
    """Store ``c``, which has a unique key; its id, or the holder's (see above)."""
    # (A call with a unique key is no run of a schedule: _validate refuses both.)
    row = insert_params(c)[:6]
    inserted = conn.execute(q["insert_keyed_call"], (*row, c.unique_key, c.priority))
    found = inserted.fetchone()
    if found is not None:
        new_id: int = found[0]
        return new_id
    # The write lock is held: the holder is still there.
    (held,) = conn.execute(q["keyed_call"], (c.name, c.unique_key)).fetchone()
    if c.on_conflict == "error":
        assert c.unique_key is not None
        raise DuplicateCallError(c.name, c.unique_key, held)
    if c.on_conflict == "replace":
        params = (c.payload, row[2], c.identifier, c.priority, held)
        conn.execute(q["replace_keyed_call"], params)
    return int(held)

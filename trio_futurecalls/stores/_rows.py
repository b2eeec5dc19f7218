"""Rows of the SQL stores' queries into values: both select the same columns in the
same order. The PostgreSQL store uses these directly (its column types and CHECKs
guarantee what a row holds); the SQLite store, whose columns can hold anything,
checks each value first (``sqlite/_rows.py``) and then builds the values here."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

from .._model import DeadLetter, StoredCall

#: Turns a stored time (SQLite: integer microseconds; PostgreSQL: timestamptz) into an
#: aware UTC datetime.
TimeReader = Callable[[Any], datetime]


def call_from_row(row: Sequence[Any], when: TimeReader, *, keyed: bool = False) -> StoredCall:
    """``id, name, payload, due_at, identifier, scheduled_at, attempts``, and with
    ``keyed`` then ``unique_key`` (pending rows carry their key; claimed ones have
    none: the claim freed it)."""
    return StoredCall(
        id=row[0],
        name=row[1],
        payload=row[2],
        due_at=when(row[3]),
        identifier=row[4],
        scheduled_at=when(row[5]),
        attempts=row[6],
        unique_key=row[7] if keyed else None,
    )


def dead_letter_from_row(row: Sequence[Any], when: TimeReader) -> DeadLetter:
    """``id, call_id, name, payload, due_at, identifier, scheduled_at, failed_at,
    error, attempts``."""
    return DeadLetter(
        id=row[0],
        call_id=row[1],
        name=row[2],
        payload=row[3],
        due_at=when(row[4]),
        identifier=row[5],
        scheduled_at=when(row[6]),
        failed_at=when(row[7]),
        error=row[8],
        attempts=row[9],
    )

"""Rows of the SQL stores' queries into values: both select the same columns in the
same order. The PostgreSQL store uses these directly (its column types and CHECKs
guarantee what a row holds); the SQLite store, whose columns can hold anything,
checks each value first (``sqlite/_rows.py``) and then builds the values here."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime, timedelta
from typing import Any

from .._cluster_limits import ClusterLimit
from .._errors import InvalidArgumentError
from .._model import DeadLetter, RecurringInfo, StoredCall

_log = logging.getLogger("trio_futurecalls.store")

#: Turns a stored time (SQLite: integer microseconds; PostgreSQL: timestamptz) into an
#: aware UTC datetime.
TimeReader = Callable[[Any], datetime]


def call_from_row(row: Sequence[Any], when: TimeReader, *, keyed: bool = False) -> StoredCall:
    """``id, name, payload, due_at, identifier, scheduled_at, attempts, recurring_key,
    tick_at, priority``, and with ``keyed`` then ``unique_key`` (pending rows carry
    their key; claimed ones have none: the claim freed it)."""
    tick_at = row[8]
    return StoredCall(
        id=row[0],
        name=row[1],
        payload=row[2],
        due_at=when(row[3]),
        identifier=row[4],
        scheduled_at=when(row[5]),
        attempts=row[6],
        recurring_key=row[7],
        tick_at=None if tick_at is None else when(tick_at),
        priority=row[9],
        unique_key=row[10] if keyed else None,
    )


#: The columns of a recurring schedule, in the order the stores select them.
RECURRING_COLUMNS = (
    "key",
    "name",
    "payload",
    "identifier",
    "cron",
    "every",
    "timezone",
    "start_at",
    "end_at",
    "misfire",
    "overlap",
    "anchor",
    "next_tick",
    "last_tick",
    "last_call_id",
    "runs",
    "skipped_overlap",
    "skipped_misfire",
    "created_at",
    "updated_at",
)


def recurring_from_row(row: Sequence[Any], when: TimeReader) -> RecurringInfo:
    """A row of the ``RECURRING_COLUMNS``."""

    def maybe(value: Any) -> datetime | None:
        return None if value is None else when(value)

    return RecurringInfo(
        key=row[0],
        name=row[1],
        payload=row[2],
        identifier=row[3],
        cron=row[4],
        every=None if row[5] is None else float(row[5]),
        timezone=row[6],
        start=maybe(row[7]),
        end=maybe(row[8]),
        misfire=row[9],
        overlap=row[10],
        anchor=when(row[11]),
        next_tick=maybe(row[12]),
        last_tick=maybe(row[13]),
        last_call_id=row[14],
        runs=row[15],
        skipped_overlap=row[16],
        skipped_misfire=row[17],
        created_at=when(row[18]),
        updated_at=when(row[19]),
    )


def recurring_to_row(info: RecurringInfo, write: Callable[[datetime], Any]) -> tuple[Any, ...]:
    """``info`` as the values of the ``RECURRING_COLUMNS``, times written by ``write``."""

    def maybe(value: datetime | None) -> Any:
        return None if value is None else write(value)

    return (
        info.key,
        info.name,
        info.payload,
        info.identifier,
        info.cron,
        info.every,
        info.timezone,
        maybe(info.start),
        maybe(info.end),
        info.misfire,
        info.overlap,
        write(info.anchor),
        maybe(info.next_tick),
        maybe(info.last_tick),
        info.last_call_id,
        info.runs,
        info.skipped_overlap,
        info.skipped_misfire,
        write(info.created_at),
        write(info.updated_at),
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


def cluster_limit_from_row(row: Sequence[Any], when: TimeReader) -> ClusterLimit:
    """``kind, name, tokens, per_us, set_at, set_by`` (raises InvalidArgumentError for a
    row no worker of this version would have written)."""
    per_us = row[3]
    return ClusterLimit(
        kind=row[0],
        name=row[1],
        tokens=row[2],
        per=None if per_us is None else timedelta(microseconds=per_us),
        set_at=when(row[4]),
        set_by=row[5],
    )


def cluster_limits_from_rows(rows: Iterable[Sequence[Any]], when: TimeReader) -> list[ClusterLimit]:
    """The limits of ``rows``; a row another program wrote that is not a limit is
    logged and left out (a claim ignores it too: its name matches no class)."""
    limits = []
    for row in rows:
        try:
            limits.append(cluster_limit_from_row(row, when))
        except (InvalidArgumentError, TypeError, ValueError, OverflowError) as exc:
            _log.error("a stored cluster limit is not one (left out): %r: %s", tuple(row), exc)
    return limits

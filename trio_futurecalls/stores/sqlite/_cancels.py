"""Cancel requests in SQLite: what each store method runs on the connection.

``request_cancel`` runs in the store's ``BEGIN IMMEDIATE`` transaction: the leased
rows of the call go (and what waited for them becomes dead letters) together with the
request's insert. Other processes see the commit through their data_version
watchers; their cancel watchers read the requests at least every
``recheck_interval``. ``cancel_requests`` reads first and writes only when there is
something to delete (an expired or unreadable request), so that idle workers polling
the table do not wake each other with commits. Rows are read defensively: a row
another program wrote that is not a valid request is ignored with a warning, and
deleted.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from ..._cancel_model import CancelRequest, check_request, readable_requests
from ..._errors import InvalidArgumentError
from .._dependencies import CANCELLED
from . import _dependencies as dependencies
from ._connection import from_micros, to_micros
from ._rows import EARLIEST_MICROS, LATEST_MICROS, show


def request(
    q: Mapping[str, str],
    call_id: int | None,
    identifier: str | None,
    now: datetime,
    expires_at: datetime,
    conn: sqlite3.Connection,
) -> tuple[CancelRequest, int]:
    now_us = to_micros(now)
    if identifier is None:
        rows = conn.execute(q["cancel_leased"], (call_id,)).fetchall()
    else:
        rows = conn.execute(q["cancel_leased_identifier"], (identifier,)).fetchall()
    dependencies.removed(q, rows, CANCELLED, now_us, conn)
    (request_id,) = conn.execute(
        q["cancel_request_insert"], (call_id, identifier, now_us, to_micros(expires_at))
    ).fetchone()
    stored = CancelRequest(
        id=request_id,
        call_id=call_id,
        identifier=identifier,
        requested_at=now,
        expires_at=expires_at,
    )
    return stored, len(rows)


def all_rows(q: Mapping[str, str], conn: sqlite3.Connection) -> list[Any]:
    return conn.execute(q["cancel_requests_all"]).fetchall()


def split(rows: list[Any], now: datetime) -> tuple[list[CancelRequest], list[int]]:
    """The live requests among ``rows``, and the ids of the rows to delete (expired,
    or not a valid request: with a warning)."""
    valid = readable_requests(rows, _request, lambda row: show(row[0]))
    live = [r for r in valid if r.expires_at > now]
    keep = {r.id for r in live}
    return live, [row[0] for row in rows if row[0] not in keep]


def delete(q: Mapping[str, str], ids: list[int], conn: sqlite3.Connection) -> None:
    conn.executemany(q["cancel_request_delete"], [(i,) for i in ids])
    conn.execute(q["cancel_acks_orphaned"])


def ack(
    q: Mapping[str, str], request_id: int, worker_id: str, found: int, conn: sqlite3.Connection
) -> None:
    conn.execute(q["cancel_ack"], (request_id, worker_id, found))


def acks(q: Mapping[str, str], request_id: int, conn: sqlite3.Connection) -> dict[str, int]:
    rows = conn.execute(q["cancel_acks"], (request_id,)).fetchall()
    return {w: f for w, f in rows if type(w) is str and type(f) is int and f >= 0}


def _request(row: Any) -> CancelRequest:
    request_id, call_id, identifier, requested, expires = row
    return check_request(
        request_id,
        call_id,
        identifier,
        _time(requested, "requested_at"),
        _time(expires, "expires_at"),
    )


def _time(value: object, what: str) -> datetime:
    if type(value) is int and EARLIEST_MICROS <= value <= LATEST_MICROS:
        return from_micros(value)
    raise InvalidArgumentError(f"{what} is not a stored time: {show(value)}")

"""Cancel requests on PostgreSQL: the transaction of ``request_cancel`` and rows read
back.

``request_cancel`` is one transaction: the leased rows of the call go
(``cancel_leased``; what waited for them becomes dead letters, ``aio_gone``), and the
request is stored with a NOTIFY in the same statement (``cancel_request_insert``),
delivered to every worker when the transaction commits. ``cancel_requests_live``
deletes the expired requests (their acks cascade) in the statement that reads the
others. The table's types and CHECKs keep odd values out; what they let through (an
identifier with characters the library refuses) leaves that row out, with a warning.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from ..._cancel_model import CancelRequest, check_request, readable_requests
from .._dependencies import CANCELLED
from .._listeners import CANCEL_REQUESTED
from ._dependencies import aio_gone
from ._listener import notify_payload


async def aio_request_cancel(
    q: Mapping[str, str],
    channel: str,
    call_id: int | None,
    identifier: str | None,
    now: datetime,
    expires_at: datetime,
    conn: Any,
) -> tuple[CancelRequest, int]:
    if identifier is None:
        rows = await conn.fetch(q["cancel_leased"], call_id)
    else:
        rows = await conn.fetch(q["cancel_leased_identifier"], identifier)
    await aio_gone(q, rows, CANCELLED, now, conn)
    request_id = await conn.fetchval(
        q["cancel_request_insert"],
        call_id,
        identifier,
        now,
        expires_at,
        channel,
        notify_payload(CANCEL_REQUESTED),
    )
    request = CancelRequest(
        id=request_id,
        call_id=call_id,
        identifier=identifier,
        requested_at=now,
        expires_at=expires_at,
    )
    return request, len(rows)


def live_requests(rows: Sequence[Any]) -> list[CancelRequest]:
    return readable_requests(rows, lambda row: check_request(*row), lambda row: repr(row[0]))


def ack_rows(rows: Sequence[Any]) -> dict[str, int]:
    return {row[0]: row[1] for row in rows}

"""What the store's tables may hold, and the checks of values before they are written.

PostgreSQL holds times Python cannot (``infinity``, years before 1 and after 9999) and
integers the store cannot count up from (``attempts = 2147483647`` makes ``attempts +
1`` overflow). A row holding one could not be read back, or claimed, by any worker.
Migration ``0003_readable_values.sql`` moves such rows to dead letters and adds CHECKs
with the bounds below, so that no statement can store one again and every value a
statement returns converts to Python. These functions refuse such values earlier, at
the call site, with a clear error; a batch of writes then never fails for everyone
because one of its items was bad.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Final

from ..._errors import InvalidArgumentError, InvalidPayloadError
from ..._model import NewCall, StoredCall
from ..._payload import MAX_PAYLOAD_BYTES
from ..._validate import EARLIEST_TIME, LATEST_TIME, MAX_IDENTIFIER_LENGTH, MAX_NAME_LENGTH
from ..._validate import MAX_ATTEMPTS as LIBRARY_MAX_ATTEMPTS

#: The bounds every store keeps (see trio_futurecalls._validate): times a day inside
#: what a ``datetime`` holds, so that a time shown in any time zone, or moved by a small
#: offset, is still a ``datetime``; attempts a claim can count up to without overflow.
MIN_TIME: Final = EARLIEST_TIME
MAX_TIME: Final = LATEST_TIME
MAX_ATTEMPTS: Final = LIBRARY_MAX_ATTEMPTS
#: Largest id a bigint identity column holds.
MAX_ID: Final = 2**63 - 1


def utc(value: datetime) -> datetime:
    """An aware time in UTC (asyncpg returns timestamptz values in UTC already: then
    there is nothing to convert)."""
    return value if value.tzinfo is UTC else value.astimezone(UTC)


def check_time(value: datetime, what: str) -> None:
    """Refuse a naive time, or one outside [:data:`MIN_TIME`, :data:`MAX_TIME`]."""
    if not isinstance(value, datetime) or value.tzinfo is None:
        raise InvalidArgumentError(f"{what} must be a timezone-aware datetime, got {value!r}")
    if not MIN_TIME <= value <= MAX_TIME:  # aware datetimes compare across zones
        raise InvalidArgumentError(
            f"{what} {value.isoformat()} is out of range: a stored time must be between "
            f"{MIN_TIME.isoformat()} and {MAX_TIME.isoformat()}"
        )


def check_attempts(value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_ATTEMPTS:
        raise InvalidArgumentError(
            f"attempts must be an int from 0 to {MAX_ATTEMPTS}, got {value!r}"
        )


def check_id(value: int, what: str = "call id") -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_ID:
        raise InvalidArgumentError(f"{what} must be an int from 1 to {MAX_ID}, got {value!r}")


def check_owner(value: object) -> None:
    if not isinstance(value, str) or "\x00" in value:
        raise InvalidArgumentError(f"a lease owner must be a str without NUL, got {value!r}")


def check_call(call: NewCall | StoredCall) -> None:
    """Refuse a call the ``calls`` table would not take (its CHECKs are the last line).

    The engine validated these already; checked again so that a call built by hand
    gets the same clear error as through the engine, and so that one bad call never
    fails a statement it shares with others.
    """
    if not isinstance(call.name, str) or not 1 <= len(call.name) <= MAX_NAME_LENGTH:
        raise InvalidArgumentError(f"call name must be 1 to {MAX_NAME_LENGTH} characters")
    if call.identifier is not None and not 1 <= len(call.identifier) <= MAX_IDENTIFIER_LENGTH:
        raise InvalidArgumentError(f"identifier must be 1 to {MAX_IDENTIFIER_LENGTH} characters")
    payload = call.payload
    size = len(payload) if payload.isascii() else len(payload.encode())
    if size > MAX_PAYLOAD_BYTES:
        raise InvalidPayloadError(
            f"payload is {size} bytes as JSON; the limit is {MAX_PAYLOAD_BYTES}"
        )
    for text in (call.name, call.payload, call.identifier or ""):
        if "\x00" in text:
            raise InvalidArgumentError("PostgreSQL text cannot hold NUL characters")
    check_time(call.due_at, "due_at")
    check_time(call.scheduled_at, "scheduled_at")
    check_attempts(call.attempts)
    if isinstance(call, StoredCall):
        check_id(call.id)


def check_calls(calls: Iterable[NewCall | StoredCall]) -> None:
    for call in calls:
        check_call(call)

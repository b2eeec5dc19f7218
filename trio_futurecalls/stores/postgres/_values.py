"""What the store's tables may hold, and turning the times they return into UTC.

PostgreSQL holds times Python cannot (``infinity``, years before 1 and after 9999) and
integers the store cannot count up from (``attempts = 2147483647`` makes ``attempts +
1`` overflow). A row holding one could not be read back, or claimed, by any worker.
Migration ``0003_readable_values.sql`` moves such rows to dead letters and adds CHECKs
with the bounds below (the library's, from ``trio_futurecalls._validate``), so that
no statement can store one again and every value a statement returns converts to
Python. Values are refused earlier, at the call site, by the checks every store shares
(``StoreArgs``); a batch of writes then never fails for everyone because one of its
items was bad.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Final

from ..._validate import EARLIEST_TIME, LATEST_TIME
from ..._validate import MAX_ATTEMPTS as LIBRARY_MAX_ATTEMPTS

#: The bounds every store keeps: times a day inside what a ``datetime`` holds, so that
#: a time shown in any time zone, or moved by a small offset, is still a ``datetime``;
#: attempts a claim can count up to without overflow.
MIN_TIME: Final = EARLIEST_TIME
MAX_TIME: Final = LATEST_TIME
MAX_ATTEMPTS: Final = LIBRARY_MAX_ATTEMPTS


def utc(value: datetime) -> datetime:
    """An aware time in UTC (asyncpg returns timestamptz values in UTC already: then
    there is nothing to convert)."""
    return value if value.tzinfo is UTC else value.astimezone(UTC)

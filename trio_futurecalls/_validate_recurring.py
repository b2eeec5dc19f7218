"""Validation of a recurring schedule's definition: cron, interval, time zone, policies.

The checks ``schedule_recurring`` makes at the call site, and ``Store.put_recurring``
makes on a schedule it is given (:func:`check_recurring_info`). Cron expressions are
checked by parsing them with cronsim, time zones by loading them.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Final, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import attrs
from cronsim import CronSim, CronSimError

from ._errors import InvalidArgumentError
from ._model import RecurringInfo
from ._validate import (
    MAX_DELAY,
    MAX_ID,
    check_id,
    check_identifier,
    check_name,
    check_payload_text,
    check_recurring_key,
    check_time,
)

Misfire = Literal["once", "skip", "all"]
Overlap = Literal["allow", "skip"]
MISFIRE_MODES: Final = ("once", "skip", "all")
OVERLAP_MODES: Final = ("allow", "skip")
#: Longest cron expression accepted.
MAX_CRON_LENGTH: Final = 200
#: Shortest ``every``: one millisecond.
MIN_EVERY: Final = 0.001


def check_timezone(value: object) -> str:
    """An IANA time zone name that this machine knows."""
    if not isinstance(value, str) or not value or len(value) > 100:
        raise InvalidArgumentError(f"timezone must be an IANA time zone name, got {value!r}")
    zone_of(value)
    return value


def zone_of(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise InvalidArgumentError(f"unknown time zone {name!r}") from None


def check_cron(value: object) -> str:
    """A cron expression cronsim accepts (five fields, or six with seconds first)."""
    if not isinstance(value, str) or not value.strip() or len(value) > MAX_CRON_LENGTH:
        raise InvalidArgumentError(
            f"cron must be a cron expression of at most {MAX_CRON_LENGTH} characters, got {value!r}"
        )
    expression = " ".join(value.split())
    try:
        CronSim(expression, datetime(2000, 1, 1, tzinfo=UTC))
    except CronSimError as exc:
        raise InvalidArgumentError(f"invalid cron expression {value!r}: {exc}") from None
    return expression


def check_every(value: object) -> float:
    """An interval: a timedelta or seconds, from 1 ms to ``MAX_DELAY``."""
    if isinstance(value, timedelta):
        seconds = value.total_seconds()
    elif isinstance(value, int | float) and not isinstance(value, bool):
        seconds = float(value)
    else:
        raise InvalidArgumentError(f"every must be a timedelta or seconds, got {value!r}")
    if not seconds > 0:  # also NaN
        raise InvalidArgumentError(f"every must be > 0, got {value!r}")
    if seconds < MIN_EVERY or seconds > MAX_DELAY.total_seconds():
        raise InvalidArgumentError(
            f"every must be from {MIN_EVERY} s to {MAX_DELAY.days} days, got {value!r}"
        )
    return seconds


def check_choice(value: object, choices: tuple[str, ...], what: str) -> str:
    if not isinstance(value, str) or value not in choices:
        raise InvalidArgumentError(f"{what} must be one of {', '.join(choices)}; got {value!r}")
    return value


def _optional_time(value: object, what: str) -> datetime | None:
    return None if value is None else check_time(value, what)


def check_recurring_info(info: object) -> RecurringInfo:
    """A schedule to store, checked as ``schedule_recurring`` checks its arguments."""
    if not isinstance(info, RecurringInfo):
        raise InvalidArgumentError(f"schedule must be a RecurringInfo, got {type(info).__name__}")
    check_recurring_key(info.key)
    check_name(info.name)
    check_payload_text(info.payload)
    check_identifier(info.identifier)
    if (info.cron is None) == (info.every is None):
        raise InvalidArgumentError("a schedule has exactly one of cron and every")
    cron = None if info.cron is None else check_cron(info.cron)
    every = None if info.every is None else check_every(info.every)
    check_timezone(info.timezone)
    check_choice(info.misfire, MISFIRE_MODES, "misfire")
    check_choice(info.overlap, OVERLAP_MODES, "overlap")
    start = _optional_time(info.start, "start")
    end = _optional_time(info.end, "end")
    if start is not None and end is not None and end < start:
        raise InvalidArgumentError("end must not be before start")
    for what in ("runs", "skipped_overlap", "skipped_misfire"):
        count = getattr(info, what)
        if isinstance(count, bool) or not isinstance(count, int) or not 0 <= count <= MAX_ID:
            raise InvalidArgumentError(f"{what} must be an int >= 0, got {count!r}")
    if info.last_call_id is not None:
        check_id(info.last_call_id, "last_call_id")
    return attrs.evolve(
        info,
        cron=cron,
        every=every,
        start=start,
        end=end,
        anchor=check_time(info.anchor, "anchor"),
        next_tick=_optional_time(info.next_tick, "next_tick"),
        last_tick=_optional_time(info.last_tick, "last_tick"),
        created_at=check_time(info.created_at, "created_at"),
        updated_at=check_time(info.updated_at, "updated_at"),
    )

"""Validation of user input at the call site."""

from __future__ import annotations

import math
import re
from datetime import UTC, datetime, timedelta

from ._errors import InvalidArgumentError

#: Longest accepted call-class ``name`` (characters).
MAX_NAME_LENGTH = 200
#: Longest accepted ``identifier`` (characters).
MAX_IDENTIFIER_LENGTH = 255
#: Longest accepted delay: calls further out than this are almost certainly a unit mistake.
MAX_DELAY = timedelta(days=366 * 100)

_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_.:\-]*$")


def check_aware(value: datetime, what: str = "datetime") -> datetime:
    """Return ``value`` converted to UTC; reject naive datetimes."""
    if not isinstance(value, datetime):
        raise InvalidArgumentError(f"{what} must be a datetime, got {type(value).__name__}")
    if value.tzinfo is None or value.tzinfo.utcoffset(value) is None:
        raise InvalidArgumentError(
            f"{what} must be timezone-aware (got naive {value.isoformat()}); "
            "use e.g. datetime.now(UTC) or value.replace(tzinfo=UTC)"
        )
    return value.astimezone(UTC)


def check_delay(delay: timedelta | float | int) -> timedelta:
    """Return ``delay`` as a timedelta; reject negative, non-finite and absurd delays."""
    if isinstance(delay, bool):
        raise InvalidArgumentError("delay must be a timedelta or a number of seconds, got bool")
    if isinstance(delay, int | float):
        if not math.isfinite(delay):
            raise InvalidArgumentError(f"delay must be finite, got {delay!r}")
        if delay < 0:
            raise InvalidArgumentError(f"delay must not be negative, got {delay!r}")
        if delay > MAX_DELAY.total_seconds():
            raise InvalidArgumentError(f"delay of {delay!r} s is longer than {MAX_DELAY}")
        return timedelta(seconds=delay)
    if not isinstance(delay, timedelta):
        raise InvalidArgumentError(
            f"delay must be a timedelta or a number of seconds, got {type(delay).__name__}"
        )
    if delay < timedelta(0):
        raise InvalidArgumentError(f"delay must not be negative, got {delay}")
    if delay > MAX_DELAY:
        raise InvalidArgumentError(f"delay of {delay} is longer than {MAX_DELAY}")
    return delay


def resolve_due(
    now: datetime, at: datetime | None, delay: timedelta | float | int | None
) -> datetime:
    """The due time of a call given at most one of ``at`` and ``delay`` (neither: now)."""
    if at is not None and delay is not None:
        raise InvalidArgumentError("give at= (aware datetime) or delay=, not both")
    if at is not None:
        return check_aware(at, "at")
    if delay is None:
        return now
    try:
        return now + check_delay(delay)
    except OverflowError:
        raise InvalidArgumentError(f"delay {delay!r} goes past the largest datetime") from None


def check_name(name: object) -> str:
    """Validate a call-class name (stored in every row)."""
    if not isinstance(name, str):
        raise InvalidArgumentError(f"call name must be a str, got {type(name).__name__}")
    if not name:
        raise InvalidArgumentError("call name must not be empty")
    if len(name) > MAX_NAME_LENGTH:
        raise InvalidArgumentError(
            f"call name is {len(name)} characters long; the limit is {MAX_NAME_LENGTH}"
        )
    if not _NAME_RE.match(name):
        raise InvalidArgumentError(
            f"call name {name!r} must start with a letter or '_' and contain only "
            "letters, digits, '_', '.', ':' and '-'"
        )
    return name


def check_identifier(identifier: object) -> str | None:
    """Validate an optional, non-unique identifier."""
    if identifier is None:
        return None
    if not isinstance(identifier, str):
        raise InvalidArgumentError(f"identifier must be a str, got {type(identifier).__name__}")
    if not identifier:
        raise InvalidArgumentError("identifier must not be empty (use None for no identifier)")
    if len(identifier) > MAX_IDENTIFIER_LENGTH:
        raise InvalidArgumentError(
            f"identifier is {len(identifier)} characters long; the limit is {MAX_IDENTIFIER_LENGTH}"
        )
    if "\x00" in identifier:
        raise InvalidArgumentError("identifier must not contain NUL characters")
    return identifier


def check_limit(value: object, what: str) -> int | None:
    """A concurrency limit: a positive int, or None for unlimited."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidArgumentError(f"{what} must be a positive int or None, got {value!r}")
    if value <= 0:
        raise InvalidArgumentError(f"{what} must be >= 1 (use None for unlimited), got {value!r}")
    return value


def check_positive_seconds(value: object, what: str, *, allow_none: bool = False) -> float | None:
    """A finite, non-negative number of seconds."""
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidArgumentError(f"{what} must be a number of seconds, got {value!r}")
    if not math.isfinite(value) or value < 0:
        raise InvalidArgumentError(f"{what} must be finite and >= 0, got {value!r}")
    return float(value)

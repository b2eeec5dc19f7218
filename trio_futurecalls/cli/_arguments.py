"""Values on the command line: durations, times, JSON payloads, bounded integers.

Each parser raises :class:`UsageError` (exit code 2) or, as an argparse ``type``,
``argparse.ArgumentTypeError``, with a message that says what was expected.
"""

from __future__ import annotations

import argparse
import json
import math
import re
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any, Final, NoReturn
from urllib.parse import urlsplit

from .. import InvalidArgumentError
from .._payload import MAX_PAYLOAD_DEPTH, encode_payload
from .._redact import redact
from .._validate import MAX_ID, check_aware, check_delay, check_host, check_time, resolve_due

#: Marks an option that was not given (so the library applies its own default).
NOT_GIVEN: Final = object()


class UsageError(Exception):
    """Bad command-line input: reported with exit code 2."""


_DURATION_RE: Final = re.compile(
    r"^(?:(?P<d>\d+(?:\.\d+)?)d)?(?:(?P<h>\d+(?:\.\d+)?)h)?"
    r"(?:(?P<m>\d+(?:\.\d+)?)m)?(?:(?P<s>\d+(?:\.\d+)?)s)?$"
)
_UNIT_SECONDS: Final = {"d": 86400.0, "h": 3600.0, "m": 60.0, "s": 1.0}


def parse_duration(text: str) -> timedelta:
    """``30s``, ``5m``, ``2h``, ``1d``, ``1h30m``, or plain (fractional) seconds."""
    raw = text.strip().lower()
    seconds: float | None = None
    try:
        seconds = float(raw)
    except ValueError:
        match = _DURATION_RE.match(raw)
        if raw and match:
            seconds = sum(
                float(value) * _UNIT_SECONDS[unit]
                for unit, value in match.groupdict().items()
                if value is not None
            )
    if seconds is None:
        raise UsageError(
            f"invalid duration {text!r}: use e.g. 30s, 5m, 2h, 1d, 1h30m or a number of seconds"
        )
    if not math.isfinite(seconds) or seconds < 0:
        raise UsageError(f"invalid duration {text!r}: must be finite and not negative")
    try:
        # Checked as a number first: a timedelta cannot even hold 1e20 seconds.
        return check_delay(seconds)
    except InvalidArgumentError as exc:
        raise UsageError(f"invalid duration {text!r}: {exc}") from None


def parse_time(text: str, what: str = "--at") -> datetime:
    """A timezone-aware ISO 8601 time (``Z`` or an offset is required), as UTC."""
    try:
        value = datetime.fromisoformat(text.strip())
    except ValueError:
        raise UsageError(
            f"{what}: invalid ISO 8601 time {text!r} (e.g. 2030-01-01T09:00:00+00:00)"
        ) from None
    if value.tzinfo is None or value.tzinfo.utcoffset(value) is None:
        raise UsageError(
            f"{what}: time {text!r} has no timezone; add an offset or Z, "
            "e.g. 2030-01-01T09:00:00Z or 2030-01-01T09:00:00+02:00"
        )
    aware: datetime = checked(lambda v: check_aware(v, what), value)
    return aware


def _reject_constant(name: str) -> NoReturn:
    raise ValueError(f"{name} is not valid JSON")


def parse_payload(text: str) -> str:
    """Validate JSON text and re-encode it compactly, as the library encodes payloads
    (no NaN/Infinity, at most MAX_PAYLOAD_DEPTH levels deep, MAX_PAYLOAD_BYTES long,
    valid Unicode)."""
    try:
        value = json.loads(text, parse_constant=_reject_constant)
    except ValueError as exc:
        raise UsageError(f"--payload is not valid JSON: {exc}") from None
    except RecursionError:
        raise UsageError(
            f"--payload is nested deeper than {MAX_PAYLOAD_DEPTH} levels (the limit)"
        ) from None
    try:
        return encode_payload(None, value)
    except InvalidArgumentError as exc:
        raise UsageError(f"--payload: {exc}") from None


def checked(fn: Callable[[Any], Any], value: object) -> Any:
    try:
        return fn(value)
    except InvalidArgumentError as exc:
        raise UsageError(str(exc)) from None


def due_time(args: argparse.Namespace, now: datetime) -> datetime:
    """The due time from ``--at`` or ``--in`` (neither: now)."""
    at = None if args.at is None else checked(lambda v: check_time(v, "--at"), parse_time(args.at))
    delay = None if args.in_ is None else parse_duration(args.in_)
    try:
        return resolve_due(now, at, delay)
    except InvalidArgumentError as exc:
        raise UsageError(str(exc)) from None


def int_between(low: int, high: int | None, expected: str) -> Callable[[str], int]:
    """An argparse type: an integer from ``low`` to ``high`` (None: no upper bound);
    ``expected`` names it in errors."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = low - 1
        if value < low or (high is not None and value > high):
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}")
        return value

    return parse


positive_int = int_between(1, None, "a positive integer")
non_negative_int = int_between(0, None, "an integer >= 0")
#: An id of a call or dead letter: what the stores hold (64-bit).
id_number = int_between(1, MAX_ID, f"an id (an integer from 1 to {MAX_ID})")
#: At most this many rows.
row_limit = int_between(0, MAX_ID, f"an integer from 0 to {MAX_ID}")


def port_number(text: str) -> int:
    value = non_negative_int(text)
    if value > 65535:
        raise argparse.ArgumentTypeError(f"port must be within 0..65535, got {text!r}")
    return value


def concurrency_limit(text: str) -> int | None:
    if text.strip().lower() in ("unlimited", "none"):
        return None
    return positive_int(text)


def duration_seconds(text: str) -> float:
    try:
        return parse_duration(text).total_seconds()
    except UsageError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def metrics_url(text: str) -> str:
    """An argparse type: an http:// or https:// URL with a host (credentials allowed)."""
    shown = redact(text)
    try:
        parts = urlsplit(text)
        parts.port  # noqa: B018 - raises ValueError for a bad port
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"invalid URL {shown!r}: {redact(str(exc))}") from None
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        raise argparse.ArgumentTypeError(
            f"expected an http:// or https:// URL of a worker's metrics endpoint "
            f"(e.g. http://127.0.0.1:9464/metrics), got {shown!r}"
        )
    return text


def host_name(text: str) -> str:
    """An argparse type: a host name or address to bind."""
    try:
        return check_host(text)
    except InvalidArgumentError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None

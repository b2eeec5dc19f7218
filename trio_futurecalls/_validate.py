"""Validation of user input at the call site.

Every public function and every public store method checks its arguments here, types
included (a bool is not an id, a str is not a collection of names or ids), and raises
:class:`InvalidArgumentError`: the same answer whichever store is behind it. The
checks of a recurring schedule's definition are in ``_validate_recurring.py``; the
arguments of each store method, built from these, in ``_store_args.py``.
"""

from __future__ import annotations

import ipaddress
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Final, TypeVar

import attrs

from ._errors import DuplicateCallError, InvalidArgumentError, InvalidPayloadError
from ._model import CheckedNewCall, Lease, NewCall, OnConflict, StoredCall
from ._store import PendingQuery

#: Longest accepted call-class ``name`` (characters).
MAX_NAME_LENGTH = 200
#: Longest accepted ``identifier`` (characters).
MAX_IDENTIFIER_LENGTH = 255
#: Longest accepted ``unique_key`` (characters): the same as an identifier's.
MAX_UNIQUE_KEY_LENGTH = MAX_IDENTIFIER_LENGTH
#: The values of ``on_conflict``.
ON_CONFLICT_MODES: Final[tuple[OnConflict, ...]] = ("ignore", "replace", "error")
#: Longest accepted delay: calls further out than this are almost certainly a unit mistake.
MAX_DELAY = timedelta(days=366 * 100)
#: MAX_DELAY in seconds, for delays given as numbers.
_MAX_DELAY_SECONDS: Final = MAX_DELAY.total_seconds()

#: The earliest and latest time a store keeps (a due time, a lease expiry...): Python's
#: datetime range less a day at each end, so that a stored time converts to any
#: timezone (offsets are under a day) without overflowing.
EARLIEST_TIME: Final = datetime(1, 1, 2, tzinfo=UTC)
LATEST_TIME: Final = datetime(9999, 12, 30, 23, 59, 59, 999999, tzinfo=UTC)
#: Most attempts a call may count (``FutureCall.max_attempts`` at most this).
MAX_ATTEMPTS: Final = 1_000_000
#: The range of a call's priority (``FutureCall.priority``, ``schedule(priority=...)``):
#: among due calls with free slots, higher priority starts first.
MIN_PRIORITY: Final = -1000
MAX_PRIORITY: Final = 1000
#: Largest id: SQLite's INTEGER and PostgreSQL's bigint are signed 64-bit integers.
MAX_ID: Final = 2**63 - 1
#: Longest lease owner (a scheduler's ``host:pid:random``).
MAX_OWNER_LENGTH: Final = 1000
#: Largest encoded payload accepted, in bytes of UTF-8 JSON (``MAX_PAYLOAD_BYTES``).
MAX_PAYLOAD_BYTES: Final = 1024 * 1024

_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_.:\-]*")


def check_aware(value: object, what: str = "datetime") -> datetime:
    """Return ``value`` converted to UTC; reject naive datetimes and non-datetimes."""
    if not isinstance(value, datetime):
        raise InvalidArgumentError(f"{what} must be a datetime, got {type(value).__name__}")
    if value.tzinfo is UTC:
        return value
    if value.tzinfo is None or value.tzinfo.utcoffset(value) is None:
        raise InvalidArgumentError(
            f"{what} must be timezone-aware (got naive {value.isoformat()}); "
            "use e.g. datetime.now(UTC) or value.replace(tzinfo=UTC)"
        )
    try:
        return value.astimezone(UTC)
    except OverflowError:
        raise InvalidArgumentError(
            f"{what} {value.isoformat()} is out of range: in UTC it falls outside the "
            "years 1 to 9999"
        ) from None


def check_time(value: object, what: str) -> datetime:
    """A time a store keeps: aware, between EARLIEST_TIME and LATEST_TIME; as UTC."""
    if type(value) is datetime and value.tzinfo is UTC and EARLIEST_TIME <= value <= LATEST_TIME:
        return value  # the common case (the library's clock), without a conversion
    utc = check_aware(value, what)
    if not EARLIEST_TIME <= utc <= LATEST_TIME:
        raise InvalidArgumentError(
            f"{what} {utc.isoformat()} is out of range: a stored time must be between "
            f"{EARLIEST_TIME.isoformat()} and {LATEST_TIME.isoformat()}"
        )
    return utc


def check_delay(delay: timedelta | float | int) -> timedelta:
    """Return ``delay`` as a timedelta; reject negative, non-finite and absurd delays."""
    if isinstance(delay, bool):
        raise InvalidArgumentError("delay must be a timedelta or a number of seconds, got bool")
    if isinstance(delay, (int, float)):  # (a tuple: faster than int | float)
        if not math.isfinite(delay):
            raise InvalidArgumentError(f"delay must be finite, got {delay!r}")
        if delay < 0:
            raise InvalidArgumentError(f"delay must not be negative, got {delay!r}")
        if delay > _MAX_DELAY_SECONDS:
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
        return check_time(at, "at")
    if delay is None:
        return check_time(now, "now")
    try:
        due = now + check_delay(delay)
    except OverflowError:
        raise InvalidArgumentError(f"delay {delay!r} goes past the largest datetime") from None
    if type(due) is datetime and due.tzinfo is UTC and EARLIEST_TIME <= due <= LATEST_TIME:
        return due  # the common case, without building check_time's message
    return check_time(due, f"now + delay {delay!r}")


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
    if not _NAME_RE.fullmatch(name):
        raise InvalidArgumentError(
            f"call name {name!r} must start with a letter or '_' and contain only "
            "letters, digits, '_', '.', ':' and '-'"
        )
    return name


def _storable_text(text: str, what: str, limit: int) -> str:
    """A non-empty str ``what`` as a text column keeps it: at most ``limit``
    characters of valid Unicode, without NUL."""
    if len(text) > limit:
        raise InvalidArgumentError(f"{what} is {len(text)} characters long; the limit is {limit}")
    if "\x00" in text:
        raise InvalidArgumentError(f"{what} must not contain NUL characters")
    return check_unicode(text, what)


def check_identifier(identifier: object) -> str | None:
    """Validate an optional, non-unique identifier."""
    if identifier is None:
        return None
    if not isinstance(identifier, str):
        raise InvalidArgumentError(f"identifier must be a str, got {type(identifier).__name__}")
    if not identifier:
        raise InvalidArgumentError("identifier must not be empty (use None for no identifier)")
    return _storable_text(identifier, "identifier", MAX_IDENTIFIER_LENGTH)


def check_unique_key(unique_key: object) -> str | None:
    """Validate an optional unique key: None, or 1 to MAX_UNIQUE_KEY_LENGTH characters
    of valid Unicode without NUL."""
    if unique_key is None:
        return None
    if not isinstance(unique_key, str):
        raise InvalidArgumentError(f"unique_key must be a str, got {type(unique_key).__name__}")
    if not unique_key:
        raise InvalidArgumentError("unique_key must not be empty (use None for no key)")
    return _storable_text(unique_key, "unique_key", MAX_UNIQUE_KEY_LENGTH)


_Choice = TypeVar("_Choice", bound=str)


def check_choice(value: object, choices: tuple[_Choice, ...], what: str) -> _Choice:
    """One of ``choices`` (a str equal to one, not a subclass), else
    :class:`InvalidArgumentError` naming them."""
    for choice in choices:
        if value == choice and type(value) is str:
            return choice
    raise InvalidArgumentError(
        f"{what} must be one of {', '.join(map(repr, choices))}, got {value!r}"
    )


def check_on_conflict(on_conflict: object) -> OnConflict:
    """One of ``"ignore"``, ``"replace"``, ``"error"``."""
    return check_choice(on_conflict, ON_CONFLICT_MODES, "on_conflict")


def check_batch_keys(calls: Sequence[NewCall]) -> None:
    """Within one batch, a call whose name and key an earlier call of the batch has
    conflicts with it: with ``on_conflict="error"`` that fails the whole batch before
    anything is stored (the others resolve in order: see the stores)."""
    seen: set[tuple[str, str]] = set()
    for call in calls:
        if call.unique_key is None:
            continue
        key = (call.name, call.unique_key)
        if key in seen and call.on_conflict == "error":
            raise DuplicateCallError(call.name, call.unique_key, None)
        seen.add(key)


def check_required_identifier(identifier: object) -> str:
    """An identifier to act on (``cancel_identifier``): as check_identifier, not None."""
    checked = check_identifier(identifier)
    if checked is None:
        raise InvalidArgumentError("identifier must not be None")
    return checked


def check_host(host: object, what: str = "host") -> str:
    """A host name or address to bind or connect to: a str that can be looked up (IDNA
    labels of at most 63 characters; an IP address)."""
    if not isinstance(host, str):
        raise InvalidArgumentError(f"{what} must be a str, got {type(host).__name__}")
    try:
        host.encode("idna")
    except UnicodeError as exc:
        raise InvalidArgumentError(f"{what} {host!r} is not a valid host name: {exc}") from None
    return host


def is_loopback(host: str) -> bool:
    """``localhost`` or a loopback address (127.0.0.0/8, ::1, bracketed or not): a host
    only this machine reaches."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


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


def check_bool(value: object, what: str) -> bool:
    """A switch: a real bool. A str ("false") or a number is refused, not taken for
    its truth value (a node meant only to schedule would run calls)."""
    if not isinstance(value, bool):
        raise InvalidArgumentError(f"{what} must be True or False, got {value!r}")
    return value


def check_unicode(text: str, what: str) -> str:
    """Reject text that cannot be stored as UTF-8 (a lone surrogate, e.g. from
    ``os.fsdecode`` of bytes that were not UTF-8)."""
    if not text.isascii():
        try:
            text.encode()
        except UnicodeEncodeError as exc:
            raise InvalidArgumentError(
                f"{what} holds a lone surrogate {text[exc.start]!r} at position {exc.start}: "
                "not valid Unicode text"
            ) from None
    return text


def check_id(value: object, what: str = "id") -> int:
    """An id of a call or dead letter: an int (not a bool) in 1..MAX_ID."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidArgumentError(f"{what} must be an int, got {value!r}")
    if not 1 <= value <= MAX_ID:
        raise InvalidArgumentError(f"{what} must be between 1 and {MAX_ID}, got {value!r}")
    return int(value)


def _collection(values: object, what: str) -> Iterable[object]:
    # A str (or bytes) is iterable, but "12" is not the ids 1 and 2, nor "name" a set
    # of one-letter names.
    if isinstance(values, str | bytes | bytearray | memoryview) or not isinstance(values, Iterable):
        raise InvalidArgumentError(
            f"{what} must be a collection (a list, set or tuple), got {type(values).__name__}"
        )
    return values


def check_ids(values: object, what: str = "ids") -> list[int]:
    """A collection of ids (not a str, not a single int); each checked by check_id."""
    return [check_id(value, f"each of {what}") for value in _collection(values, what)]


def check_stored_name(name: object, what: str = "name") -> str:
    """A name as found in a store (another program may have written it): a str of 1 to
    MAX_NAME_LENGTH characters, valid Unicode, no NUL. Looser than check_name, so that
    such rows can still be counted, listed and moved to dead letters."""
    if not isinstance(name, str):
        raise InvalidArgumentError(f"{what} must be a str, got {type(name).__name__}")
    if not 1 <= len(name) <= MAX_NAME_LENGTH or "\x00" in name:
        raise InvalidArgumentError(
            f"{what} must be 1 to {MAX_NAME_LENGTH} characters without NUL, got {name!r}"
        )
    return check_unicode(name, what)


def check_names(values: object, what: str = "names") -> list[str]:
    """A collection of names (not a single str); each checked by check_stored_name."""
    return [check_stored_name(value, f"each of {what}") for value in _collection(values, what)]


def check_row_limit(value: object, what: str = "limit") -> int | None:
    """How many rows to return at most: a non-negative int (not a bool), or None."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_ID:
        raise InvalidArgumentError(
            f"{what} must be an int between 0 and {MAX_ID}, or None; got {value!r}"
        )
    return int(value)


def check_owner(value: object, what: str = "owner") -> str:
    """A lease owner: a non-empty str of at most MAX_OWNER_LENGTH characters."""
    if not isinstance(value, str) or not 1 <= len(value) <= MAX_OWNER_LENGTH:
        raise InvalidArgumentError(
            f"{what} must be a str of 1 to {MAX_OWNER_LENGTH} characters, got {value!r}"
        )
    if "\x00" in value:
        raise InvalidArgumentError(f"{what} must not contain NUL characters")
    return check_unicode(value, what)


def check_attempts(value: object, what: str = "attempts") -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_ATTEMPTS:
        raise InvalidArgumentError(
            f"{what} must be an int between 0 and {MAX_ATTEMPTS}, got {value!r}"
        )
    return int(value)


def check_priority(value: object, what: str = "priority") -> int:
    """A priority: an int (not a bool) from MIN_PRIORITY to MAX_PRIORITY."""
    if type(value) is int and MIN_PRIORITY <= value <= MAX_PRIORITY:
        return value  # (the hot path: a plain int in range)
    if (
        isinstance(value, bool)
        or not isinstance(value, int)
        or not (MIN_PRIORITY <= value <= MAX_PRIORITY)
    ):
        raise InvalidArgumentError(
            f"{what} must be an int from {MIN_PRIORITY} to {MAX_PRIORITY}, got {value!r}"
        )
    return int(value)


def check_payload_text(payload: object, what: str = "payload") -> str:
    """Encoded payload text as stores keep it: a str of at most MAX_PAYLOAD_BYTES bytes
    of UTF-8, without NUL (JSON escapes it)."""
    if not isinstance(payload, str):
        raise InvalidPayloadError(f"{what} must be JSON text (a str), got {type(payload).__name__}")
    if payload.isascii():
        size = len(payload)
    else:
        try:
            size = len(payload.encode())
        except UnicodeEncodeError as exc:
            raise InvalidPayloadError(
                f"{what} holds a lone surrogate at position {exc.start}: not valid Unicode text"
            ) from None
    if size > MAX_PAYLOAD_BYTES:
        raise InvalidPayloadError(
            f"{what} is {size} bytes as JSON; the limit is {MAX_PAYLOAD_BYTES}"
        )
    if "\x00" in payload:
        raise InvalidPayloadError(f"{what} must not contain NUL characters (JSON escapes them)")
    return payload


def error_text(error: object, what: str = "error") -> str:
    """The reason kept with a dead letter: any str, made storable (a lone surrogate or
    a NUL from an exception's message is escaped, never a reason to lose the call)."""
    if not isinstance(error, str):
        raise InvalidArgumentError(f"{what} must be a str, got {type(error).__name__}")
    if not error.isascii():
        error = error.encode("utf-8", "backslashreplace").decode()
    return error.replace("\x00", "\\x00")


def check_sequence(values: object, of: str) -> Sequence[object]:
    if not isinstance(values, Sequence) or isinstance(values, str | bytes | bytearray):
        raise InvalidArgumentError(f"calls must be a sequence of {of}, got {type(values).__name__}")
    return values


_Call = TypeVar("_Call", NewCall, StoredCall)


def _in_utc(call: _Call, where: str) -> _Call:
    """``call`` with its two times checked as stored times, in UTC."""
    due_at = check_time(call.due_at, f"{where}due_at")
    scheduled_at = check_time(call.scheduled_at, f"{where}scheduled_at")
    if call.recurring_key is not None:
        check_recurring_key(call.recurring_key)
    tick_at = call.tick_at
    if tick_at is not None:
        tick_at = check_time(tick_at, f"{where}tick_at")
    if due_at is call.due_at and scheduled_at is call.scheduled_at and tick_at is call.tick_at:
        return call
    return attrs.evolve(call, due_at=due_at, scheduled_at=scheduled_at, tick_at=tick_at)


def check_new_call(call: object) -> NewCall:
    """A call to store, checked as ``schedule`` checks its arguments."""
    if type(call) is CheckedNewCall:
        return call  # built by the library from checked arguments (the hot path)
    if not isinstance(call, NewCall):
        raise InvalidArgumentError(f"each call must be a NewCall, got {type(call).__name__}")
    check_name(call.name)
    check_payload_text(call.payload)
    check_identifier(call.identifier)
    check_attempts(call.attempts)
    check_priority(call.priority)
    check_unique_key(call.unique_key)
    check_on_conflict(call.on_conflict)
    if call.unique_key is not None and call.recurring_key is not None:
        raise InvalidArgumentError(
            "a call has a unique key or is a run of a recurring schedule, not both"
        )
    return _in_utc(call, "")


def check_stored_call(call: object) -> StoredCall:
    """A call a store handed out (claimed), given back to a store."""
    if not isinstance(call, StoredCall):
        raise InvalidArgumentError(f"call must be a StoredCall, got {type(call).__name__}")
    check_id(call.id, "call.id")
    check_stored_name(call.name, "call.name")
    check_payload_text(call.payload, "call.payload")
    check_identifier(call.identifier)
    check_attempts(call.attempts, "call.attempts")
    check_priority(call.priority, "call.priority")
    check_unique_key(call.unique_key)
    return _in_utc(call, "call.")


def check_slots(slots: object) -> dict[str, int]:
    """A claim's free slots: a mapping of names to non-negative ints."""
    if not isinstance(slots, Mapping):
        raise InvalidArgumentError(f"slots must be a mapping, got {type(slots).__name__}")
    for name, free in slots.items():
        check_stored_name(name, "each name in slots")
        if isinstance(free, bool) or not isinstance(free, int) or free < 0:
            raise InvalidArgumentError(f"slots[{name!r}] must be an int >= 0, got {free!r}")
    return dict(slots)


def check_lease(lease: object) -> Lease | None:
    if lease is None:
        return None
    if not isinstance(lease, Lease):
        raise InvalidArgumentError(f"lease must be a Lease or None, got {type(lease).__name__}")
    check_owner(lease.owner, "lease.owner")
    check_names(lease.names, "lease.names")
    expires_at = check_time(lease.expires_at, "lease.expires_at")
    return lease if expires_at is lease.expires_at else attrs.evolve(lease, expires_at=expires_at)


def check_query(query: object) -> PendingQuery:
    """The filters of ``Store.pending``, each checked; times in UTC."""
    if not isinstance(query, PendingQuery):
        raise InvalidArgumentError(f"query must be a PendingQuery, got {type(query).__name__}")
    due_after = None if query.due_after is None else check_aware(query.due_after, "due_after")
    due_before = None if query.due_before is None else check_aware(query.due_before, "due_before")
    return PendingQuery(
        name=None if query.name is None else check_stored_name(query.name),
        identifier=check_identifier(query.identifier),
        due_after=due_after,
        due_before=due_before,
        limit=check_row_limit(query.limit),
        now=None if query.now is None else check_aware(query.now, "now"),
    )


#: Longest recurring schedule key.
MAX_RECURRING_KEY_LENGTH: Final = 200


def check_recurring_key(key: object) -> str:
    """A recurring schedule's key: a non-empty str of at most 200 characters."""
    if not isinstance(key, str) or not key:
        raise InvalidArgumentError(f"key must be a non-empty str, got {key!r}")
    return _storable_text(key, "key", MAX_RECURRING_KEY_LENGTH)

"""Checks of the workers registry: a :class:`WorkerInfo` to store, the arguments of
the store's worker methods, and a worker row read back from a store.

A store is shared with other programs, so a row of its workers table may hold
anything its constraints let through (or, on SQLite with ``PRAGMA
ignore_check_constraints``, anything at all). :func:`readable_workers` turns rows into
values one at a time and leaves out, with a warning, each row that does not make a
valid :class:`WorkerInfo`: listing workers never fails because of one odd row.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime
from typing import Any, Final, TypeVar

from ._errors import InvalidArgumentError
from ._model import WorkerInfo
from ._payload import MAX_PAYLOAD_DEPTH, _check_json_value
from ._validate import check_aware, check_owner, check_time, check_unicode

_log = logging.getLogger("trio_futurecalls.store.workers")

#: Bounds of the workers table (migration 0008).
MAX_HOST_LENGTH: Final = 255
MAX_INT4: Final = 2**31 - 1
MAX_LIMITS_BYTES: Final = 1_048_576

R = TypeVar("R")


def check_worker_id(value: object, what: str = "worker_id") -> str:
    """A worker's id: what a lease owner may be (1 to 1000 characters, no NUL)."""
    return check_owner(value, what)


def check_worker_host(value: object, what: str = "host") -> str:
    if not isinstance(value, str) or len(value) > MAX_HOST_LENGTH or "\x00" in value:
        raise InvalidArgumentError(
            f"{what} must be a str of at most {MAX_HOST_LENGTH} characters without NUL, "
            f"got {value!r}"
        )
    return check_unicode(value, what)


def _int_in(value: object, what: str, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise InvalidArgumentError(f"{what} must be an int from {low} to {high}, got {value!r}")
    return int(value)


def check_pid(value: object, what: str = "pid") -> int:
    return _int_in(value, what, 0, MAX_INT4)


def check_running(value: object, what: str = "running") -> int:
    return _int_in(value, what, 0, MAX_INT4)


def check_limits(value: object, what: str = "limits") -> dict[str, Any]:
    """A JSON object (plain JSON values, nested at most MAX_PAYLOAD_DEPTH deep) whose
    text fits the table (1 MiB)."""
    if type(value) is not dict:
        raise InvalidArgumentError(f"{what} must be a dict (a JSON object), got {value!r}")
    try:
        _check_json_value(value, what)
    except InvalidArgumentError as exc:
        raise InvalidArgumentError(f"{what}: {exc}") from None
    if len(limits_text(value).encode()) > MAX_LIMITS_BYTES:
        raise InvalidArgumentError(f"{what} is longer than {MAX_LIMITS_BYTES} bytes as JSON")
    return value


def limits_text(limits: dict[str, Any]) -> str:
    """``limits`` as the JSON text a store keeps."""
    return json.dumps(limits, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def limits_from_text(text: object) -> dict[str, Any]:
    """The limits a row holds; InvalidArgumentError when they are not a JSON object
    within the library's bounds (nested too deep, not JSON, not text)."""
    if type(text) is not str:
        raise InvalidArgumentError(f"limits must be JSON text, got {type(text).__name__}")
    try:
        value = json.loads(text)
    except (ValueError, RecursionError):
        raise InvalidArgumentError(
            f"limits are not JSON (nested at most {MAX_PAYLOAD_DEPTH} levels)"
        ) from None
    return check_limits(value)


def check_worker(worker: object) -> WorkerInfo:
    """A worker to register, every field checked; times as UTC."""
    if not isinstance(worker, WorkerInfo):
        raise InvalidArgumentError(f"worker must be a WorkerInfo, got {type(worker).__name__}")
    return WorkerInfo(
        id=check_worker_id(worker.id, "worker.id"),
        host=check_worker_host(worker.host, "worker.host"),
        pid=check_pid(worker.pid, "worker.pid"),
        started_at=check_time(worker.started_at, "worker.started_at"),
        heartbeat_at=check_time(worker.heartbeat_at, "worker.heartbeat_at"),
        expires_at=check_time(worker.expires_at, "worker.expires_at"),
        running=check_running(worker.running, "worker.running"),
        limits=check_limits(worker.limits, "worker.limits"),
    )


def worker_from_row(row: Sequence[object], time: Callable[[object, str], datetime]) -> WorkerInfo:
    """A stored row (``id, host, pid, started_at, heartbeat_at, expires_at, running,
    limits``) as a :class:`WorkerInfo`, each value checked; ``time(value, what)``
    reads a stored time. Raises InvalidArgumentError for a row that is not a worker."""
    worker_id, host, pid, started, beat, expires, running, limits = row
    return WorkerInfo(
        id=check_worker_id(worker_id, "id"),
        host=check_worker_host(host),
        pid=check_pid(pid),
        started_at=time(started, "started_at"),
        heartbeat_at=time(beat, "heartbeat_at"),
        expires_at=time(expires, "expires_at"),
        running=check_running(running),
        limits=limits_from_text(limits),
    )


def readable_workers(
    rows: Iterable[R], build: Callable[[R], WorkerInfo], shown_id: Callable[[R], str]
) -> list[WorkerInfo]:
    """``build(row)`` for each row, leaving out (with a warning) rows it refuses."""
    found = []
    for row in rows:
        try:
            found.append(build(row))
        except (InvalidArgumentError, ValueError, TypeError, OverflowError) as exc:
            _log.warning(
                "a row of the workers table is not a valid worker and is not listed (id %s): %s",
                shown_id(row)[:200],
                str(exc)[:500],
            )
    return found


class WorkerArgs:
    """The arguments of the store's worker methods, checked once for every store
    (as :class:`~trio_futurecalls._store_args.StoreArgs` does for the others)."""

    register_worker = staticmethod(check_worker)

    @staticmethod
    def heartbeat(
        worker_id: object, now: object, expires_at: object, running: object
    ) -> tuple[str, datetime, datetime, int]:
        return (
            check_worker_id(worker_id),
            check_time(now, "now"),
            check_time(expires_at, "expires_at"),
            check_running(running),
        )

    deregister_worker = staticmethod(check_worker_id)

    @staticmethod
    def workers(now: object) -> datetime:
        return check_aware(now, "now")

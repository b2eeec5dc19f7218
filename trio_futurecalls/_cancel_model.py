"""Cancelling running calls: the values (outcome, stored request) and their checks.

``Scheduler.cancel`` answers a :class:`CancelOutcome`. A call that is not pending may
be running somewhere: the store keeps a :class:`CancelRequest` for it, which every
executing worker reads (``_cancels.py``). The store methods' arguments are checked
here once for every store (:class:`CancelArgs`), and rows read back from a table that
other programs may write are built with :func:`readable_requests`, which leaves out
(with a warning) rows that are not a valid request.
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Callable, Iterable
from datetime import datetime
from typing import TypeVar, final

import attrs

from ._errors import InvalidArgumentError
from ._validate import check_id, check_required_identifier, check_time
from ._validate_workers import check_running, check_worker_id

_log = logging.getLogger("trio_futurecalls.store.cancels")

R = TypeVar("R")


@final
class CancelOutcome(enum.Enum):
    """What :meth:`Scheduler.cancel` found: the call was pending (it will not run),
    running (it was told to stop, and will not run again), or not found.

    ``bool(outcome)`` is True for PENDING and RUNNING, so ``if await
    scheduler.cancel(call_id):`` reads as before.
    """

    PENDING = "pending"
    RUNNING = "running"
    NOT_FOUND = "not_found"

    def __bool__(self) -> bool:
        return self is not CancelOutcome.NOT_FOUND


@final
@attrs.frozen(kw_only=True)
class CancelRequest:
    """A stored request to stop a running call (``call_id``), or every running call
    with ``identifier`` (exactly one of them is set), until ``expires_at``."""

    id: int
    call_id: int | None
    identifier: str | None
    requested_at: datetime
    expires_at: datetime


def check_request(
    request_id: object,
    call_id: object,
    identifier: object,
    requested_at: object,
    expires_at: object,
) -> CancelRequest:
    """A request from its stored values; InvalidArgumentError if it is not one."""
    if (call_id is None) == (identifier is None):
        raise InvalidArgumentError("a cancel request names a call id or an identifier, not both")
    return CancelRequest(
        id=check_id(request_id, "id"),
        call_id=None if call_id is None else check_id(call_id, "call_id"),
        identifier=None if identifier is None else check_required_identifier(identifier),
        requested_at=check_time(requested_at, "requested_at"),
        expires_at=check_time(expires_at, "expires_at"),
    )


def readable_requests(
    rows: Iterable[R], build: Callable[[R], CancelRequest], shown_id: Callable[[R], str]
) -> list[CancelRequest]:
    """``build(row)`` for each row, leaving out (with a warning) rows it refuses."""
    found = []
    for row in rows:
        try:
            found.append(build(row))
        except (InvalidArgumentError, ValueError, TypeError, OverflowError) as exc:
            _log.warning(
                "a row of the cancel_requests table is not a valid request and is "
                "ignored (id %s): %s",
                shown_id(row)[:200],
                str(exc)[:500],
            )
    return found


class CancelArgs:
    """The arguments of the store's cancel-request methods, checked once for every
    store."""

    @staticmethod
    def request_cancel(
        call_id: object, identifier: object, now: object, expires_at: object
    ) -> tuple[int | None, str | None, datetime, datetime]:
        if (call_id is None) == (identifier is None):
            raise InvalidArgumentError("give a call id or an identifier, not both")
        checked_now = check_time(now, "now")
        checked_expiry = check_time(expires_at, "expires_at")
        if checked_expiry <= checked_now:
            raise InvalidArgumentError("expires_at must be later than now")
        return (
            None if call_id is None else check_id(call_id, "call_id"),
            None if identifier is None else check_required_identifier(identifier),
            checked_now,
            checked_expiry,
        )

    @staticmethod
    def cancel_requests(now: object) -> datetime:
        return check_time(now, "now")

    @staticmethod
    def ack_cancel(request_id: object, worker_id: object, found: object) -> tuple[int, str, int]:
        return (
            check_id(request_id, "request_id"),
            check_worker_id(worker_id),
            check_running(found, "found"),
        )

    @staticmethod
    def cancel_acks(request_id: object) -> int:
        return check_id(request_id, "request_id")

"""The arguments of every :class:`Store` method, checked the same way for every store."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import attrs

from ._cluster_limits import ALL_CLASSES, ClusterLimit, Kind
from ._errors import InvalidArgumentError
from ._model import Lease, NewCall, RecurringInfo, StoredCall
from ._new_call_columns import NewCallColumns
from ._store import Listener
from ._validate import (
    MAX_ATTEMPTS,
    check_aware,
    check_batch_keys,
    check_bool,
    check_id,
    check_ids,
    check_lease,
    check_name,
    check_new_call,
    check_owner,
    check_query,
    check_recurring_key,
    check_required_identifier,
    check_row_limit,
    check_sequence,
    check_slots,
    check_stored_call,
    check_stored_name,
    check_time,
    error_text,
)
from ._validate_dependencies import (
    MAX_PREREQUISITES,
    check_after,
    check_after_batch,
    check_no_key_with_after,
)
from ._validate_recurring import check_recurring_info


def check_call_prerequisites(call: NewCall, position: int) -> NewCall:
    """``call`` (at ``position`` in its batch) with its prerequisites checked."""
    after = check_after(call.after)
    after_batch = check_after_batch(call.after_batch, position)
    if len(after) + len(after_batch) > MAX_PREREQUISITES:
        raise InvalidArgumentError(
            f"call {position} of the batch waits for {len(after) + len(after_batch)} calls "
            f"(after and after_batch); at most {MAX_PREREQUISITES} are allowed"
        )
    if call.recurring_key is not None:
        raise InvalidArgumentError("a run of a recurring schedule cannot wait for other calls")
    if after == call.after:
        return call
    return attrs.evolve(call, after=after, after_batch=after_batch)


class StoreArgs:
    """The arguments of each :class:`Store` method, checked once for every store.

    Each store calls the function named after the method at the top of that method
    (``call_id = StoreArgs.cancel(call_id)``), so that every store gives the same
    answer to bad input: :class:`InvalidArgumentError`, before anything is touched.
    Times come back in UTC.
    """

    @staticmethod
    def schedule(calls: object) -> Sequence[NewCall]:
        if type(calls) is NewCallColumns:
            return calls  # plain calls the library checked (schedule_many's batch)
        checked = [check_new_call(call) for call in check_sequence(calls, "NewCall")]
        for call in checked:
            if call.unique_key is not None:
                check_batch_keys(checked)
                break
        waits = False
        for position, call in enumerate(checked):
            if call.after or call.after_batch:
                checked[position] = check_call_prerequisites(call, position)
                waits = True
        if waits:  # (no unique key anywhere in a batch with dependencies, not yet)
            for call in checked:
                check_no_key_with_after(call.unique_key)
        return checked

    @staticmethod
    def cancel(call_id: object) -> int:
        return check_id(call_id, "call_id")

    cancel_identifier = staticmethod(check_required_identifier)
    pending = staticmethod(check_query)

    @staticmethod
    def pending_counts(due_by: object) -> datetime:
        return check_aware(due_by, "due_by")

    @staticmethod
    def claim(
        now: object, slots: object, limit: object, lease: object
    ) -> tuple[datetime, dict[str, int], int, Lease | None]:
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 0:
            raise InvalidArgumentError(f"limit must be an int >= 0, got {limit!r}")
        return check_aware(now, "now"), check_slots(slots), limit, check_lease(lease)

    @staticmethod
    def put_back(calls: object, owner: object) -> tuple[list[StoredCall], str | None]:
        checked = [check_stored_call(call) for call in check_sequence(calls, "StoredCall")]
        return checked, None if owner is None else check_owner(owner)

    @staticmethod
    def renew(
        owner: object, call_ids: object, expires_at: object
    ) -> tuple[str, list[int], datetime]:
        return (
            check_owner(owner),
            check_ids(call_ids, "call_ids"),
            check_time(expires_at, "expires_at"),
        )

    @staticmethod
    def free_tokens(owner: object, call_ids: object) -> tuple[str, list[int]]:
        return check_owner(owner), check_ids(call_ids, "call_ids")

    @staticmethod
    def set_cluster_limit(limit: object) -> ClusterLimit:
        if not isinstance(limit, ClusterLimit):
            raise InvalidArgumentError(f"limit must be a ClusterLimit, got {limit!r}")
        return limit

    @staticmethod
    def cluster_limit_key(kind: object, name: object) -> tuple[Kind, str]:
        if kind not in ("concurrency", "rate"):
            raise InvalidArgumentError(f"kind must be 'concurrency' or 'rate', got {kind!r}")
        if not (kind == "concurrency" and name == ALL_CLASSES):
            name = check_name(name)
        assert isinstance(name, str)
        return kind, name

    @staticmethod
    def complete(owner: object, call_id: object) -> tuple[str, int]:
        return check_owner(owner), check_id(call_id, "call_id")

    @staticmethod
    def release(
        owner: object, call_id: object, due_at: object, refund_attempt: object
    ) -> tuple[str, int, datetime, bool]:
        if not isinstance(refund_attempt, bool):
            raise InvalidArgumentError(f"refund_attempt must be a bool, got {refund_attempt!r}")
        owner, call_id = StoreArgs.complete(owner, call_id)
        return owner, call_id, check_time(due_at, "due_at"), refund_attempt

    @staticmethod
    def dead_letter(
        call: object, error: object, failed_at: object, owner: object
    ) -> tuple[StoredCall, str, datetime, str | None]:
        if isinstance(call, StoredCall) and call.attempts == MAX_ATTEMPTS + 1:
            # A claim counts the attempt it starts, so a call stored at the limit comes
            # out one above it: keeping it is never refused for that (it would be lost).
            call = attrs.evolve(call, attempts=MAX_ATTEMPTS)
        return (
            check_stored_call(call),
            error_text(error),
            check_time(failed_at, "failed_at"),
            None if owner is None else check_owner(owner),
        )

    @staticmethod
    def dead_letter_due(
        name: object, due_by: object, error: object, failed_at: object
    ) -> tuple[str, datetime, str, datetime]:
        return (
            check_stored_name(name),
            check_aware(due_by, "due_by"),
            error_text(error),
            check_time(failed_at, "failed_at"),
        )

    @staticmethod
    def dead_letters(name: object, limit: object) -> tuple[str | None, int | None]:
        return None if name is None else check_stored_name(name), check_row_limit(limit)

    @staticmethod
    def requeue_dead_letter(
        dead_letter_id: object, due_at: object, after: object
    ) -> tuple[int, datetime, tuple[int, ...]]:
        return (
            check_id(dead_letter_id, "dead_letter_id"),
            check_time(due_at, "due_at"),
            check_after(after),
        )

    @staticmethod
    def end_abandoned_prerequisites(now: object) -> datetime:
        return check_aware(now, "now")

    @staticmethod
    def prerequisite_ended(
        call_id: object, error: object, ended_at: object
    ) -> tuple[int, str | None, datetime]:
        return (
            check_id(call_id, "call_id"),
            None if error is None else error_text(error),
            check_time(ended_at, "ended_at"),
        )

    @staticmethod
    def purge_dead_letters(ids: object) -> list[int] | None:
        return None if ids is None else check_ids(ids)

    @staticmethod
    def put_recurring(schedule: object, replace: object) -> tuple[RecurringInfo, bool]:
        return check_recurring_info(schedule), check_bool(replace, "replace")

    cancel_recurring = staticmethod(check_recurring_key)

    @staticmethod
    def recurring_schedules(key: object) -> str | None:
        return None if key is None else check_recurring_key(key)

    @staticmethod
    def fire_recurring(now: object, limit: object) -> tuple[datetime, int]:
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
            raise InvalidArgumentError(f"limit must be an int >= 1, got {limit!r}")
        return check_aware(now, "now"), limit

    @staticmethod
    def pause(name: object, now: object) -> tuple[str, datetime]:
        return check_stored_name(name), check_time(now, "now")

    resume = staticmethod(check_stored_name)

    @staticmethod
    def add_listener(listener: object) -> Listener:
        if not callable(listener):
            raise InvalidArgumentError(f"listener must be callable, got {listener!r}")
        return listener

    @staticmethod
    def open_session(call: object) -> StoredCall:
        if not isinstance(call, StoredCall):
            raise InvalidArgumentError(f"call must be a StoredCall, got {type(call).__name__}")
        return call

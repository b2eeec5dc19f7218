"""Store-level operations that need no running scheduler.

Scheduling from a process that only produces calls (:func:`schedule_call`),
inspecting pending calls and queue lengths, and finding or moving calls whose name
no class knows. :class:`Scheduler` delegates to these too, so each exists once.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection, Iterable
from datetime import datetime, timedelta
from typing import Any, final

import attrs

from ._call import FutureCall, check_call_class
from ._errors import InvalidArgumentError
from ._model import CheckedNewCall, NewCall, OnConflict, StoredCall
from ._options import Clock, utc_now
from ._payload import encode_payload
from ._stats import QueueLength
from ._store import PendingQuery, Store
from ._validate import (
    check_aware,
    check_identifier,
    check_name,
    check_names,
    check_on_conflict,
    check_priority,
    check_row_limit,
    check_unique_key,
    resolve_due,
)
from ._validate_dependencies import check_after

_log = logging.getLogger("trio_futurecalls.scheduler.admin")


@final
@attrs.frozen(kw_only=True)
class CallRequest:
    """One request of ``schedule_many`` with every option ``schedule`` has, by keyword::

        CallRequest(call_class=SendEmail, payload=p, delay=60, priority=10)

    As with ``schedule``: ``at`` (aware) or ``delay`` (timedelta or seconds), neither
    for now; ``priority`` None means the class's :attr:`FutureCall.priority`. Checked
    when ``schedule_many`` runs, like the tuple forms.
    """

    call_class: type[FutureCall]
    payload: Any = None
    at: datetime | None = None
    delay: timedelta | float | None = None
    identifier: str | None = None
    unique_key: str | None = None
    on_conflict: OnConflict = "ignore"
    priority: int | None = None
    #: Ids of calls that must succeed before this one starts (see ``schedule``).
    after: Collection[int] = ()


#: One scheduling request of ``schedule_many``: a :class:`CallRequest`, or a tuple
#: ``(call_class, payload, at_or_delay[, identifier[, unique_key[, on_conflict]]])``.
Request = (
    CallRequest
    | tuple[type[FutureCall], object, datetime | timedelta | float]
    | tuple[type[FutureCall], object, datetime | timedelta | float, str | None]
    | tuple[type[FutureCall], object, datetime | timedelta | float, str | None, str | None]
    | tuple[
        type[FutureCall], object, datetime | timedelta | float, str | None, str | None, OnConflict
    ]
)


def new_call(
    cls: type[FutureCall],
    payload: object,
    now: datetime,
    at: datetime | None,
    delay: timedelta | float | None,
    identifier: object,
    unique_key: object = None,
    on_conflict: object = "ignore",
    priority: object = None,
    after: object = None,
) -> NewCall:
    """Validate one scheduling request of the checked class ``cls`` (``priority``
    None: the class's)."""
    checked_priority = cls.priority if priority is None else check_priority(priority)
    # (An empty collection, [] or set() as well as (), means no prerequisites.)
    checked_after = () if after is None or after == () else check_after(after)
    # (A key with prerequisites is refused by StoreArgs.schedule, for the whole batch.)
    if unique_key is None and on_conflict == "ignore" and not checked_after:
        # The common case, without the key checks: no key (on_conflict then does not
        # matter, but a bad value is still refused below).
        return CheckedNewCall(
            name=cls.name,
            payload=encode_payload(cls.payload_type, payload),
            due_at=resolve_due(now, at, delay),
            identifier=check_identifier(identifier),
            scheduled_at=now,
            priority=checked_priority,
        )
    return CheckedNewCall(
        name=cls.name,
        payload=encode_payload(cls.payload_type, payload),
        due_at=resolve_due(now, at, delay),
        identifier=check_identifier(identifier),
        scheduled_at=now,
        unique_key=check_unique_key(unique_key),
        on_conflict=check_on_conflict(on_conflict),
        priority=checked_priority,
        after=checked_after,
    )


def new_calls(
    requests: Iterable[Request],
    now: datetime,
    check_class: Callable[[object], type[FutureCall]],
) -> list[NewCall]:
    """Validate every request of ``schedule_many`` (``check_class`` checks a class)."""
    batch = []
    checked: dict[object, type[FutureCall]] = {}
    for request in requests:
        if isinstance(request, CallRequest):
            cls = checked.get(id(request.call_class))
            if cls is None:
                cls = checked[id(request.call_class)] = check_class(request.call_class)
            batch.append(
                new_call(
                    cls,
                    request.payload,
                    now,
                    request.at,
                    request.delay,
                    request.identifier,
                    request.unique_key,
                    request.on_conflict,
                    request.priority,
                    request.after,
                )
            )
            continue
        if not isinstance(request, tuple) or not 3 <= len(request) <= 6:
            raise InvalidArgumentError(
                "each request must be a CallRequest or (call_class, payload, at_or_delay"
                "[, identifier[, unique_key[, on_conflict]]])"
            )
        call_class, payload, when = request[0], request[1], request[2]
        identifier = request[3] if len(request) > 3 else None
        unique_key = request[4] if len(request) > 4 else None
        on_conflict = request[5] if len(request) > 5 else "ignore"
        cls = checked.get(id(call_class))
        if cls is None:
            # Validated once per class, not once per call: this is the hot path of
            # bulk scheduling.
            cls = checked[id(call_class)] = check_class(call_class)
        if isinstance(when, datetime):
            batch.append(
                new_call(cls, payload, now, when, None, identifier, unique_key, on_conflict)
            )
        else:
            batch.append(
                new_call(cls, payload, now, None, when, identifier, unique_key, on_conflict)
            )
    return batch


#: One step of ``chain``: a :class:`CallRequest`, or ``(call_class, payload)``.
Step = CallRequest | tuple[type[FutureCall], object]


def chain_calls(
    steps: Iterable[Step],
    now: datetime,
    check_class: Callable[[object], type[FutureCall]],
    after: object = None,
) -> list[NewCall]:
    """Validate the steps of ``chain``: each waits for the one before it (the first for
    ``after``), linked inside one batch so that no step can start before the next is
    stored."""
    first_after = check_after(after)
    batch: list[NewCall] = []
    for position, step in enumerate(steps):
        if isinstance(step, tuple) and len(step) == 2:
            step = CallRequest(call_class=step[0], payload=step[1])
        if not isinstance(step, CallRequest):
            raise InvalidArgumentError(
                "each step of a chain must be a CallRequest or (call_class, payload)"
            )
        (new,) = new_calls([step], now, check_class)
        # (StoreArgs.schedule checks the links, and refuses unique keys beside them.)
        if position > 0:
            new = attrs.evolve(new, after_batch=(position - 1,))
        elif first_after:
            new = attrs.evolve(new, after=tuple(dict.fromkeys((*new.after, *first_after))))
        batch.append(new)
    return batch


async def schedule_chain(
    store: Store,
    steps: Iterable[Step],
    *,
    after: Collection[int] = (),
    clock: Clock = utc_now,
) -> list[int]:
    """``Scheduler.chain`` through a store alone (a process that only schedules)."""
    now = check_aware(clock(), "clock()")
    batch = chain_calls(steps, now, check_call_class, after)
    return await store.schedule(batch) if batch else []


async def schedule_call(
    store: Store,
    call_class: type[FutureCall],
    payload: object = None,
    *,
    at: datetime | None = None,
    delay: timedelta | float | None = None,
    identifier: str | None = None,
    unique_key: str | None = None,
    on_conflict: OnConflict = "ignore",
    priority: int | None = None,
    after: Collection[int] = (),
    clock: Clock = utc_now,
) -> int:
    """Schedule a call through a store alone, with no scheduler running here.

    For processes that only schedule (a web process) while workers elsewhere run the
    calls. Returns the new call's id (with ``unique_key``: see ``Scheduler.schedule``);
    ``priority`` None means the class's :attr:`FutureCall.priority`; ``after``: see
    ``Scheduler.schedule``.
    """
    now = check_aware(clock(), "clock()")
    new = new_call(
        check_call_class(call_class),
        payload,
        now,
        at,
        delay,
        identifier,
        unique_key,
        on_conflict,
        priority,
        after,
    )
    (call_id,) = await store.schedule([new])
    return call_id


async def queue_lengths(
    store: Store, names: Iterable[str] = (), now: datetime | None = None
) -> dict[str, QueueLength]:
    """Pending and due counts per name in ``store`` (``names`` are listed even if 0)."""
    listed = check_names(names)
    when = utc_now() if now is None else check_aware(now, "now")
    out = {name: QueueLength(pending=0, due=0) for name in listed}
    out.update(await store.pending_counts(when))
    return dict(sorted(out.items()))


async def list_pending(
    store: Store,
    call_class: type[FutureCall] | str | None = None,
    *,
    identifier: str | None = None,
    due_after: datetime | None = None,
    due_before: datetime | None = None,
    limit: int | None = None,
    now: datetime | None = None,
) -> list[StoredCall]:
    """Pending calls in ``store`` matching the filters, earliest due first.

    A call whose lease expired by ``now`` (default: the current time) is pending: the
    worker that held it died or lost it, and any worker may run it.
    """
    name: str | None
    if call_class is None or isinstance(call_class, str):
        name = None if call_class is None else check_name(call_class)
    else:
        name = check_call_class(call_class).name
    limit = check_row_limit(limit)
    return await store.pending(
        PendingQuery(
            name=name,
            identifier=check_identifier(identifier),
            due_after=None if due_after is None else check_aware(due_after, "due_after"),
            due_before=None if due_before is None else check_aware(due_before, "due_before"),
            limit=limit,
            now=utc_now() if now is None else check_aware(now, "now"),
        )
    )


async def unknown_calls(store: Store, known: Collection[str], now: datetime) -> list[StoredCall]:
    """Pending calls whose name is not in ``known``, earliest due first."""
    names = await store.pending_counts(now)
    found: list[StoredCall] = []
    for name in sorted(set(names) - set(known)):
        found.extend(await store.pending(PendingQuery(name=name, now=now)))
    found.sort(key=lambda c: (c.due_at, c.id))
    return found


async def move_unknown_to_dead_letters(
    store: Store, known: Collection[str], names: Iterable[str] | None, now: datetime
) -> int:
    """Move pending calls due by ``now`` whose name is not in ``known`` (or just those
    of ``names``) to dead letters, one statement per name; return how many moved."""
    wanted_names = None if names is None else set(check_names(names))
    known = set(known)
    # (Waiting calls are not due, yet dead_letter_due moves those due by now too.)
    found = {name for name, n in (await store.pending_counts(now)).items() if n.due or n.waiting}
    wanted = found - known if wanted_names is None else wanted_names & found - known
    moved = 0
    for name in sorted(wanted):
        error = f"no FutureCall class named {name!r} is registered"
        count = await store.dead_letter_due(name, now, error, now)
        _log.warning("moved %d due call(s) named %r to dead letters", count, name)
        moved += count
    return moved

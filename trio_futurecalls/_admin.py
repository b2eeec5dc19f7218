"""Store-level operations that need no running scheduler.

Scheduling from a process that only produces calls (:func:`schedule_call`,
:func:`schedule_many`, :func:`schedule_chain`: by class, or by name with a JSON
payload, so a producer need not import the classes), inspecting pending calls and
queue lengths, and finding or moving calls whose name no class knows.
:class:`Scheduler` delegates to these too, so each exists once.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Collection, Iterable, Sequence
from datetime import datetime, timedelta
from typing import Any, final

import attrs

from ._call import FutureCall, check_call_class
from ._errors import InvalidArgumentError
from ._group_commit import schedule_one
from ._model import CheckedNewCall, NewCall, OnConflict, StoredCall
from ._new_call_columns import NewCallColumns
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
        CallRequest(call_class="send-email", payload={"to": "a@example.com"})

    As with ``schedule``: ``at`` (aware) or ``delay`` (timedelta or seconds), neither
    for now; ``priority`` None means the class's :attr:`FutureCall.priority`. Checked
    when ``schedule_many`` runs, like the tuple forms. ``call_class`` may be a call
    name (a str): see :func:`schedule_call`.
    """

    call_class: type[FutureCall] | str
    payload: Any = None
    at: datetime | None = None
    delay: timedelta | float | None = None
    identifier: str | None = None
    unique_key: str | None = None
    on_conflict: OnConflict = "ignore"
    priority: int | None = None
    #: Ids of calls that must succeed before this one starts (see ``schedule``).
    after: Collection[int] = ()


#: What a call is scheduled as: its class, or (from a producer that does not import
#: the classes) its name, with a plain JSON payload.
Target = type[FutureCall] | str

#: One scheduling request of ``schedule_many``: a :class:`CallRequest`, or a tuple
#: ``(call_class, payload, at_or_delay[, identifier[, unique_key[, on_conflict]]])``.
Request = (
    CallRequest
    | tuple[Target, object, datetime | timedelta | float]
    | tuple[Target, object, datetime | timedelta | float, str | None]
    | tuple[Target, object, datetime | timedelta | float, str | None, str | None]
    | tuple[Target, object, datetime | timedelta | float, str | None, str | None, OnConflict]
)


def check_target(target: object) -> Target:
    """A class (checked as a ``FutureCall`` subclass) or a checked call name: what a
    store-level producer may schedule. A name's payload is plain JSON and its
    priority, when none is given, 0 (the class's own is not known here)."""
    if isinstance(target, str):
        return check_name(target)
    return check_call_class(target)


def new_call(
    cls: Target,
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
    """Validate one scheduling request of the checked class or name ``cls``
    (``priority`` None: the class's; for a name, :attr:`FutureCall.priority`'s 0)."""
    name, payload_type, default_priority = _defaults(cls)
    checked_priority = default_priority if priority is None else check_priority(priority)
    # (An empty collection, [] or set() as well as (), means no prerequisites.)
    checked_after = () if after is None or after == () else check_after(after)
    # (A key with prerequisites is refused by StoreArgs.schedule, for the whole batch.)
    if unique_key is None and on_conflict == "ignore" and not checked_after:
        # The common case, without the key checks: no key (on_conflict then does not
        # matter, but a bad value is still refused below).
        return _plain_call(
            name,
            payload_type,
            payload,
            resolve_due(now, at, delay),
            identifier,
            now,
            checked_priority,
        )
    return CheckedNewCall(
        name=name,
        payload=encode_payload(payload_type, payload),
        due_at=resolve_due(now, at, delay),
        identifier=check_identifier(identifier),
        scheduled_at=now,
        unique_key=check_unique_key(unique_key),
        on_conflict=check_on_conflict(on_conflict),
        priority=checked_priority,
        after=checked_after,
    )


def _plain_call(
    name: str,
    payload_type: type[Any] | None,
    payload: object,
    due: datetime,
    identifier: object,
    now: datetime,
    priority: int,
) -> CheckedNewCall:
    """A call without key or prerequisites (the common case), ``due`` already checked."""
    return CheckedNewCall(
        name=name,
        payload=encode_payload(payload_type, payload),
        due_at=due,
        identifier=check_identifier(identifier),
        scheduled_at=now,
        priority=priority,
    )


def _defaults(cls: Target) -> tuple[str, type[Any] | None, int]:
    """The name, payload type and default priority of a checked class or name."""
    if isinstance(cls, str):
        return cls, None, FutureCall.priority
    return cls.name, cls.payload_type, cls.priority


def new_calls(
    requests: Iterable[Request],
    now: datetime,
    check_class: Callable[[object], Target],
) -> Sequence[NewCall]:
    """Validate every request of ``schedule_many`` (``check_class`` checks a class or
    name).

    While every request is plain (no key, no prerequisites: the common batch), the
    batch is kept as columns (:class:`NewCallColumns`), with no object per row; from
    the first request that is not, as a list of calls."""
    batch: list[NewCall] | None = None  # None while every request so far is plain
    names: list[str] = []
    payloads: list[str] = []
    due_ats: list[datetime] = []
    identifiers: list[str | None] = []
    priorities: list[int] = []
    checked: dict[object, tuple[Target, str, type[Any] | None, int]] = {}
    dues: dict[tuple[type, object], datetime] = {}
    for request in requests:
        if isinstance(request, CallRequest):
            key = _key(request.call_class)
            known = checked.get(key)
            if known is None:
                known = checked[key] = _checked(check_class(request.call_class))
            call = new_call(
                known[0],
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
            if (
                batch is None
                and call.unique_key is None
                and call.on_conflict == "ignore"
                and not call.after
            ):
                names.append(call.name)
                payloads.append(call.payload)
                due_ats.append(call.due_at)
                identifiers.append(call.identifier)
                priorities.append(call.priority)
                continue
            if batch is None:
                batch = list(NewCallColumns(names, payloads, due_ats, identifiers, priorities, now))
            batch.append(call)
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
        key = _key(call_class)
        known = checked.get(key)
        if known is None:
            # Validated once per class, not once per call: this is the hot path of
            # bulk scheduling.
            known = checked[key] = _checked(check_class(call_class))
        # Likewise a due time: the same ``when`` (a delay for the whole batch, say)
        # gives the same due time, since ``now`` is one for the batch. By type too:
        # 1 == 1.0 == True, but True is refused.
        due_key = (type(when), when)
        try:
            due = dues.get(due_key)
        except TypeError:  # unhashable: resolve_due says what is wrong with it
            due = None
        if due is None:
            if isinstance(when, datetime):
                due = resolve_due(now, when, None)
            else:
                due = resolve_due(now, None, when)
            with contextlib.suppress(TypeError):
                dues[due_key] = due
        cls, name, payload_type, priority = known
        if unique_key is None and on_conflict == "ignore":
            # new_call's common case, with the due time checked once per value above.
            if batch is None:
                names.append(name)
                payloads.append(encode_payload(payload_type, payload))
                due_ats.append(due)
                identifiers.append(check_identifier(identifier))
                priorities.append(priority)
            else:
                batch.append(
                    _plain_call(name, payload_type, payload, due, identifier, now, priority)
                )
            continue
        call = new_call(cls, payload, now, due, None, identifier, unique_key, on_conflict)
        if batch is None:
            batch = list(NewCallColumns(names, payloads, due_ats, identifiers, priorities, now))
        batch.append(call)
    if batch is None:
        return NewCallColumns(names, payloads, due_ats, identifiers, priorities, now)
    return batch


def _checked(cls: Target) -> tuple[Target, str, type[Any] | None, int]:
    """A checked class or name with its name, payload type and default priority."""
    return (cls, *_defaults(cls))


def _key(target: object) -> object:
    """What ``new_calls`` remembers a checked class or name under: a class by identity
    (two classes may compare equal), a name by value (``id`` of a str is not stable)."""
    return target if isinstance(target, str) else id(target)


#: One step of ``chain``: a :class:`CallRequest`, or ``(call_class, payload)``.
Step = CallRequest | tuple[Target, object]


def chain_calls(
    steps: Iterable[Step],
    now: datetime,
    check_class: Callable[[object], Target],
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
    """``Scheduler.chain`` through a store alone (a process that only schedules); a
    step's class may be a call name, as in :func:`schedule_call`."""
    now = check_aware(clock(), "clock()")
    batch = chain_calls(steps, now, check_target, after)
    return await store.schedule(batch) if batch else []


async def schedule_many(
    store: Store, requests: Iterable[Request], *, clock: Clock = utc_now
) -> list[int]:
    """``Scheduler.schedule_many`` through a store alone (a process that only schedules).

    Requests as there (:class:`CallRequest` or tuples); a request's class may be a
    call name, as in :func:`schedule_call`. All are validated before any is stored,
    in one round trip; the ids come back in order.
    """
    now = check_aware(clock(), "clock()")
    batch = new_calls(requests, now, check_target)
    return await store.schedule(batch) if batch else []


async def schedule_call(
    store: Store,
    call_class: Target,
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

    ``call_class`` may be the call's name instead (``schedule_call(store,
    "send-email", {"to": ...})``), so that a producer need not import the class (nor
    what it imports). Then ``payload`` must be plain JSON (None, bool, int, float,
    str, list, dict with str keys); a worker whose class has an attrs
    ``payload_type`` decodes it into that class when the call runs, and a payload that
    does not fit becomes a dead letter with the reason. ``priority`` None is 0 (the
    class's own priority is not known here: pass it). A name no worker knows is
    kept and reported (README, Unknown names), never dropped.
    """
    now = check_aware(clock(), "clock()")
    new = new_call(
        check_target(call_class),
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
    # Concurrent callers share one round trip and one commit (_group_commit.py).
    return await schedule_one(store, new)


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

"""The scheduler: one nursery, one dispatcher task, one child task per started call.

Layout of the tasks (all inside the nursery that :func:`open_scheduler` opens)::

    _run
    ├── calls nursery ─── one _run_call task per started call
    └── control nursery
        ├── _dispatch_loop   (claims due calls, starts them, sleeps until the next)
        └── _unknown_names_loop

Limits are a hierarchy of ``trio.CapacityLimiter``: one global, one per call class.
The dispatcher takes a token from both, on behalf of the call, *before* it claims the
call, and only for calls it can start at once: nothing ever waits while holding a
token, so a saturated class never holds back another class and there is no
head-of-line blocking. Tokens go back when the call's task ends.
"""

from __future__ import annotations

import logging
import math
import os
import socket
import traceback
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any, Final, TypeVar, final

import attrs
import trio

from ._call import FutureCall, build_registry, check_call_class
from ._errors import (
    FutureCallsError,
    InvalidArgumentError,
    PayloadDecodeError,
    SchedulerClosedError,
    SchedulerError,
    StoreError,
    UnregisteredCallError,
)
from ._model import CallInfo, Lease, NewCall, StoredCall
from ._payload import decode_payload, encode_payload
from ._retry import Delivery, backoff_delay
from ._stats import Distribution, QueueLength
from ._stats import Recorder as StatsRecorder
from ._store import PendingQuery, Store
from ._util import raise_unwrapped
from ._validate import (
    check_aware,
    check_identifier,
    check_limit,
    check_name,
    check_positive_seconds,
    resolve_due,
)

#: Environment variable read for the global limit when ``max_concurrent`` is not given.
ENV_MAX_CONCURRENT: Final = "TRIO_FUTURECALLS_MAX_CONCURRENT"
#: Global limit used when neither the argument nor the environment variable is set.
DEFAULT_MAX_CONCURRENT: Final = 100
#: Seconds running calls get to finish at shutdown before they are cancelled.
DEFAULT_GRACE_PERIOD: Final = 30.0
#: Most calls claimed in one store round trip.
MAX_CLAIM_BATCH: Final = 512
#: Default lease length of at-least-once calls (renewed every third of it).
DEFAULT_LEASE_DURATION: Final = 60.0
#: Longest a store write after a call (complete, release, retry, dead letter) may take,
#: shielded from cancellation so that shutdown cannot interrupt it half-way.
CLEANUP_TIMEOUT: Final = 10.0

LEASED: Final = Delivery.AT_LEAST_ONCE
#: Shortest sleep of the dispatcher when a due call could not be claimed.
MIN_RECHECK: Final = 0.01
#: ``max_attempts`` of classes that leave it None, per delivery mode.
DEFAULT_MAX_ATTEMPTS: Final = {Delivery.AT_MOST_ONCE: 1, Delivery.AT_LEAST_ONCE: 5}

T = TypeVar("T")

_log = logging.getLogger("trio_futurecalls.scheduler")
_call_log = logging.getLogger("trio_futurecalls.call")

#: A wall clock: returns the current time as an aware datetime.
Clock = Callable[[], datetime]


class _Unset:
    def __repr__(self) -> str:
        return "UNSET"


_UNSET: Final = _Unset()


def utc_now() -> datetime:
    """The default wall clock: an aware UTC datetime."""
    return datetime.now(UTC)


def global_limit_from_env(value: int | _Unset | None = _UNSET) -> int | None:
    """Resolve the global limit: argument, else environment variable, else the default."""
    if not isinstance(value, _Unset):
        return check_limit(value, "max_concurrent")
    raw = os.environ.get(ENV_MAX_CONCURRENT)
    if raw is None or not raw.strip():
        return DEFAULT_MAX_CONCURRENT
    text = raw.strip().lower()
    if text in ("unlimited", "none", "inf"):
        return None
    try:
        number = int(text)
    except ValueError:
        raise InvalidArgumentError(
            f"{ENV_MAX_CONCURRENT}={raw!r}: expected a positive integer or 'unlimited'"
        ) from None
    if number <= 0:
        raise InvalidArgumentError(f"{ENV_MAX_CONCURRENT}={raw!r}: must be >= 1 (or 'unlimited')")
    return number


def _call_fields(call: StoredCall) -> dict[str, object]:
    """Structured fields carried by every log record about a call."""
    return {
        "call_name": call.name,
        "call_id": call.id,
        "call_identifier": call.identifier,
        "call_due_at": call.due_at.isoformat(),
        "call_attempt": call.attempts,
    }


def _error_text(exc: BaseException, limit: int = 8000) -> str:
    text = "".join(traceback.format_exception(exc)).strip()
    return text if len(text) <= limit else text[: limit // 2] + "\n...\n" + text[-limit // 2 :]


def build_new_call(
    call_class: type[FutureCall],
    payload: object,
    *,
    now: datetime,
    at: datetime | None = None,
    delay: timedelta | float | None = None,
    identifier: str | None = None,
) -> NewCall:
    """Validate one scheduling request and turn it into a :class:`NewCall`."""
    return _new_call(check_call_class(call_class), payload, now, at, delay, identifier)


def _new_call(
    cls: type[FutureCall],
    payload: object,
    now: datetime,
    at: datetime | None,
    delay: timedelta | float | None,
    identifier: object,
) -> NewCall:
    """:func:`build_new_call` for a class already checked."""
    return NewCall(
        name=cls.name,
        payload=encode_payload(cls.payload_type, payload),
        due_at=resolve_due(now, at, delay),
        identifier=check_identifier(identifier),
        scheduled_at=now,
    )


async def schedule_call(
    store: Store,
    call_class: type[FutureCall],
    payload: object = None,
    *,
    at: datetime | None = None,
    delay: timedelta | float | None = None,
    identifier: str | None = None,
    clock: Clock = utc_now,
) -> int:
    """Schedule a call through a store alone, with no scheduler running here.

    For processes that only schedule (a web process) while workers elsewhere run the
    calls. Returns the new call's id.
    """
    now = check_aware(clock(), "clock()")
    new = build_new_call(call_class, payload, now=now, at=at, delay=delay, identifier=identifier)
    (call_id,) = await store.schedule([new])
    return call_id


@final
@attrs.frozen(kw_only=True)
class ClassStatistics:
    """Counters of one call class in one scheduler since it started (or all classes)."""

    name: str
    max_concurrent: int | None
    running: int
    started: int
    succeeded: int
    failed: int
    cancelled: int
    #: Failed attempts that were scheduled again.
    retried: int
    #: Calls given up on and kept as dead letters.
    dead_lettered: int
    #: Start minus due time of started calls.
    wait: Distribution
    #: Execution time of finished calls.
    run: Distribution

    @property
    def finished(self) -> int:
        return self.succeeded + self.failed + self.cancelled

    @property
    def average_wait_seconds(self) -> float | None:
        """Average of (start - due) over started calls."""
        return self.wait.mean

    @property
    def average_run_seconds(self) -> float | None:
        """Average execution time over finished calls."""
        return self.run.mean


@final
@attrs.frozen(kw_only=True)
class SchedulerStatistics:
    """A snapshot of :meth:`Scheduler.statistics`."""

    max_concurrent: int | None
    running: int
    classes: dict[str, ClassStatistics]
    #: All classes together (``name`` is ``"*"``).
    total: ClassStatistics


@attrs.define(eq=False)
class _ClassState:
    cls: type[FutureCall]
    limiter: trio.CapacityLimiter
    limit: int | None
    delivery: Delivery
    max_attempts: int
    started: int = 0
    succeeded: int = 0
    failed: int = 0
    cancelled: int = 0
    retried: int = 0
    dead_lettered: int = 0
    wait: StatsRecorder = attrs.Factory(StatsRecorder)
    run: StatsRecorder = attrs.Factory(StatsRecorder)

    def snapshot(self, name: str) -> ClassStatistics:
        return ClassStatistics(
            name=name,
            max_concurrent=self.limit,
            running=int(self.limiter.borrowed_tokens),
            started=self.started,
            succeeded=self.succeeded,
            failed=self.failed,
            cancelled=self.cancelled,
            retried=self.retried,
            dead_lettered=self.dead_lettered,
            wait=self.wait.snapshot(),
            run=self.run.snapshot(),
        )


@attrs.define(eq=False)
class _Running:
    info: CallInfo
    scope: trio.CancelScope
    leased: bool
    #: Wall time our lease runs out unless renewed (leased calls only).
    lease_expires_at: datetime | None = None
    #: Set when the lease was lost: another worker may run the call now.
    lost: bool = False


@final
class Scheduler:
    """Runs future calls from one store. Made by :func:`open_scheduler`, not directly."""

    def __init__(
        self,
        store: Store,
        calls: Iterable[type[FutureCall]],
        *,
        max_concurrent: int | _Unset | None = _UNSET,
        grace_period: float = DEFAULT_GRACE_PERIOD,
        execute: bool = True,
        clock: Clock = utc_now,
        unknown_check_interval: float = 60.0,
        default_delivery: Delivery = Delivery.AT_MOST_ONCE,
        lease_duration: float = DEFAULT_LEASE_DURATION,
        lease_renew_interval: float | None = None,
    ) -> None:
        if not isinstance(store, Store):
            raise InvalidArgumentError(f"store must implement the Store protocol, got {store!r}")
        self._store = store
        self._registry = build_registry(calls)
        self._limit = global_limit_from_env(max_concurrent)
        grace = check_positive_seconds(grace_period, "grace_period")
        assert grace is not None
        self._grace = grace
        self._execute = bool(execute)
        if not callable(clock):
            raise InvalidArgumentError(f"clock must be callable, got {clock!r}")
        check_aware(clock(), "clock()")
        self._clock = clock
        interval = check_positive_seconds(unknown_check_interval, "unknown_check_interval")
        if not interval:
            raise InvalidArgumentError("unknown_check_interval must be > 0")
        self._unknown_interval = interval
        if not isinstance(default_delivery, Delivery):
            raise InvalidArgumentError(
                f"default_delivery must be a Delivery, got {default_delivery!r}"
            )
        lease = check_positive_seconds(lease_duration, "lease_duration")
        if not lease:
            raise InvalidArgumentError("lease_duration must be > 0")
        renew = check_positive_seconds(
            lease / 3 if lease_renew_interval is None else lease_renew_interval,
            "lease_renew_interval",
        )
        if not renew or renew >= lease:
            raise InvalidArgumentError(
                f"lease_renew_interval must be > 0 and shorter than lease_duration ({lease} s)"
            )
        self._lease_duration = lease
        self._renew_interval = renew
        self._owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:12]}"
        self._global = trio.CapacityLimiter(math.inf if self._limit is None else self._limit)
        self._classes: dict[str, _ClassState] = {}
        for name, cls in self._registry.items():
            limit = cls.max_concurrent
            delivery = cls.delivery or default_delivery
            self._classes[name] = _ClassState(
                cls,
                trio.CapacityLimiter(math.inf if limit is None else limit),
                limit,
                delivery,
                cls.max_attempts or DEFAULT_MAX_ATTEMPTS[delivery],
            )
        self._leased_names = frozenset(
            name for name, state in self._classes.items() if state.delivery is LEASED
        )
        self._running: dict[int, _Running] = {}
        self._reported_unknown: set[str] = set()
        self._wakeup = trio.Event()
        self._awake = True
        self._sleep_until: datetime | None = None
        self._shutdown_requested = trio.Event()
        self._done = trio.Event()
        self._closed = False
        self._calls_nursery: trio.Nursery | None = None
        # Run-once ("maintenance") mode: start only calls due by this time, then stop.
        self._run_until: datetime | None = None
        self._drained = trio.Event()

    # -- public API -------------------------------------------------------------------

    @property
    def max_concurrent(self) -> int | None:
        """The global limit (None: unlimited)."""
        return self._limit

    @property
    def store(self) -> Store:
        return self._store

    @property
    def call_classes(self) -> dict[str, type[FutureCall]]:
        """Registered classes by name."""
        return dict(self._registry)

    async def schedule(
        self,
        call_class: type[FutureCall],
        payload: object = None,
        *,
        at: datetime | None = None,
        delay: timedelta | float | None = None,
        identifier: str | None = None,
    ) -> int:
        """Schedule ``call_class`` with ``payload`` at ``at`` (aware) or after ``delay``.

        ``delay`` is a timedelta or seconds; with neither, the call is due now.
        ``identifier`` is optional and not unique. Returns the call's id.
        """
        self._check_open()
        cls = self._registered(call_class)
        new = build_new_call(
            cls, payload, now=self._clock(), at=at, delay=delay, identifier=identifier
        )
        (call_id,) = await self._store.schedule([new])
        return call_id

    async def schedule_many(
        self,
        requests: Iterable[
            tuple[type[FutureCall], object, datetime | timedelta | float]
            | tuple[type[FutureCall], object, datetime | timedelta | float, str | None]
        ],
    ) -> list[int]:
        """Schedule several calls in one store round trip.

        Each request is ``(call_class, payload, at_or_delay)`` or
        ``(call_class, payload, at_or_delay, identifier)``; a datetime is a due time, a
        timedelta or number a delay. All are validated before any is stored; the ids
        come back in the same order.
        """
        self._check_open()
        now = self._clock()
        batch = []
        checked: dict[object, type[FutureCall]] = {}
        for request in requests:
            if not isinstance(request, tuple) or len(request) not in (3, 4):
                raise InvalidArgumentError(
                    "each request must be (call_class, payload, at_or_delay[, identifier])"
                )
            call_class, payload, when = request[0], request[1], request[2]
            identifier = request[3] if len(request) == 4 else None
            cls = checked.get(id(call_class))
            if cls is None:
                # Validated once per class, not once per call: this is the hot path of
                # bulk scheduling.
                cls = checked[id(call_class)] = self._registered(call_class)
            if isinstance(when, datetime):
                batch.append(_new_call(cls, payload, now, when, None, identifier))
            else:
                batch.append(_new_call(cls, payload, now, None, when, identifier))
        if not batch:
            return []
        return await self._store.schedule(batch)

    async def cancel(self, call_id: int) -> bool:
        """Cancel one pending call by id; True if it was pending (not yet started)."""
        if isinstance(call_id, bool) or not isinstance(call_id, int):
            raise InvalidArgumentError(f"call_id must be an int, got {call_id!r}")
        return await self._store.cancel(call_id)

    async def cancel_identifier(self, identifier: str) -> int:
        """Cancel every pending call with ``identifier``; return how many."""
        checked = check_identifier(identifier)
        if checked is None:
            raise InvalidArgumentError("identifier must not be None")
        return await self._store.cancel_identifier(checked)

    async def pending(
        self,
        call_class: type[FutureCall] | str | None = None,
        *,
        identifier: str | None = None,
        due_after: datetime | None = None,
        due_before: datetime | None = None,
        limit: int | None = None,
    ) -> list[StoredCall]:
        """Pending calls (earliest due first), without claiming them."""
        return await list_pending(
            self._store,
            call_class,
            identifier=identifier,
            due_after=due_after,
            due_before=due_before,
            limit=limit,
        )

    async def unknown_calls(self) -> list[StoredCall]:
        """Pending calls whose name matches no class registered here (they are kept)."""
        names = await self._store.pending_names()
        found: list[StoredCall] = []
        for name in sorted(set(names) - set(self._registry)):
            found.extend(await self._store.pending(PendingQuery(name=name)))
        found.sort(key=lambda c: (c.due_at, c.id))
        return found

    async def move_unknown_to_dead_letters(self, names: Iterable[str] | None = None) -> int:
        """Move *due* pending calls with unknown names (or just ``names``) to dead letters.

        An explicit operator decision: by default such rows are kept, since another
        deployment may still know the name. Each row is first leased to this scheduler
        (rows running elsewhere are never touched), then moved; if that fails part way,
        the rest stay leased and become pending again when the lease expires. Calls due
        later stay pending. Returns how many were moved.
        """
        known = set(self._registry)
        found = await self._store.pending_names(due_by=self._clock())
        wanted = set(found) - known if names is None else set(names) & set(found) - known
        moved = 0
        for name in sorted(wanted):
            error = f"no FutureCall class named {name!r} is registered"
            while True:
                now = self._clock()
                lease = Lease(
                    owner=self._owner,
                    expires_at=now + timedelta(seconds=self._lease_duration),
                    names=frozenset({name}),
                )
                batch = await self._store.claim(
                    now, {name: MAX_CLAIM_BATCH}, MAX_CLAIM_BATCH, lease
                )
                if not batch:
                    break
                for call in batch:
                    if await self._store.dead_letter(call, error, now, self._owner) is not None:
                        moved += 1
            _log.warning("moved due calls named %r to dead letters", name)
        return moved

    def running(self) -> list[CallInfo]:
        """Calls running right now."""
        return [r.info for r in self._running.values()]

    def statistics(self) -> SchedulerStatistics:
        """Counters and time distributions per class (and in total) since start."""
        classes = {name: state.snapshot(name) for name, state in self._classes.items()}
        parts = list(classes.values())
        total = ClassStatistics(
            name="*",
            max_concurrent=self._limit,
            running=len(self._running),
            started=sum(c.started for c in parts),
            succeeded=sum(c.succeeded for c in parts),
            failed=sum(c.failed for c in parts),
            cancelled=sum(c.cancelled for c in parts),
            retried=sum(c.retried for c in parts),
            dead_lettered=sum(c.dead_lettered for c in parts),
            wait=StatsRecorder.merge([c.wait for c in parts]),
            run=StatsRecorder.merge([c.run for c in parts]),
        )
        return SchedulerStatistics(
            max_concurrent=self._limit, running=len(self._running), classes=classes, total=total
        )

    async def queue_lengths(self) -> dict[str, QueueLength]:
        """Per name in the store: pending calls, and how many are due (waiting for a slot).

        Registered classes are always present (with zeros); names no class matches
        appear too.
        """
        return await queue_lengths(self._store, self._registry, self._clock())

    async def shutdown(self, grace_period: float | None = None) -> None:
        """Stop starting calls, give running ones ``grace_period`` s, then cancel them.

        Returns once every call task has ended. Calls that had not started stay in
        the store. Safe to call more than once and from several tasks.
        """
        self._request_shutdown(grace_period)
        await self._done.wait()

    # -- internals --------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise SchedulerClosedError("the scheduler has shut down")

    def _registered(self, call_class: object) -> type[FutureCall]:
        cls = check_call_class(call_class)
        if self._registry.get(cls.name) is not cls:
            raise UnregisteredCallError(
                f"{cls.__qualname__} (name {cls.name!r}) is not registered with this scheduler"
            )
        return cls

    def _request_shutdown(self, grace_period: float | None) -> None:
        if self._shutdown_requested.is_set():
            return
        if grace_period is not None:
            grace = check_positive_seconds(grace_period, "grace_period")
            assert grace is not None
            self._grace = grace
        self._closed = True
        self._shutdown_requested.set()

    def _wake(self) -> None:
        self._wakeup.set()

    def _on_scheduled(self, due_at: datetime) -> None:
        # Called by the store when calls were scheduled (here or, through
        # LISTEN/NOTIFY, elsewhere). Wake only when it changes what we wait for.
        if self._awake or self._sleep_until is None or due_at < self._sleep_until:
            self._wakeup.set()

    async def _run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        remove_listener = self._store.add_listener(self._on_scheduled)
        try:
            # The lease keeper outlives the calls nursery: leases are renewed through
            # the grace period, and stop only once every call has ended.
            async with trio.open_nursery() as keeper:
                if self._execute and self._leased_names:
                    keeper.start_soon(self._lease_loop, name="futurecalls-leases")
                async with trio.open_nursery() as calls:
                    self._calls_nursery = calls
                    async with trio.open_nursery() as control:
                        if self._execute:
                            control.start_soon(self._dispatch_loop, name="futurecalls-dispatcher")
                            control.start_soon(self._unknown_names_loop)
                        task_status.started()
                        await self._shutdown_requested.wait()
                        # The grace period starts now, even if the dispatcher needs a
                        # moment to finish a claim in flight.
                        calls.cancel_scope.deadline = trio.current_time() + self._grace
                        control.cancel_scope.cancel()
                    # Dispatching has stopped: nothing new starts. Running calls get the
                    # grace period, then the deadline cancels them through their scopes.
                    if self._running:
                        _log.info(
                            "shutting down: waiting up to %.3g s for %d running call(s)",
                            self._grace,
                            len(self._running),
                        )
                keeper.cancel_scope.cancel()
        finally:
            remove_listener()
            self._closed = True
            self._done.set()

    @property
    def owner(self) -> str:
        """This scheduler's lease owner id (host:pid:random)."""
        return self._owner

    def _free_slots(self) -> tuple[int, dict[str, int]]:
        free_global = self._global.available_tokens
        limit = MAX_CLAIM_BATCH if free_global >= MAX_CLAIM_BATCH else int(free_global)
        slots = {}
        if limit > 0:
            for name, state in self._classes.items():
                free = state.limiter.available_tokens
                if free >= 1:
                    slots[name] = limit if free >= limit else int(free)
        return limit, slots

    async def _dispatch_loop(self) -> None:
        backoff = 0.0
        recheck = self._store.recheck_interval
        until = self._run_until
        while True:
            self._wakeup = trio.Event()
            self._awake = True
            try:
                limit, slots = self._free_slots()
                next_due: datetime | None = None
                if slots:
                    wall = self._clock()
                    now = wall if until is None else min(wall, until)
                    lease = None
                    if self._leased_names:
                        lease = Lease(
                            owner=self._owner,
                            expires_at=wall + timedelta(seconds=self._lease_duration),
                            names=self._leased_names,
                        )
                    claimed = await self._store.claim(now, slots, limit, lease)
                    if claimed:
                        expiry = lease.expires_at if lease is not None else None
                        for call in claimed:
                            self._start(call, expiry)
                        backoff = 0.0
                        # More may be due: claim again before sleeping.
                        await trio.lowlevel.checkpoint()
                        continue
                    limit, slots = self._free_slots()
                    if slots and until is None:
                        next_due = await self._store.next_due(slots.keys())
                if until is not None and not self._running:
                    # Run-once mode: done when nothing due by `until` is left to start.
                    first = await self._store.next_due(self._classes.keys())
                    if first is None or first > until:
                        self._drained.set()
                        return
                backoff = 0.0
            except StoreError as exc:
                backoff = min(max(backoff * 2, 0.05), 30.0)
                _log.warning("store error while dispatching (retrying in %.2f s): %s", backoff, exc)
                await trio.sleep(backoff)
                continue
            deadline = math.inf
            if next_due is not None:
                delta = (next_due - self._clock()).total_seconds()
                if delta <= 0:
                    # Due but not claimed: another worker holds it locked mid-claim (or
                    # it was scheduled a moment ago, and a wake-up is already set). A
                    # short floor keeps this from spinning on the store.
                    delta = MIN_RECHECK
                deadline = trio.current_time() + delta
            if recheck is not None:
                deadline = min(deadline, trio.current_time() + recheck)
            self._sleep_until = next_due
            self._awake = False
            with trio.move_on_at(deadline):
                await self._wakeup.wait()

    def _start(self, call: StoredCall, lease_expires_at: datetime | None) -> None:
        state = self._classes[call.name]
        token = object()
        # Free slots were counted just before the claim and only this task acquires,
        # so these cannot fail; tokens are held on behalf of the call's own task.
        self._global.acquire_on_behalf_of_nowait(token)
        state.limiter.acquire_on_behalf_of_nowait(token)
        assert self._calls_nursery is not None
        self._calls_nursery.start_soon(self._run_call, state, call, token, lease_expires_at)

    async def _run_call(
        self,
        state: _ClassState,
        call: StoredCall,
        token: object,
        lease_expires_at: datetime | None,
    ) -> None:
        cls = state.cls
        started_wall = self._clock()
        started = trio.current_time()
        leased = state.delivery is LEASED
        info = CallInfo(
            id=call.id,
            name=call.name,
            identifier=call.identifier,
            due_at=call.due_at,
            scheduled_at=call.scheduled_at,
            started_at=started_wall,
            attempt=call.attempts,
        )
        state.started += 1
        state.wait.add((started_wall - call.due_at).total_seconds())
        running = _Running(
            info,
            trio.CancelScope(),
            leased,
            lease_expires_at if leased else None,
        )
        self._running[call.id] = running
        outcome = "cancelled"
        try:
            if leased and call.attempts > state.max_attempts:
                # Claimed again after its lease expired on the last allowed attempt:
                # the worker running it died, hung or was cut off. Give up rather than
                # let a call that kills its worker loop forever.
                outcome = "failed"
                await self._give_up(
                    state,
                    call,
                    f"lease expired during attempt {call.attempts - 1} of {state.max_attempts} "
                    "(the worker running it died, hung or lost the database)",
                )
                return
            try:
                payload = decode_payload(cls.payload_type, call.payload)
            except PayloadDecodeError as exc:
                outcome = "failed"
                await self._give_up(state, call, str(exc))
                return
            failure: BaseException | None = None
            # One scope per call: its deadline is the class's timeout (if any), and the
            # lease keeper cancels it when the lease is lost.
            if cls.timeout is not None:
                running.scope.deadline = trio.current_time() + cls.timeout
            with running.scope:
                try:
                    instance = cls(info)
                    async with self._store.open_session(call) as session:
                        await instance.invoke(session, payload)
                except Exception as exc:
                    failure = exc
            timed_out = running.scope.cancelled_caught and not running.lost
            if running.lost and running.scope.cancelled_caught:
                _call_log.error(
                    "call %s (id=%d) lost its lease and was cancelled; another worker may run it",
                    call.name,
                    call.id,
                    extra=_call_fields(call),
                )
                return
            if failure is None and not timed_out:
                outcome = "succeeded"
                if leased:
                    await self._complete(call)
                return
            outcome = "failed"
            if timed_out:
                error = f"timed out after {cls.timeout} s (attempt {call.attempts})"
                _call_log.error(
                    "call %s (id=%d, identifier=%r, due %s) %s",
                    call.name,
                    call.id,
                    call.identifier,
                    call.due_at.isoformat(),
                    error,
                    extra=_call_fields(call),
                )
                retryable = True
            else:
                assert failure is not None
                error = _error_text(failure)
                _call_log.error(
                    "call %s (id=%d, identifier=%r, due %s) failed on attempt %d of %d",
                    call.name,
                    call.id,
                    call.identifier,
                    call.due_at.isoformat(),
                    call.attempts,
                    state.max_attempts,
                    exc_info=failure,
                    extra=_call_fields(call),
                )
                retryable = not isinstance(failure, cls.no_retry_on)
            if retryable and call.attempts < state.max_attempts:
                await self._retry(state, call, error)
            else:
                await self._give_up(state, call, error)
        finally:
            # Runs on cancellation too (Cancelled is never swallowed here).
            del self._running[call.id]
            state.run.add(trio.current_time() - started)
            if outcome == "succeeded":
                state.succeeded += 1
            elif outcome == "failed":
                state.failed += 1
            else:
                state.cancelled += 1
                if not running.lost:
                    _call_log.warning(
                        "call %s (id=%d) was cancelled after %.3f s",
                        call.name,
                        call.id,
                        trio.current_time() - started,
                        extra=_call_fields(call),
                    )
                    if leased:
                        # Shutdown (or an outer cancel) interrupted it: hand it back now
                        # rather than make other workers wait for the lease to expire.
                        await self._store_write(
                            call,
                            "release",
                            self._store.release,
                            self._owner,
                            call.id,
                            self._clock(),
                            refund_attempt=True,
                        )
            was_blocked = self._global.available_tokens < 1 or state.limiter.available_tokens < 1
            state.limiter.release_on_behalf_of(token)
            self._global.release_on_behalf_of(token)
            if was_blocked or self._run_until is not None:
                self._wake()

    async def _store_write(
        self, call: StoredCall, what: str, fn: Callable[..., Awaitable[T]], *args: Any, **kw: Any
    ) -> T | None:
        """A store write after a call, shielded from cancellation, bounded in time."""
        with trio.move_on_after(CLEANUP_TIMEOUT, shield=True) as scope:
            try:
                return await fn(*args, **kw)
            except Exception as exc:
                # A store failure here must not take the scheduler down with it.
                _call_log.error(
                    "call %s (id=%d): could not %s: %r",
                    call.name,
                    call.id,
                    what,
                    exc,
                    exc_info=not isinstance(exc, FutureCallsError),
                    extra=_call_fields(call),
                )
                return None
        if scope.cancelled_caught:
            _call_log.error(
                "call %s (id=%d): could not %s within %s s",
                call.name,
                call.id,
                what,
                CLEANUP_TIMEOUT,
                extra=_call_fields(call),
            )
        return None

    async def _complete(self, call: StoredCall) -> None:
        done = await self._store_write(
            call, "delete the finished call", self._store.complete, self._owner, call.id
        )
        if done is False:
            _call_log.warning(
                "call %s (id=%d) finished after its lease was lost; it may run again",
                call.name,
                call.id,
                extra=_call_fields(call),
            )

    async def _retry(self, state: _ClassState, call: StoredCall, error: str) -> None:
        cls = state.cls
        try:
            delay = backoff_delay(
                cls.retry_backoff, call.attempts, f"{cls.__qualname__}.retry_backoff"
            )
            due_at = self._clock() + timedelta(seconds=delay)
        except Exception as exc:
            _call_log.exception("retry_backoff of %s failed", cls.__qualname__)
            await self._give_up(state, call, f"{error}\n(retry_backoff failed: {exc!r})")
            return
        if state.delivery is LEASED:
            done = await self._store_write(
                call, "schedule the retry", self._store.release, self._owner, call.id, due_at
            )
        else:
            # The row went when the call started: store the retry as a new row.
            retry = NewCall(
                name=call.name,
                payload=call.payload,
                due_at=due_at,
                identifier=call.identifier,
                scheduled_at=call.scheduled_at,
                attempts=call.attempts,
            )
            ids = await self._store_write(call, "schedule the retry", self._store.schedule, [retry])
            done = ids is not None
            if not done:
                _call_log.critical(
                    "call %s (id=%d) lost: its retry could not be stored; payload was %s",
                    call.name,
                    call.id,
                    call.payload,
                    extra=_call_fields(call),
                )
        if done:
            state.retried += 1
            _call_log.warning(
                "call %s (id=%d) will be retried in %.3f s (attempt %d of %d)",
                call.name,
                call.id,
                delay,
                call.attempts + 1,
                state.max_attempts,
                extra=_call_fields(call),
            )

    async def _give_up(self, state: _ClassState, call: StoredCall, error: str) -> None:
        _call_log.error(
            "call %s (id=%d) moved to dead letters: %s",
            call.name,
            call.id,
            error.splitlines()[-1] if error else error,
            extra=_call_fields(call),
        )
        owner = self._owner if state.delivery is LEASED else None
        answer = await self._store_write(
            call, "keep it as a dead letter", self._keep_dead, call, error, owner
        )
        if answer is not None:
            _, dead_id = answer
            if dead_id is not None:
                state.dead_lettered += 1
            else:
                _call_log.warning(
                    "call %s (id=%d) not kept as a dead letter: its lease was lost and "
                    "another worker has it",
                    call.name,
                    call.id,
                    extra=_call_fields(call),
                )
        elif owner is None:
            # Last resort: the row is already gone, so put everything in the log.
            _call_log.critical(
                "call %s (id=%d) lost: could not keep it as a dead letter; payload was %s",
                call.name,
                call.id,
                call.payload,
                extra=_call_fields(call),
            )
        # (Leased and the store failed: the row stays leased, and the call runs again
        # after the lease expires.)

    async def _keep_dead(
        self, call: StoredCall, error: str, owner: str | None
    ) -> tuple[bool, int | None]:
        """(the store answered, the dead letter's id or None if the lease was lost)."""
        return True, await self._store.dead_letter(call, error, self._clock(), owner)

    async def _lease_loop(self) -> None:
        margin = self._renew_interval / 2
        while True:
            await trio.sleep(self._renew_interval)
            leased = {i: r for i, r in self._running.items() if r.leased and not r.lost}
            if not leased:
                continue
            now = self._clock()
            expires_at = now + timedelta(seconds=self._lease_duration)
            earliest = min(r.lease_expires_at or now for r in leased.values())
            # The answer must come while there is still time to stop a call before its
            # lease runs out; a renewal that hangs (database cut off) counts as failed.
            budget = max(0.0, (earliest - now).total_seconds() - margin)
            kept: set[int] | None = None
            with trio.move_on_after(budget) as scope:
                try:
                    kept = await self._store.renew(self._owner, leased.keys(), expires_at)
                except StoreError as exc:
                    _log.warning("could not renew %d lease(s): %s", len(leased), exc)
            if scope.cancelled_caught:
                _log.warning("renewing %d lease(s) took over %.3g s", len(leased), budget)
            now = self._clock()
            for call_id, running in leased.items():
                if kept is not None and call_id in kept:
                    running.lease_expires_at = expires_at
                    continue
                assert running.lease_expires_at is not None
                too_late = now + timedelta(seconds=self._renew_interval) >= (
                    running.lease_expires_at
                )
                if (kept is not None or too_late) and self._running.get(call_id) is running:
                    # Lost (another worker may have it) or about to expire unrenewed:
                    # stop rather than run on unaware.
                    running.lost = True
                    running.scope.cancel()

    async def _unknown_names_loop(self) -> None:
        while True:
            try:
                names = await self._store.pending_names()
            except StoreError as exc:
                _log.debug("could not check for unknown call names: %s", exc)
            else:
                for name, count in sorted(names.items()):
                    if name not in self._registry and name not in self._reported_unknown:
                        self._reported_unknown.add(name)
                        _log.error(
                            "%d pending call(s) named %r match no registered FutureCall "
                            "class; they are kept, not run (see Scheduler.unknown_calls())",
                            count,
                            name,
                            extra={"call_name": name},
                        )
            await trio.sleep(self._unknown_interval)


async def queue_lengths(
    store: Store, names: Iterable[str] = (), now: datetime | None = None
) -> dict[str, QueueLength]:
    """Pending and due counts per name in ``store`` (``names`` are listed even if 0)."""
    when = utc_now() if now is None else now
    pending = await store.pending_names()
    due = await store.pending_names(due_by=when)
    out = {name: QueueLength(pending=0, due=0) for name in names}
    for name, count in pending.items():
        out[name] = QueueLength(pending=count, due=due.get(name, 0))
    return dict(sorted(out.items()))


async def list_pending(
    store: Store,
    call_class: type[FutureCall] | str | None = None,
    *,
    identifier: str | None = None,
    due_after: datetime | None = None,
    due_before: datetime | None = None,
    limit: int | None = None,
) -> list[StoredCall]:
    """Pending calls in ``store`` matching the filters, earliest due first."""
    name: str | None
    if call_class is None or isinstance(call_class, str):
        name = None if call_class is None else check_name(call_class)
    else:
        name = check_call_class(call_class).name
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 0):
        raise InvalidArgumentError(f"limit must be a non-negative int, got {limit!r}")
    return await store.pending(
        PendingQuery(
            name=name,
            identifier=check_identifier(identifier),
            due_after=None if due_after is None else check_aware(due_after, "due_after"),
            due_before=None if due_before is None else check_aware(due_before, "due_before"),
            limit=limit,
        )
    )


@asynccontextmanager
async def open_scheduler(
    store: Store,
    calls: Iterable[type[FutureCall]],
    *,
    max_concurrent: int | _Unset | None = _UNSET,
    grace_period: float = DEFAULT_GRACE_PERIOD,
    execute: bool = True,
    clock: Clock = utc_now,
    unknown_check_interval: float = 60.0,
    default_delivery: Delivery = Delivery.AT_MOST_ONCE,
    lease_duration: float = DEFAULT_LEASE_DURATION,
    lease_renew_interval: float | None = None,
) -> AsyncIterator[Scheduler]:
    """Run a scheduler over ``store`` for the ``calls`` classes while the block runs.

    * ``max_concurrent``: the global limit on calls running at once. When not given,
      ``$TRIO_FUTURECALLS_MAX_CONCURRENT`` is read (a positive integer or
      ``unlimited``), and failing that it is :data:`DEFAULT_MAX_CONCURRENT` (100).
      ``None`` means unlimited (only the per-class limits apply).
    * ``grace_period``: seconds running calls get at shutdown before being cancelled.
    * ``execute=False``: this node only schedules; it starts no calls.
    * ``clock``: returns the current aware datetime (tests pass one tied to Trio's clock).
    * ``default_delivery``: for classes whose ``delivery`` is None
      (``Delivery.AT_MOST_ONCE`` unless said otherwise).
    * ``lease_duration`` / ``lease_renew_interval``: for at-least-once calls, how long a
      claim leases a row (60 s) and how often running calls' leases are renewed (a
      third of it). A call whose lease cannot be renewed is cancelled before it
      expires; another worker may run it once it has.

    Leaving the block shuts down gracefully (see :meth:`Scheduler.shutdown`). A failure
    inside the scheduler is raised as :class:`SchedulerError`, never a raw group.
    """
    scheduler = Scheduler(
        store,
        calls,
        max_concurrent=max_concurrent,
        grace_period=grace_period,
        execute=execute,
        clock=clock,
        unknown_check_interval=unknown_check_interval,
        default_delivery=default_delivery,
        lease_duration=lease_duration,
        lease_renew_interval=lease_renew_interval,
    )
    _check_pool(store, scheduler)
    async with _serve(scheduler):
        yield scheduler


async def run_due_calls(
    store: Store,
    calls: Iterable[type[FutureCall]],
    *,
    max_concurrent: int | _Unset | None = _UNSET,
    grace_period: float = DEFAULT_GRACE_PERIOD,
    clock: Clock = utc_now,
    default_delivery: Delivery = Delivery.AT_MOST_ONCE,
    lease_duration: float = DEFAULT_LEASE_DURATION,
) -> SchedulerStatistics:
    """Run-once ("maintenance") mode: run every call due now, wait for them, return.

    Calls due later than the moment this starts are left alone, as are calls of
    classes not in ``calls``. Limits apply as in :func:`open_scheduler`. Returns the
    statistics of the run.
    """
    scheduler = Scheduler(
        store,
        calls,
        max_concurrent=max_concurrent,
        grace_period=grace_period,
        clock=clock,
        default_delivery=default_delivery,
        lease_duration=lease_duration,
    )
    scheduler._run_until = clock()
    _check_pool(store, scheduler)
    async with _serve(scheduler):
        await scheduler._drained.wait()
    return scheduler.statistics()


def _check_pool(store: Store, scheduler: Scheduler) -> None:
    """Let a store with a connection pool warn when it is too small for the limits."""
    if not scheduler._execute:
        return
    check = getattr(store, "check_pool_size", None)
    if callable(check):
        check(scheduler.max_concurrent)


@asynccontextmanager
async def _serve(scheduler: Scheduler) -> AsyncIterator[None]:
    """Run ``scheduler`` in a nursery around the block; unwrap errors for users."""
    body_exc: BaseException | None = None
    try:
        async with trio.open_nursery() as nursery:
            await nursery.start(scheduler._run)
            try:
                yield
            except BaseException as exc:
                body_exc = exc
                raise
            finally:
                # Drain here, before an exception from the block reaches the nursery
                # (which would cancel the running calls at once instead of gracefully).
                scheduler._request_shutdown(None)
                await scheduler._done.wait()
    except BaseExceptionGroup as group:
        raise_unwrapped(group, body_exc, lambda e: SchedulerError(f"the scheduler failed: {e!r}"))

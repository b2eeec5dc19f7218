"""The scheduler's public facade: :class:`Scheduler` and the ways to run one
(:func:`open_scheduler`, :func:`run_due_calls`).

Each method checks its arguments and reads or drives the :class:`Engine`
(``_engine.py``), which wires the parts together and runs the task tree from start to
graceful shutdown. Store-level operations that need no running scheduler live in
``_admin``.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Collection, Iterable
from contextlib import asynccontextmanager
from datetime import datetime, timedelta
from typing import Unpack, final

import trio

from ._adaptive import Adaptive, ceiling, check_max_concurrent
from ._admin import (
    Request,
    Step,
    chain_calls,
    list_pending,
    move_unknown_to_dead_letters,
    new_call,
    new_calls,
    queue_lengths,
    unknown_calls,
)
from ._call import FutureCall, check_call_class
from ._cancel_model import CancelOutcome
from ._cancels import cancel_call, cancel_identifier_calls
from ._controls import limit_target
from ._engine import Engine
from ._errors import (
    InvalidArgumentError,
    SchedulerClosedError,
    SchedulerError,
    UnregisteredCallError,
)
from ._group_commit import schedule_one
from ._model import CallInfo, OnConflict, RecurringInfo, StoredCall, WorkerInfo
from ._options import SchedulerKeywords, SchedulerOptions, build_options
from ._recurring import cancel_recurring, list_recurring, schedule_recurring
from ._stats import QueueLength, SchedulerStatistics, total_statistics
from ._store import PoolSizeCheck, Store
from ._util import raise_unwrapped
from ._validate import (
    check_id,
    check_name,
    check_names,
    check_positive_seconds,
    check_required_identifier,
)

_log = logging.getLogger("trio_futurecalls.scheduler")


@final
class Scheduler:
    """Runs future calls from one store. Made by :func:`open_scheduler`, not directly."""

    def __init__(
        self,
        store: Store,
        calls: Iterable[type[FutureCall]],
        options: SchedulerOptions,
        *,
        run_until: datetime | None = None,
    ) -> None:
        if not isinstance(store, Store):
            raise InvalidArgumentError(f"store must implement the Store protocol, got {store!r}")
        self._engine = Engine(store, calls, options, run_until=run_until)

    # -- public API -------------------------------------------------------------------

    @property
    def max_concurrent(self) -> int | None:
        """The global limit now (None: unlimited), see :meth:`set_limit`; for an
        adaptive one its ``max`` (``statistics().total.current_limit`` is the limit in
        force)."""
        return ceiling(self._engine.adaptive.bounds(None) or self._engine.slots.limit(None))

    @property
    def options(self) -> SchedulerOptions:
        """The settings this scheduler runs with."""
        return self._engine.options

    @property
    def store(self) -> Store:
        return self._engine.store

    @property
    def owner(self) -> str:
        """This scheduler's lease owner id (host:pid:random)."""
        return self._engine.owner

    @property
    def call_classes(self) -> dict[str, type[FutureCall]]:
        """Registered classes by name."""
        return dict(self._engine.registry)

    async def schedule(
        self,
        call_class: type[FutureCall] | str,
        payload: object = None,
        *,
        at: datetime | None = None,
        delay: timedelta | float | None = None,
        identifier: str | None = None,
        unique_key: str | None = None,
        on_conflict: OnConflict = "ignore",
        priority: int | None = None,
        after: Collection[int] = (),
    ) -> int:
        """Schedule ``call_class`` with ``payload`` at ``at`` (aware) or after ``delay``.

        ``delay`` is a timedelta or seconds; with neither, the call is due now.
        ``identifier`` is optional and not unique. Returns the call's id.
        ``call_class`` may be the name of a registered class. (A process that only
        schedules needs no scheduler: see :func:`schedule_call`.)

        ``unique_key``: at most one pending (not yet started) call per name and key in
        the store. If one is pending, ``on_conflict`` says what happens: ``"ignore"``
        returns its id and changes nothing, ``"replace"`` gives it this call's payload,
        due time, identifier and priority and returns its id, ``"error"`` raises
        :class:`DuplicateCallError`. A call frees its key when it starts (is claimed).

        ``priority`` (an int from ``MIN_PRIORITY`` to ``MAX_PRIORITY``; None: the
        class's :attr:`FutureCall.priority`): among due calls with free slots, higher
        priority starts first, then earlier due time, then lower id.

        ``after`` (call ids): the call starts only once each of those calls has
        succeeded, and its own due time has come; until then it is pending and waits
        (``pending()`` shows ``waiting_for``). If one of them fails for good (a dead
        letter) or is cancelled, this call becomes a dead letter with the reason, and
        so do the calls waiting for it. Each id must be a call the store can see:
        pending, at-least-once and running, or at-most-once and running with other
        calls already waiting for it; else :class:`PrerequisiteError` (an at-most-once
        call leaves no trace once it started or succeeded: to wait for a call that
        may start at once, schedule both with :meth:`chain`, or make its class
        at-least-once). Not with ``unique_key``.
        """
        self._check_open()
        new = new_call(
            self._registered(call_class),
            payload,
            self._engine.clock(),
            at,
            delay,
            identifier,
            unique_key,
            on_conflict,
            priority,
            after,
        )
        # Concurrent callers share one round trip and one commit (_group_commit.py).
        return await schedule_one(self._engine.store, new)

    async def chain(self, steps: Iterable[Step], *, after: Collection[int] = ()) -> list[int]:
        """Schedule calls that run one after another: each step starts only once the
        one before it succeeded (the first once every call in ``after`` has).

        A step is ``(call_class, payload)`` or a :class:`CallRequest` (its own due
        time, priority, identifier...). All steps are stored in one batch, so none
        can start before the next is linked to it. If a step fails for good, the rest
        become dead letters. Returns the ids, in order.
        """
        self._check_open()
        batch = chain_calls(steps, self._engine.clock(), self._registered, after)
        if not batch:
            return []
        return await self._engine.store.schedule(batch)

    async def schedule_many(self, requests: Iterable[Request]) -> list[int]:
        """Schedule several calls in one store round trip.

        Each request is a :class:`CallRequest` (every option of :meth:`schedule`,
        ``priority`` included, by keyword), or a tuple ``(call_class, payload,
        at_or_delay)`` or ``(call_class, payload, at_or_delay, identifier[, unique_key[,
        on_conflict]])`` (the class's priority); in a tuple a datetime is a due time, a
        timedelta or number a delay. All are validated
        before any is stored; the ids come back in the same order. A request whose name
        and key an earlier request of the batch has conflicts with it (as with a pending
        call); with ``on_conflict="error"`` nothing of the batch is stored. A request's
        class may be the name of a registered class.
        """
        self._check_open()
        batch = new_calls(requests, self._engine.clock(), self._registered)
        if not batch:
            return []
        return await self._engine.store.schedule(batch)

    async def schedule_recurring(
        self,
        call_class: type[FutureCall],
        payload: object = None,
        *,
        key: str,
        cron: str | None = None,
        every: timedelta | float | None = None,
        timezone: str = "UTC",
        start: datetime | None = None,
        end: datetime | None = None,
        misfire: str = "once",
        overlap: str = "allow",
        replace: bool = True,
        identifier: str | None = None,
    ) -> RecurringInfo:
        """Run ``call_class`` with ``payload`` on a schedule, once per tick across workers.

        ``key`` names the schedule (unique in the store). Exactly one of ``cron`` (five
        fields, or six with seconds first; read in ``timezone``, an IANA name) and
        ``every`` (a timedelta or seconds). ``start``/``end`` (aware) bound the ticks.
        ``misfire`` says what happens to ticks missed while no worker ran: ``"once"``
        (one run now stands for all of them), ``"skip"`` (none; wait for the next
        tick) or ``"all"`` (each, up to the latest 100). ``overlap="skip"``: no new run
        while the previous run is pending, running or waiting for a retry (the class
        must be at-least-once, so that a running call stays visible in the store).
        Registering a key again updates it (``replace=True``) or keeps the stored
        one; the same definition again changes nothing, so every worker may
        register its schedules at start-up. Each run is an ordinary call (its
        ``info.recurring_key`` and ``info.tick_at`` say which tick). Returns the
        schedule as stored.
        """
        self._check_open()
        cls = self._registered(call_class)
        if overlap == "skip" and not self._engine.policies[cls.name].leased:
            raise InvalidArgumentError(
                f"overlap='skip' needs {cls.__qualname__} to be at-least-once "
                "(delivery = Delivery.AT_LEAST_ONCE): an at-most-once run's row is "
                "deleted as it starts, so no worker could see that it is still running"
            )
        stored = await schedule_recurring(
            self._engine.store,
            cls,
            payload,
            key=key,
            cron=cron,
            every=every,
            timezone=timezone,
            start=start,
            end=end,
            misfire=misfire,
            overlap=overlap,
            replace=replace,
            identifier=identifier,
            clock=self._engine.clock,
        )
        self._engine.ticker.poke()
        return stored

    async def cancel_recurring(self, key: str) -> bool:
        """Stop a schedule: delete it and its runs that have not started.

        A run already started goes on. True if the schedule existed.
        """
        return await cancel_recurring(self._engine.store, key)

    async def recurring(self) -> list[RecurringInfo]:
        """The store's recurring schedules, ordered by key."""
        return await list_recurring(self._engine.store)

    async def cancel(self, call_id: int) -> CancelOutcome:
        """Cancel one call by id, pending or running on any worker (README, "Cancel and
        pause"): PENDING or RUNNING (both true) or NOT_FOUND (false).

        A running call's ``invoke`` sees ``trio.Cancelled`` and it is not run again.
        For a call that is not pending, this waits (bounded: about 1 s on PostgreSQL
        and the memory store, 3 ``recheck_interval`` on SQLite) for the live workers
        to answer whether they run it.
        """
        return await cancel_call(
            self._engine.store, check_id(call_id, "call_id"), self._engine.clock
        )

    async def cancel_identifier(self, identifier: str) -> int:
        """Cancel every call with ``identifier``, pending or running on any worker;
        return how many: pending calls deleted, plus at-least-once calls whose rows
        were deleted (running, or whose worker died), plus at-most-once calls that
        live workers found running and stopped (answered within the same bounded
        wait as :meth:`cancel`)."""
        identifier = check_required_identifier(identifier)
        return await cancel_identifier_calls(self._engine.store, identifier, self._engine.clock)

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
            self._engine.store,
            call_class,
            identifier=identifier,
            due_after=due_after,
            due_before=due_before,
            limit=limit,
            now=self._engine.clock(),
        )

    async def unknown_calls(self) -> list[StoredCall]:
        """Pending calls whose name matches no class registered here (they are kept)."""
        return await unknown_calls(
            self._engine.store, self._engine.registry.keys(), self._engine.clock()
        )

    async def move_unknown_to_dead_letters(self, names: Iterable[str] | None = None) -> int:
        """Move *due* pending calls with unknown names (or just ``names``) to dead letters.

        An explicit operator decision: by default such rows are kept, since another
        deployment may still know the name. Each name moves in one statement; rows
        leased by a running worker and calls due later are not touched. Returns how
        many were moved.
        """
        wanted = None if names is None else check_names(names)
        return await move_unknown_to_dead_letters(
            self._engine.store, self._engine.registry.keys(), wanted, self._engine.clock()
        )

    async def pause(self, call_class: type[FutureCall] | str) -> bool:
        """Pause a class (a :class:`FutureCall` subclass or a name) in the store: no
        worker on the store starts its calls until :meth:`resume`; they stay pending.
        Calls already running finish. True if it was not paused. Any valid name may be
        paused, registered here or not (other workers may run it). See the README,
        "Cancel and pause", for exactly when it takes effect.
        """
        return await self._engine.paused.pause(call_class)

    async def resume(self, call_class: type[FutureCall] | str) -> bool:
        """End a class's pause; every worker looks for its due calls at once. True if
        it was paused."""
        return await self._engine.paused.resume(call_class)

    async def paused(self) -> dict[str, datetime]:
        """The classes paused in the store (name -> when), ordered by name."""
        return await self._engine.paused.read()

    def set_limit(
        self, call_class: type[FutureCall] | str | None, limit: int | Adaptive | None
    ) -> None:
        """Change this scheduler's limit on calls running at once, from now on: the
        global limit (``call_class`` None) or a registered class's (the class or its
        name). ``limit`` None means unlimited. Lowering it cancels no running call (no
        call starts until fewer run than the new limit); raising it starts due calls
        at once. :meth:`statistics` shows the limits in force.

        An int or None given for an adaptive limit fixes it: it stops adapting (an
        operator's word wins). An :class:`Adaptive` makes the limit adaptive within its
        bounds (or changes them), starting from the limit in force clamped into them.
        """
        name = limit_target(call_class, self._engine.registry)
        what = "the global limit" if name is None else f"the limit of {name!r}"
        self._engine.adaptive.set(name, check_max_concurrent(limit, what))
        self._engine.observe_if_adaptive()

    async def workers(self) -> list[WorkerInfo]:
        """The live workers on this store (schedulers that execute calls, in this
        process or any other), by start time: see :class:`WorkerInfo`."""
        return await self._engine.store.workers(self._engine.clock())

    def running(self) -> list[CallInfo]:
        """Calls running right now."""
        return self._engine.running.infos()

    def statistics(self) -> SchedulerStatistics:
        """Counters and time distributions per class (and in total) since start, with
        the limits in force now. A class's ``paused`` is as this scheduler last read
        the store (its own :meth:`pause`, :meth:`resume`, :meth:`paused` and
        :meth:`queue_lengths`, and every ``unknown_check_interval`` while it runs):
        a pause made elsewhere shows within that interval."""
        paused = self._engine.paused.names
        slots, bounds = self._engine.slots, self._engine.adaptive.bounds
        classes = {
            name: counters.snapshot(
                name,
                ceiling(bounds(name) or slots.limit(name)),
                slots.running(name),
                name in paused,
                current_limit=slots.limit(name),
            )
            for name, counters in self._engine.counters.items()
        }
        # Running means holding a slot (from its start until its last write, or until
        # an at-least-once success's completion is sent), the same count for each class
        # and in total.
        running = sum(c.running for c in classes.values())
        threads, processes = self._engine.executors.statistics()
        return total_statistics(
            classes,
            self.max_concurrent,
            running,
            slots.limit(None),
            threads=threads,
            processes=processes,
        )

    async def queue_lengths(self) -> dict[str, QueueLength]:
        """Per name in the store: pending calls, and how many are due (waiting for a slot).

        Registered classes are always present (with zeros); names no class matches
        appear too. Also reads the paused classes (for :meth:`statistics`).
        """
        lengths = await queue_lengths(
            self._engine.store, self._engine.registry, self._engine.clock()
        )
        await self._engine.paused.read()
        return lengths

    async def shutdown(self, grace_period: float | None = None) -> None:
        """Stop starting calls, give running ones ``grace_period`` s, then cancel them.

        Returns once every call task has ended. Calls that had not started stay in
        the store. Safe to call more than once and from several tasks; a later call
        with a shorter grace period shortens the grace (a longer one does not extend it).
        """
        if grace_period is not None:
            check_positive_seconds(grace_period, "grace_period")
        self._engine.request_shutdown(grace_period)
        await self._engine.done.wait()

    # -- internals --------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._engine.closed:
            raise SchedulerClosedError("the scheduler has shut down")

    def _registered(self, call_class: object) -> type[FutureCall]:
        if isinstance(call_class, str):
            # By name: the registered class (its payload type and priority apply).
            found = self._engine.registry.get(check_name(call_class))
            if found is None:
                raise UnregisteredCallError(
                    f"no class named {call_class!r} is registered with this scheduler"
                )
            return found
        cls = check_call_class(call_class)
        if self._engine.registry.get(cls.name) is not cls:
            raise UnregisteredCallError(
                f"{cls.__qualname__} (name {cls.name!r}) is not registered with this scheduler"
            )
        return cls


@asynccontextmanager
async def open_scheduler(
    store: Store,
    calls: Iterable[type[FutureCall]],
    *,
    options: SchedulerOptions | None = None,
    **keywords: Unpack[SchedulerKeywords],
) -> AsyncIterator[Scheduler]:
    """Run a scheduler over ``store`` for the ``calls`` classes while the block runs.

    The keywords are the fields of :class:`SchedulerOptions` (``options=`` gives a
    ready one; keywords given too override its fields):

    * ``max_concurrent``: the global limit on calls running at once. When not given,
      ``$TRIO_FUTURECALLS_MAX_CONCURRENT`` is read (a positive integer or
      ``unlimited``), and failing that it is :data:`DEFAULT_MAX_CONCURRENT` (100).
      ``None`` means unlimited (only the per-class limits apply); an
      :class:`Adaptive` is raised and lowered within its bounds as the scheduler runs
      (README, "Adaptive concurrency").
    * ``grace_period``: seconds running calls get at shutdown before being cancelled.
    * ``execute=False``: this node only schedules; it starts no calls.
    * ``clock``: returns the current aware datetime (tests pass one tied to Trio's clock).
    * ``unknown_check_interval``: seconds between checks for unknown call names.
    * ``default_delivery``: for classes whose ``delivery`` is None
      (``Delivery.AT_MOST_ONCE`` unless said otherwise).
    * ``lease_duration`` / ``lease_renew_interval``: for at-least-once calls, how long a
      claim leases a row (60 s) and how often running calls' leases are renewed (a
      third of it). A call whose lease cannot be renewed is cancelled before it
      expires; another worker may run it once it has.
    * ``worker_timeout``: a scheduler that executes calls registers in the store's
      workers registry and heartbeats every third of this (30 s); one not heard from
      for this long is dead (see :meth:`Scheduler.workers`).

    Leaving the block shuts down gracefully (see :meth:`Scheduler.shutdown`). A failure
    inside the scheduler is raised as :class:`SchedulerError`, never a raw group.
    """
    scheduler = Scheduler(store, calls, build_options(options, keywords))
    async with _serve(scheduler):
        yield scheduler


async def run_due_calls(
    store: Store,
    calls: Iterable[type[FutureCall]],
    *,
    options: SchedulerOptions | None = None,
    **keywords: Unpack[SchedulerKeywords],
) -> SchedulerStatistics:
    """Run-once ("maintenance") mode: run every call due now, wait for them, return.

    Calls due later than the moment this starts are left alone, as are calls of
    classes not in ``calls``. Takes the options of :func:`open_scheduler` (limits
    apply the same way). Returns the statistics of the run.
    """
    built = build_options(options, keywords)
    if not built.execute:
        raise InvalidArgumentError("run_due_calls runs calls: execute=False makes no sense here")
    scheduler = Scheduler(store, calls, built, run_until=built.clock())
    async with _serve(scheduler):
        await scheduler._engine.dispatcher.drained.wait()
    return scheduler.statistics()


@asynccontextmanager
async def _serve(scheduler: Scheduler) -> AsyncIterator[None]:
    """Run ``scheduler`` in a nursery around the block; unwrap errors for users."""
    store = scheduler.store
    if scheduler.options.execute and isinstance(store, PoolSizeCheck):
        # A store with a connection pool warns when it is too small for the limits.
        store.check_pool_size(scheduler.max_concurrent)
    body_exc: BaseException | None = None
    try:
        async with trio.open_nursery() as nursery:
            await nursery.start(scheduler._engine.run)
            try:
                yield
            except BaseException as exc:
                body_exc = exc
                raise
            finally:
                # Drain here, before an exception from the block reaches the nursery
                # (which would cancel the running calls at once instead of gracefully).
                scheduler._engine.request_shutdown(None)
                await scheduler._engine.done.wait()
    except BaseExceptionGroup as group:
        raise_unwrapped(group, body_exc, lambda e: SchedulerError(f"the scheduler failed: {e!r}"))

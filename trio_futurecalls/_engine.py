"""The scheduler's engine: its parts wired together, and the task tree that runs them
from start to graceful shutdown. :class:`Scheduler` (``_scheduler.py``) is the public
facade over it.

Layout of the tasks (all inside the nursery that :func:`open_scheduler` opens)::

    Engine.run
    └── keeper nursery ── LeaseKeeper.run (renews leases until every call has ended)
        │              └─ Presence.run   (registers, heartbeats; deregisters last)
        └── calls nursery ─── one Execution._run_call task per started call
            └── control nursery
                ├── Dispatcher.run          (once registered: claims due calls,
                │                            starts them, sleeps)
                ├── UnknownNamesReporter.run
                └── AdaptiveLimits.run      (idle unless a limit is adaptive)

The rooms, with arrows running one way: the facade → this engine → ``_dispatcher`` →
``_execution`` → (``_slots``, ``_running``, ``_stats``, ``_writes``, the store). A
freed slot reaches the dispatcher through ``_slots``' doorbell, never by a call back
up.
"""

from __future__ import annotations

import logging
import os
import socket
import uuid
from collections.abc import Iterable
from datetime import datetime

import trio

from ._adaptive import start_limit
from ._adaptive_limits import AdaptiveLimits
from ._call import FutureCall, build_registry
from ._cancels import CancelWatcher
from ._cluster import publish_until_done, wanted_limits
from ._controls import PausedClasses
from ._dispatcher import Dispatcher
from ._execution import Execution
from ._executors import Executors, process_workers
from ._leases import LeaseKeeper
from ._options import SchedulerOptions
from ._outcome import CallPolicy
from ._presence import Presence, worker_limits
from ._recurring import RecurringTicker
from ._running import RunningCalls
from ._slots import Slots
from ._stats import ClassCounters
from ._store import ListensOnDemand, Store
from ._unknown_names import UnknownNamesReporter
from ._validate import check_positive_seconds
from ._writes import CallWrites

_log = logging.getLogger("trio_futurecalls.scheduler")


class Engine:
    """The parts of one scheduler and the tasks that run them (see the module's
    comment). Its attributes are read by the facade; nothing else holds it."""

    def __init__(
        self,
        store: Store,
        calls: Iterable[type[FutureCall]],
        options: SchedulerOptions,
        *,
        run_until: datetime | None = None,
    ) -> None:
        self.store = store
        self.registry = build_registry(calls)
        self.options = options
        self.clock = options.clock
        self.grace = options.grace_period
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:12]}"
        self.policies = {
            name: CallPolicy.resolve(cls, options.default_delivery)
            for name, cls in self.registry.items()
        }
        self.counters = {name: ClassCounters() for name in self.registry}
        limits = {name: cls.max_concurrent for name, cls in self.registry.items()}
        self.slots = Slots(
            start_limit(options.max_concurrent),
            {name: start_limit(limit) for name, limit in limits.items()},
            ring_on_every_release=run_until is not None,
        )
        # Raises and lowers the adaptive limits (if any) from what the calls show.
        self.adaptive = AdaptiveLimits(self.slots, options.max_concurrent, limits)
        self.running = RunningCalls()
        self.executors = Executors(options.max_threads, options.max_processes)
        #: Worker processes the PROCESS classes may use at once, started with the
        #: scheduler (to_process alone starts its workers on first use).
        self.process_workers = process_workers(self.registry.values(), options.max_processes)
        self.execution = execution = Execution(
            store=store,
            clock=self.clock,
            slots=self.slots,
            running=self.running,
            policies=self.policies,
            counters=self.counters,
            writes=CallWrites(store, self.owner, self.clock),
            executors=self.executors,
        )
        self.dispatcher = Dispatcher(
            store=store,
            slots=self.slots,
            execution=execution,
            options=options,
            owner=self.owner,
            run_until=run_until,
        )
        # Also without at-least-once classes: it keeps the records of running
        # at-most-once prerequisites alive, and ends those other workers abandoned.
        self.lease_keeper = (
            LeaseKeeper(store, self.owner, self.running, options) if options.execute else None
        )
        # Stops running calls that cancel requests name (only where calls run).
        self.cancels = CancelWatcher(store, self.owner, self.running, self.clock)
        if options.execute:
            execution.cancels = self.cancels
        self.observe_if_adaptive()
        # Only a scheduler that executes calls registers (see _run).
        self.presence = Presence(
            store,
            self.owner,
            options,
            running=self.running.__len__,
            limits=worker_limits(
                options.max_concurrent,
                {n: (limits[n], self.policies[n].delivery) for n in self.registry},
            ),
        )
        # A lapse (this worker may have been declared dead): another worker may have
        # the cluster-wide slots of its calls now, so those calls stop.
        self.presence.on_lapse(self.running.lose_slots)
        self.dispatcher.presence = self.presence
        self.ticker = RecurringTicker(
            store,
            self.clock,
            [name for name, policy in self.policies.items() if not policy.leased],
        )
        self.run_until = run_until
        self.unknown = UnknownNamesReporter(
            store, self.registry.keys(), options.unknown_check_interval, self.clock
        )
        self.paused = PausedClasses(store, self.clock)
        self.shutdown_requested = trio.Event()
        #: The calls nursery's scope once shutdown began (its deadline ends the grace).
        self.calls_scope: trio.CancelScope | None = None
        self.done = trio.Event()
        self.closed = False

    def observe_if_adaptive(self) -> None:
        """Calls report their run times only while some limit is adaptive (the hot
        path pays nothing otherwise)."""
        adaptive = self.adaptive
        self.execution.observe = adaptive.observe if adaptive.active else None

    def request_shutdown(self, grace_period: float | None) -> None:
        grace = (
            None if grace_period is None else check_positive_seconds(grace_period, "grace_period")
        )
        if self.shutdown_requested.is_set():
            # Asked again with a shorter grace: it applies (a second Ctrl-C, say).
            scope = self.calls_scope
            if grace is not None and scope is not None:
                scope.deadline = min(scope.deadline, trio.current_time() + grace)
            return
        if grace is not None:
            self.grace = grace
        self.closed = True
        self.execution.closing = True
        self.shutdown_requested.set()

    async def _dispatch(self, calls: trio.Nursery) -> None:
        """Record this scheduler's cluster-wide limits, then dispatch (no call starts
        before every limit it sets holds)."""
        wanted = wanted_limits(
            self.registry, self.options.cluster_max_concurrent, self.clock(), self.owner
        )
        await publish_until_done(self.store, wanted)
        await self.dispatcher.run(calls)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        # Only a scheduler that runs calls listens for wake-ups: one that only
        # schedules leaves the store without a LISTEN connection or watcher.
        remove_listener = (
            self.store.add_listener(self.slots.doorbell.on_scheduled)
            if self.options.execute
            else _nothing
        )
        try:
            if self.options.execute and isinstance(self.store, ListensOnDemand):
                # The store's watcher starts with the first listener: wait for it, so
                # that no call scheduled elsewhere from now on goes unheard.
                await self.store.wait_listening()
            # The lease keeper outlives the calls nursery: leases are renewed through
            # the grace period, and stop only once every call has ended. The worker
            # processes (if any started) outlive them all.
            async with self.executors.open(), trio.open_nursery() as keeper:
                if self.lease_keeper is not None:
                    keeper.start_soon(self.lease_keeper.run, name="futurecalls-leases")
                if self.options.execute:
                    # Through the grace period too: a call may be cancelled then.
                    await keeper.start(self.cancels.run, name="futurecalls-cancels")
                    # Registered before anything is claimed; deregistered when the
                    # keeper nursery is cancelled, once every call has ended.
                    await keeper.start(self.presence.run, name="futurecalls-presence")
                    if self.process_workers:
                        keeper.start_soon(
                            self.executors.start_processes,
                            self.process_workers,
                            name="futurecalls-processes",
                        )
                async with trio.open_nursery() as calls:
                    async with trio.open_nursery() as control:
                        if self.options.execute:
                            if self.run_until is not None:
                                # Run-once: the ticks due by then become calls first.
                                await self.ticker.fire_once(self.run_until)
                                # And the records stopped workers left to expire end:
                                # a run shorter than a renewal interval never gets to
                                # a round of the lease keeper.
                                if self.lease_keeper is not None:
                                    await self.lease_keeper.end_abandoned()
                            else:
                                control.start_soon(self.ticker.run, name="futurecalls-recurring")
                            control.start_soon(
                                self.presence.after_registered,
                                self._dispatch,
                                calls,
                                name="futurecalls-dispatcher",
                            )
                            control.start_soon(self.unknown.run, name="futurecalls-unknown")
                            # Idle unless a limit is adaptive (or set_limit makes one).
                            control.start_soon(self.adaptive.run, name="futurecalls-adaptive")
                            control.start_soon(
                                self.paused.run,
                                self.options.unknown_check_interval,
                                name="futurecalls-paused",
                            )
                        task_status.started()
                        await self.shutdown_requested.wait()
                        # The grace period starts now, even if the dispatcher needs a
                        # moment to finish a claim in flight.
                        calls.cancel_scope.deadline = trio.current_time() + self.grace
                        self.calls_scope = calls.cancel_scope
                        control.cancel_scope.cancel()
                    # Dispatching has stopped: nothing new starts. Running calls get the
                    # grace period, then the deadline cancels them through their scopes.
                    if self.running:
                        _log.info(
                            "shutting down: waiting up to %.3g s for %d running call(s)",
                            self.grace,
                            len(self.running),
                        )
                keeper.cancel_scope.cancel()
        finally:
            remove_listener()
            self.closed = True
            self.done.set()


def _nothing() -> None:
    """What removes no listener."""

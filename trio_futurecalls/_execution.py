"""The life of one call, from claimed row to outcome, in its own task.

:meth:`Execution.start` takes the call's limiter tokens and starts its task; the task
decodes the payload, opens the call's own session, runs ``invoke`` in the call's own
cancel scope (deadline: the class's ``timeout``; cancelled by the lease keeper when
the lease is lost), finds the :class:`Outcome`, lets :func:`decide` choose the
:class:`Action`, has ``_writes.py`` carry it out, counts it, and gives the tokens back.

Structurally safe: the task's first statement is the ``try`` whose ``finally`` gives
the tokens back; whatever ``invoke`` raises (exception groups included) is that call's
failure, never the scheduler's; a call that never reached ``invoke`` (claimed as
shutdown began, or cancelled before it could start) is handed back to the store.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence, Set
from datetime import datetime, timedelta

import trio

from ._call_end_log import log_call_end, log_lost
from ._calllog import call_fields, error_text
from ._cancels import CancelWatcher
from ._executors import Executor, Executors, fails_for_good
from ._model import CallInfo, StoredCall
from ._options import Clock
from ._outcome import Action, CallPolicy, Outcome, decide, is_abandoned
from ._payload import decode_payload
from ._retry import backoff_delay
from ._running import RunningCall, RunningCalls
from ._slots import Slots, Ticket
from ._stats import ClassCounters
from ._store import Store
from ._writes import CallWrites
from .stores._dependencies import CANCELLED

_log = logging.getLogger("trio_futurecalls.call")


class Execution:
    """Starts and runs calls for one scheduler."""

    def __init__(
        self,
        *,
        store: Store,
        clock: Clock,
        slots: Slots,
        running: RunningCalls,
        policies: Mapping[str, CallPolicy],
        counters: Mapping[str, ClassCounters],
        writes: CallWrites,
        executors: Executors,
    ) -> None:
        self._store = store
        self._clock = clock
        self._slots = slots
        self._running = running
        self._policies = policies
        self._counters = counters
        self._writes = writes
        self._executors = executors
        #: Names whose rows this scheduler's claims lease (at-least-once classes).
        self.leased_names = frozenset(name for name, p in policies.items() if p.leased)
        #: Set when shutdown begins: calls claimed from then on are handed back.
        self.closing = False
        #: Stops runs that cancel requests name (set when the scheduler executes).
        self.cancels: CancelWatcher | None = None
        #: Calls whose outcome is settled that still hold their slots, waiting only for
        #: their abandoned threads to end (run-once mode waits for them a grace period).
        self.lingering = 0
        #: Calls that ended and are writing their outcome (a completion, a retry...)
        #: while they hold their slots: the dispatcher waits for these slots rather
        #: than claim for fewer (see ``Dispatcher.run``).
        self.writing = 0
        #: Told each call's run time and outcome (set while any limit is adaptive).
        self.observe: Callable[[str, float, Outcome], None] | None = None

    def start(
        self,
        nursery: trio.Nursery,
        call: StoredCall,
        lease_expires_at: datetime | None,
        holds_token: bool = False,
        claimed_at: datetime | None = None,
    ) -> None:
        """Take ``call``'s tokens (counted free before its claim) and start its task.

        ``claimed_at`` (the claim's time) is the call's start time: the moment its row
        was taken (a rate limit's windows count these); without it, the task's start.

        The dispatcher starts only calls that fit the slots it counted (see
        ``fit_to_slots``), so the class is registered and the tokens are free.
        """
        policy = self._policies[call.name]
        if holds_token:
            self._writes.holds_again(call.id)
        ticket = self._slots.take(call.name)
        try:
            nursery.start_soon(
                self._run_call, call, policy, ticket, lease_expires_at, holds_token, claimed_at
            )
        except BaseException:
            self._slots.give_back(ticket)
            raise

    async def hand_back(self, calls: Sequence[StoredCall], holding: Set[int] = frozenset()) -> None:
        """Give claimed calls that will not start back to the store (shielded), and
        the cluster-wide tokens of those in ``holding``. A call a cancel request named
        (its claim raced the request) is not given back: it would run again."""
        watcher = self.cancels
        named = (
            [c for c in calls if watcher.names(c, c.name in self.leased_names)]
            if watcher is not None
            else []
        )
        await self._writes.hand_back([c for c in calls if c not in named], self.leased_names)
        for call in named:
            _log.warning(
                "call %s (id=%d) was cancelled on request before it started; it is not run again",
                call.name,
                call.id,
                extra=call_fields(call),
            )
            if call.dependents and call.name not in self.leased_names:
                await self._writes.prerequisite_ended(call, CANCELLED)
        held = [c for c in calls if c.id in holding]
        if held:
            await self._writes.free_tokens(held)

    async def _run_call(
        self,
        call: StoredCall,
        policy: CallPolicy,
        ticket: Ticket,
        lease_expires_at: datetime | None,
        holds_token: bool,
        claimed_at: datetime | None,
    ) -> None:
        # The first statement is the try whose finally gives the tokens back: nothing
        # that follows can leak them. (One function, not several: this is the hot path.)
        given_back = False
        try:
            if self.closing:
                # Claimed while shutdown began: it has not started, so it goes back.
                if holds_token:
                    self._writes.run_ended(call.id)
                await self.hand_back([call], {call.id} if holds_token else frozenset())
                return
            counters = self._counters[call.name]
            started_wall = self._clock() if claimed_at is None else claimed_at
            started = trio.current_time()
            running = RunningCall(
                CallInfo(
                    id=call.id,
                    name=call.name,
                    identifier=call.identifier,
                    due_at=call.due_at,
                    scheduled_at=call.scheduled_at,
                    started_at=started_wall,
                    attempt=call.attempts,
                    recurring_key=call.recurring_key,
                    tick_at=call.tick_at,
                ),
                trio.CancelScope(),
                policy.leased,
                lease_expires_at if policy.leased else None,
            )
            if call.dependents and not policy.leased:
                # Recorded as a started prerequisite by its claim, until the claim's
                # lease expiry: the lease keeper renews that record while it runs.
                running.record_expires_at = lease_expires_at
            running.holds_token = holds_token
            self._running.add(running)
            if self.cancels is not None:
                self.cancels.started(running)  # a claim that raced a cancel request
            # Counted started now (statistics add up while it runs: started = finished
            # + running); taken back below if it is handed back without starting.
            counters.started += 1
            outcome = Outcome.INTERRUPTED
            try:
                outcome, error = await self._attempt(call, policy, running, counters)
                if outcome is not Outcome.SUCCEEDED or policy.leased:
                    action = decide(outcome, call.attempts, policy)
                    if (
                        action is Action.COMPLETE
                        and not holds_token
                        and not running.threads
                        and not call.dependents
                    ):
                        # Its work is done and its row stays leased until the
                        # completion commits (a crash meanwhile runs it again): the
                        # slots go back now, so the next claim overlaps this write.
                        given_back = True
                        self._slots.give_back(ticket)
                        await self._writes.complete(call)
                    elif action is not Action.FORGET:
                        self.writing += 1
                        try:
                            await self._act(call, policy, counters, action, error, running)
                        finally:
                            self.writing -= 1
                elif call.dependents:  # at-most-once: its row is gone, say it succeeded
                    await self._writes.prerequisite_ended(call, None)
            finally:
                # Runs on cancellation too (Cancelled is never swallowed here).
                self._running.remove(running)
                running.ended = True
                if outcome is Outcome.INTERRUPTED and running.cancel_requested:
                    # Shutdown and a cancel request together: the request wins (the
                    # call is not handed back nor released: it was cancelled).
                    outcome = Outcome.CANCELLED
                if outcome is Outcome.INTERRUPTED and not running.invoked:
                    await self._not_started(call, counters)
                else:
                    if not running.invoked:  # ended before invoke (a bad payload...)
                        counters.wait.add((started_wall - call.due_at).total_seconds())
                    elapsed = trio.current_time() - started
                    counters.run.add(elapsed)
                    if self.observe is not None:  # adaptive limits learn from it
                        self.observe(call.name, elapsed, outcome)
                    if outcome is Outcome.SUCCEEDED:
                        counters.succeeded += 1
                    else:
                        counters.count_end(outcome.counter)
                    log_call_end(call, outcome, elapsed)
                    if outcome is Outcome.INTERRUPTED and not running.lost:
                        await self._interrupted(call, policy, started)
                    elif outcome is Outcome.CANCELLED:
                        await self._cancelled(call, policy, started)
                if running.threads:
                    # A thread it started was abandoned (it cannot be interrupted):
                    # the call's slots stay taken until the thread ends, so that no
                    # limit is exceeded. (Shutdown's deadline ends this wait.)
                    self.lingering += 1
                    self._slots.doorbell.ring()  # run-once mode counts it (Dispatcher)
                    try:
                        await running.threads_ended()
                    finally:
                        self.lingering -= 1
                if holds_token:  # its cluster-wide slot, once its own writes are done
                    self._writes.run_ended(call.id)
                    await self._writes.free_tokens([call])
        finally:
            if not given_back:
                self._slots.give_back(ticket)

    async def _not_started(self, call: StoredCall, counters: ClassCounters) -> None:
        """Cancelled before invoke began (the grace ran out while it waited for its
        session): it never started, so it goes back, whatever the delivery mode, and
        counts for nothing."""
        _log.warning(
            "call %s (id=%d) could not start before shutdown; it goes back",
            call.name,
            call.id,
            extra=call_fields(call),
        )
        try:
            await self.hand_back([call])
        finally:
            counters.started -= 1

    async def _interrupted(self, call: StoredCall, policy: CallPolicy, started: float) -> None:
        """Shutdown (or an outer cancel) stopped the call during invoke: release its
        lease at once (at-least-once); an at-most-once call is not run again: lost."""
        if not policy.leased:
            log_lost(call, trio.current_time() - started)
        else:
            _log.warning(
                "call %s (id=%d) was cancelled after %.3f s; it runs again",
                call.name,
                call.id,
                trio.current_time() - started,
                extra=call_fields(call),
            )
        if policy.leased:
            await self._writes.release(call)
        elif call.dependents:
            await self._writes.prerequisite_ended(
                call, "it was interrupted (at-most-once: it is not run again)"
            )

    async def _cancelled(self, call: StoredCall, policy: CallPolicy, started: float) -> None:
        """A cancel request stopped the call (``_cancels.py``): it is not run again. A
        leased row went with the request; the dependents of an at-most-once call end
        now."""
        _log.warning(
            "call %s (id=%d) was cancelled on request after %.3f s; it is not run again",
            call.name,
            call.id,
            trio.current_time() - started,
            extra=call_fields(call),
        )
        if call.dependents and not policy.leased:
            await self._writes.prerequisite_ended(call, CANCELLED)

    async def _attempt(
        self, call: StoredCall, policy: CallPolicy, running: RunningCall, counters: ClassCounters
    ) -> tuple[Outcome, str]:
        """Run one attempt; return how it ended and the error text (if it failed)."""
        if policy.leased and is_abandoned(call.attempts, policy):
            # Claimed again after its lease expired on the last allowed attempt: give
            # up rather than let a call that kills its worker loop forever.
            return Outcome.ABANDONED, (
                f"lease expired during attempt {call.attempts - 1} of {policy.max_attempts} "
                "(the worker running it died, hung or lost the database)"
            )
        cls = policy.cls
        try:
            payload = decode_payload(cls.payload_type, call.payload)
        except Exception as exc:  # whatever a hostile payload makes decoding raise
            return Outcome.UNDECODABLE, str(exc) or repr(exc)
        failure: BaseException | None = None
        # One scope per call: its deadline is the class's timeout (if any), and the
        # lease keeper cancels it when the lease is lost. The try is outside the
        # scope, so that what the scope lets through (a group left once it took its
        # own Cancelled out) is caught too.
        if cls.timeout is not None:
            running.scope.deadline = trio.current_time() + cls.timeout
        try:
            with running.scope:
                instance = cls(running.info)
                instance._executors = self._executors
                instance._running = running
                info = running.info
                if cls.executor is Executor.TASK:
                    async with self._store.open_session(call) as session:
                        running.invoked = True
                        counters.wait.add((info.started_at - info.due_at).total_seconds())
                        await instance.invoke(session, payload)
                else:
                    # No session: it cannot cross into the thread or process. It starts
                    # when its thread or worker process does: until then (waiting for
                    # a free one) it has not, and shutdown hands it back.
                    def begin() -> None:
                        running.invoked = True
                        counters.wait.add((info.started_at - info.due_at).total_seconds())

                    if cls.executor is Executor.THREAD:
                        await self._executors.in_thread(
                            running, instance.run, payload, on_start=begin
                        )
                    else:
                        await self._executors.run_in_process(cls, info, call.payload, begin)
        except Exception as exc:  # exception groups of errors included
            failure = exc
        except BaseExceptionGroup as group:
            # Someone else's cancellation (shutdown) mixed with the call's own errors:
            # log the errors, let the cancellation through. A KeyboardInterrupt or
            # SystemExit among them is not ours to handle: the whole group goes on.
            cancelled, rest = group.split(trio.Cancelled)
            errors, others = rest.split(Exception) if rest is not None else (None, None)
            if cancelled is None or others is not None:
                raise
            if errors is not None:
                _log.error(
                    "call %s (id=%d) failed while being cancelled",
                    call.name,
                    call.id,
                    exc_info=errors,
                    extra=call_fields(call),
                )
            raise cancelled from None
        finally:
            running.settled = True  # (no checkpoint from here to the outcome)
        if running.cancel_requested and (running.scope.cancelled_caught or failure is not None):
            # Cancelled on request (whatever it raised while stopping). One that
            # returned before the cancel reached it succeeded (below).
            return Outcome.CANCELLED, ""
        if running.lost:
            # The lease keeper gave the lease up (it cancelled the call; the call may
            # have ended before or despite that). The row is no longer this run's to
            # write: another worker, or a newer run here under the same owner id, may
            # hold it now. So nothing is written; the call runs again if need be.
            _log.error(
                "call %s (id=%d) %s and was cancelled; %s",
                call.name,
                call.id,
                "lost its cluster-wide slot (this worker may have been declared dead)"
                if running.slot_lost
                else "lost its lease",
                "it is not run again (at-most-once)"
                if running.slot_lost and not policy.leased
                else "another worker may run it",
                extra=call_fields(call),
            )
            return Outcome.LEASE_LOST, ""
        if running.scope.cancelled_caught:
            error = f"timed out after {cls.timeout} s (attempt {call.attempts})"
            if failure is not None:
                error = f"{error}; while stopping, it raised:\n{error_text(failure)}"
            _log.error(
                "call %s (id=%d, identifier=%r, due %s) %s",
                call.name,
                call.id,
                call.identifier,
                call.due_at.isoformat(),
                error,
                extra=call_fields(call),
            )
            return Outcome.TIMED_OUT, error
        if failure is None:
            return Outcome.SUCCEEDED, ""
        _log.error(
            "call %s (id=%d, identifier=%r, due %s) failed on attempt %d of %d",
            call.name,
            call.id,
            call.identifier,
            call.due_at.isoformat(),
            call.attempts,
            policy.max_attempts,
            exc_info=failure,
            extra=call_fields(call),
        )
        if fails_for_good(failure, cls.no_retry_on):
            return Outcome.FAILED_FOR_GOOD, error_text(failure)
        return Outcome.FAILED, error_text(failure)

    async def _act(
        self,
        call: StoredCall,
        policy: CallPolicy,
        counters: ClassCounters,
        action: Action,
        error: str,
        running: RunningCall,
    ) -> None:
        """Carry out the ``action`` :func:`decide` chose (INTERRUPTED is handled by
        :meth:`_interrupted` instead)."""
        if action is Action.COMPLETE:
            await self._writes.complete(call)
        elif action is Action.RETRY:
            cls = policy.cls
            try:
                delay = backoff_delay(
                    cls.retry_backoff, call.attempts, f"{cls.__qualname__}.retry_backoff"
                )
                due_at = self._clock() + timedelta(seconds=delay)
            except Exception as exc:
                _log.exception(
                    "retry_backoff of %s failed", cls.__qualname__, extra=call_fields(call)
                )
                error = f"{error}\n(retry_backoff failed: {exc!r})"
            else:
                if not policy.leased and running.cancel_requested:
                    # A cancel request came after the attempt ended (its retry is not
                    # stored yet): it is not run again, and its dependents end.
                    if call.dependents:
                        await self._writes.prerequisite_ended(call, CANCELLED)
                    return
                if await self._writes.retry(call, due_at, policy.leased):
                    if not policy.leased and running.cancel_requested:
                        # The request came while the retry was being stored (its
                        # watcher counted this run): the row put back goes now.
                        await self._writes.cancel_pending(call)
                        return
                    counters.retried += 1
                    _log.warning(
                        "call %s (id=%d) will be retried in %.3f s (attempt %d of %d)",
                        call.name,
                        call.id,
                        delay,
                        call.attempts + 1,
                        policy.max_attempts,
                        extra=call_fields(call),
                    )
                return
            await self._dead_letter(call, policy, counters, error)
        elif action is Action.DEAD_LETTER:
            await self._dead_letter(call, policy, counters, error)

    async def _dead_letter(
        self, call: StoredCall, policy: CallPolicy, counters: ClassCounters, error: str
    ) -> None:
        if await self._writes.dead_letter(call, error, policy.leased):
            counters.dead_lettered += 1

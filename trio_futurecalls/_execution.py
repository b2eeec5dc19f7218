"""The life of one call, from claimed row to outcome, in its own task.

:meth:`Execution.start` takes the call's limiter tokens and starts its task; the task
decodes the payload, opens the call's own session, runs ``invoke`` in the call's own
cancel scope (deadline: the class's ``timeout``; cancelled by the lease keeper when
the lease is lost), finds the :class:`Outcome`, lets :func:`decide` choose the
:class:`Action`, has ``_writes.py`` carry it out, counts it, and gives the tokens back.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import datetime, timedelta

import trio

from ._calllog import call_fields, error_text
from ._errors import PayloadDecodeError
from ._model import CallInfo, StoredCall
from ._options import Clock
from ._outcome import Action, CallPolicy, Outcome, decide, is_abandoned
from ._payload import decode_payload
from ._retry import backoff_delay
from ._running import RunningCall, RunningCalls
from ._slots import Slots
from ._stats import ClassCounters
from ._store import Store
from ._writes import CallWrites

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
    ) -> None:
        self._store = store
        self._clock = clock
        self._slots = slots
        self._running = running
        self._policies = policies
        self._counters = counters
        self._writes = writes

    def start(
        self, nursery: trio.Nursery, call: StoredCall, lease_expires_at: datetime | None
    ) -> None:
        """Take ``call``'s tokens (counted free before its claim) and start its task."""
        token = self._slots.take(call.name)
        nursery.start_soon(self._run_call, call, token, lease_expires_at)

    async def _run_call(
        self, call: StoredCall, token: object, lease_expires_at: datetime | None
    ) -> None:
        policy = self._policies[call.name]
        counters = self._counters[call.name]
        started_wall = self._clock()
        started = trio.current_time()
        info = CallInfo(
            id=call.id,
            name=call.name,
            identifier=call.identifier,
            due_at=call.due_at,
            scheduled_at=call.scheduled_at,
            started_at=started_wall,
            attempt=call.attempts,
        )
        counters.started += 1
        counters.wait.add((started_wall - call.due_at).total_seconds())
        running = RunningCall(
            info, trio.CancelScope(), policy.leased, lease_expires_at if policy.leased else None
        )
        self._running.add(running)
        outcome = Outcome.INTERRUPTED
        try:
            outcome, error = await self._attempt(call, policy, running)
            await self._act(call, policy, counters, outcome, error)
        finally:
            # Runs on cancellation too (Cancelled is never swallowed here).
            self._running.remove(running)
            counters.run.add(trio.current_time() - started)
            counters.count_end(outcome.counter)
            if outcome is Outcome.INTERRUPTED and not running.lost:
                _log.warning(
                    "call %s (id=%d) was cancelled after %.3f s",
                    call.name,
                    call.id,
                    trio.current_time() - started,
                    extra=call_fields(call),
                )
                if policy.leased:
                    await self._writes.release(call)
            self._slots.give_back(call.name, token)

    async def _attempt(
        self, call: StoredCall, policy: CallPolicy, running: RunningCall
    ) -> tuple[Outcome, str]:
        """Run one attempt; return how it ended and the error text (if it failed)."""
        if is_abandoned(call.attempts, policy):
            # Claimed again after its lease expired on the last allowed attempt: give
            # up rather than let a call that kills its worker loop forever.
            return Outcome.ABANDONED, (
                f"lease expired during attempt {call.attempts - 1} of {policy.max_attempts} "
                "(the worker running it died, hung or lost the database)"
            )
        cls = policy.cls
        try:
            payload = decode_payload(cls.payload_type, call.payload)
        except PayloadDecodeError as exc:
            return Outcome.UNDECODABLE, str(exc)
        failure: BaseException | None = None
        # One scope per call: its deadline is the class's timeout (if any), and the
        # lease keeper cancels it when the lease is lost.
        if cls.timeout is not None:
            running.scope.deadline = trio.current_time() + cls.timeout
        with running.scope:
            try:
                instance = cls(running.info)
                async with self._store.open_session(call) as session:
                    await instance.invoke(session, payload)
            except Exception as exc:
                failure = exc
        if running.lost and running.scope.cancelled_caught:
            _log.error(
                "call %s (id=%d) lost its lease and was cancelled; another worker may run it",
                call.name,
                call.id,
                extra=call_fields(call),
            )
            return Outcome.LEASE_LOST, ""
        if running.scope.cancelled_caught:
            error = f"timed out after {cls.timeout} s (attempt {call.attempts})"
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
        if isinstance(failure, cls.no_retry_on):
            return Outcome.FAILED_FOR_GOOD, error_text(failure)
        return Outcome.FAILED, error_text(failure)

    async def _act(
        self,
        call: StoredCall,
        policy: CallPolicy,
        counters: ClassCounters,
        outcome: Outcome,
        error: str,
    ) -> None:
        """Carry out what :func:`decide` says for ``outcome`` (not for INTERRUPTED,
        which the caller handles in its ``finally``)."""
        action = decide(outcome, call.attempts, policy)
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
                _log.exception("retry_backoff of %s failed", cls.__qualname__)
                error = f"{error}\n(retry_backoff failed: {exc!r})"
            else:
                if await self._writes.retry(call, due_at, policy.leased):
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

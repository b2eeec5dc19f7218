"""Store writes after a call's attempt: complete, retry, dead letter, release.

Each write is shielded from cancellation (shutdown must not interrupt it half-way)
and bounded in time (:data:`CLEANUP_TIMEOUT`); a write that fails is logged, never
raised, so one call's cleanup cannot take the scheduler down.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any, Final, TypeVar

import trio

from ._calllog import call_fields
from ._errors import FutureCallsError
from ._model import NewCall, StoredCall
from ._options import Clock
from ._store import Store

#: Longest a store write after a call (complete, release, retry, dead letter) may take,
#: shielded from cancellation so that shutdown cannot interrupt it half-way.
CLEANUP_TIMEOUT: Final = 10.0

T = TypeVar("T")

_log = logging.getLogger("trio_futurecalls.call.writes")


class CallWrites:
    """Carries out what :func:`decide` chose, on behalf of one scheduler (``owner``)."""

    def __init__(self, store: Store, owner: str, clock: Clock) -> None:
        self._store = store
        self._owner = owner
        self._clock = clock

    async def _write(
        self, call: StoredCall, what: str, fn: Callable[..., Awaitable[T]], *args: Any, **kw: Any
    ) -> T | None:
        """One write, shielded and bounded; None when it failed (and was logged)."""
        with trio.move_on_after(CLEANUP_TIMEOUT, shield=True) as scope:
            try:
                return await fn(*args, **kw)
            except Exception as exc:
                # A store failure here must not take the scheduler down with it.
                _log.error(
                    "call %s (id=%d): could not %s: %r",
                    call.name,
                    call.id,
                    what,
                    exc,
                    exc_info=not isinstance(exc, FutureCallsError),
                    extra=call_fields(call),
                )
                return None
        if scope.cancelled_caught:
            _log.error(
                "call %s (id=%d): could not %s within %s s",
                call.name,
                call.id,
                what,
                CLEANUP_TIMEOUT,
                extra=call_fields(call),
            )
        return None

    async def complete(self, call: StoredCall) -> None:
        """Delete the leased row of a call that succeeded."""
        done = await self._write(
            call, "delete the finished call", self._store.complete, self._owner, call.id
        )
        if done is False:
            _log.warning(
                "call %s (id=%d) finished after its lease was lost; it may run again",
                call.name,
                call.id,
                extra=call_fields(call),
            )

    async def release(self, call: StoredCall) -> None:
        """Hand an interrupted leased call back now, its attempt refunded, rather than
        make other workers wait for the lease to expire."""
        await self._write(
            call,
            "release",
            self._store.release,
            self._owner,
            call.id,
            self._clock(),
            refund_attempt=True,
        )

    async def retry(self, call: StoredCall, due_at: datetime, leased: bool) -> bool:
        """Store the call again, due at ``due_at``; True if it was stored."""
        if leased:
            done = await self._write(
                call, "schedule the retry", self._store.release, self._owner, call.id, due_at
            )
            return bool(done)
        # The row went when the call started: store the retry as a new row.
        retry = NewCall(
            name=call.name,
            payload=call.payload,
            due_at=due_at,
            identifier=call.identifier,
            scheduled_at=call.scheduled_at,
            attempts=call.attempts,
        )
        ids = await self._write(call, "schedule the retry", self._store.schedule, [retry])
        if ids is None:
            _log.critical(
                "call %s (id=%d) lost: its retry could not be stored; payload was %s",
                call.name,
                call.id,
                call.payload,
                extra=call_fields(call),
            )
            return False
        return True

    async def dead_letter(self, call: StoredCall, error: str, leased: bool) -> bool:
        """Keep the call as a dead letter with ``error``; True if it was kept."""
        _log.error(
            "call %s (id=%d) moved to dead letters: %s",
            call.name,
            call.id,
            error.splitlines()[-1] if error else error,
            extra=call_fields(call),
        )
        owner = self._owner if leased else None
        answer = await self._write(
            call, "keep it as a dead letter", self._keep_dead, call, error, owner
        )
        if answer is not None:
            _, dead_id = answer
            if dead_id is not None:
                return True
            _log.warning(
                "call %s (id=%d) not kept as a dead letter: its lease was lost and "
                "another worker has it",
                call.name,
                call.id,
                extra=call_fields(call),
            )
        elif owner is None:
            # Last resort: the row is already gone, so put everything in the log.
            _log.critical(
                "call %s (id=%d) lost: could not keep it as a dead letter; payload was %s",
                call.name,
                call.id,
                call.payload,
                extra=call_fields(call),
            )
        # (Leased and the store failed: the row stays leased, and the call runs again
        # after the lease expires.)
        return False

    async def _keep_dead(
        self, call: StoredCall, error: str, owner: str | None
    ) -> tuple[bool, int | None]:
        """(the store answered, the dead letter's id or None if the lease was lost)."""
        return True, await self._store.dead_letter(call, error, self._clock(), owner)

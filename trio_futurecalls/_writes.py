"""Store writes after a call's attempt: complete, retry, dead letter, release, hand back.

Each write is shielded from cancellation (shutdown must not interrupt it half-way)
and bounded in time (:data:`CLEANUP_TIMEOUT`); within that budget a write that finds
the store unavailable is tried again with backoff. A write that still fails is
logged, never raised, so one call's cleanup cannot take the scheduler down. Retries
cannot run a call twice: every write either acts only on a row this scheduler owns,
or puts a call back under its own id (``Store.put_back``), which a second time does
nothing. (A dead letter written without a lease may be kept twice if an answer was
lost on the way: a duplicate, never a lost call.) A run whose lease was given up
writes nothing at all (see ``_execution.py``).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence, Set
from datetime import datetime
from typing import Any, Final, TypeVar

import attrs
import trio

from ._calllog import call_fields
from ._errors import FutureCallsError, StoreUnavailableError
from ._model import StoredCall
from ._options import Clock
from ._store import Store

#: Longest a store write after a call (complete, release, retry, dead letter) may take,
#: retries included, shielded from cancellation so that shutdown cannot interrupt it.
CLEANUP_TIMEOUT: Final = 10.0
#: First pause before a write is tried again (it doubles, up to MAX_WRITE_BACKOFF).
FIRST_WRITE_BACKOFF: Final = 0.05
MAX_WRITE_BACKOFF: Final = 2.0

T = TypeVar("T")

_log = logging.getLogger("trio_futurecalls.call.writes")


class CallWrites:
    """Carries out what :func:`decide` chose, on behalf of one scheduler (``owner``)."""

    def __init__(self, store: Store, owner: str, clock: Clock) -> None:
        self._store = store
        self._owner = owner
        self._clock = clock
        #: Calls whose cluster-wide concurrency token could not be freed: tried again
        #: with the next one (and freed with every token of this worker when it
        #: deregisters, or when it dies).
        self._unfreed: set[int] = set()
        #: Runs here holding a token, per call id: two runs of one call may (an
        #: earlier run whose abandoned thread still runs, and its retry).
        self._holders: dict[int, int] = {}

    async def _write(
        self, call: StoredCall, what: str, fn: Callable[..., Awaitable[T]], *args: Any, **kw: Any
    ) -> T | None:
        """One write, shielded, retried while the store is unavailable, bounded; None
        when it failed (and was logged)."""
        pause = FIRST_WRITE_BACKOFF
        with trio.move_on_after(CLEANUP_TIMEOUT, shield=True) as scope:
            while True:
                try:
                    return await fn(*args, **kw)
                except StoreUnavailableError as exc:
                    _log.warning(
                        "call %s (id=%d): could not %s (%s); trying again in %.2f s",
                        call.name,
                        call.id,
                        what,
                        exc,
                        pause,
                        extra=call_fields(call),
                    )
                    await trio.sleep(pause)
                    pause = min(pause * 2, MAX_WRITE_BACKOFF)
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

    async def prerequisite_ended(self, call: StoredCall, error: str | None) -> None:
        """Tell the store an at-most-once call with dependents ended: succeeded
        (``error`` None: they may start) or will not run again (they become dead
        letters)."""
        what = "let its dependents start" if error is None else "end its dependents"
        done = await self._write(
            call, what, self._store.prerequisite_ended, call.id, error, self._clock()
        )
        if done is None:
            _log.error(
                "call %s (id=%d): its end was not stored; the calls waiting for it become "
                "dead letters once its record expires (README, Dependencies)",
                call.name,
                call.id,
                extra=call_fields(call),
            )

    def holds_again(self, call_id: int) -> None:
        """Call ``call_id`` was claimed again with a token, under this worker: a token
        left unfreed from an earlier run of it must not be freed with another call's
        (the store frees by owner and call id, which would free the token it holds
        now). Its own end frees both; its run is a holder until :meth:`run_ended`."""
        self._unfreed.discard(call_id)
        self._holders[call_id] = self._holders.get(call_id, 0) + 1

    def run_ended(self, call_id: int) -> None:
        """A run that :meth:`holds_again` no longer needs its token (before freeing it)."""
        left = self._holders.pop(call_id, 0) - 1
        if left > 0:
            self._holders[call_id] = left

    async def free_tokens(self, calls: Sequence[StoredCall]) -> None:
        """Give back the cluster-wide concurrency tokens ``calls`` held (they ended, or
        never started), so that a call held back by the limit may start anywhere.

        Not those of a call another run here still holds a token for: the store frees
        by owner and call id, so that would free the other run's too. The last run of
        the call to end frees them all."""
        ids = {c.id for c in calls if c.id not in self._holders} | self._unfreed
        if not ids:
            return
        done = await self._write(
            calls[0], "free its cluster-wide slot", self._store.free_tokens, self._owner, ids
        )
        if done is None:
            self._unfreed = ids
            _log.error(
                "%d cluster-wide slot(s) stay taken until they can be freed (tried again "
                "with the next call's), or until this worker stops",
                len(ids),
            )
        else:
            self._unfreed.clear()

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

    async def hand_back(self, calls: Sequence[StoredCall], leased_names: Set[str]) -> None:
        """Give back claimed calls that never started: pending again as they were,
        the claim's attempt refunded, whatever the delivery mode (``leased_names``:
        the names whose rows this scheduler's claims lease)."""
        if not calls:
            return
        back = [attrs.evolve(c, attempts=max(c.attempts - 1, 0)) for c in calls]
        owner = self._owner if any(c.name in leased_names for c in calls) else None
        done = await self._write(
            calls[0], "hand back unstarted calls", self._store.put_back, back, owner
        )
        if done is None:
            for call in calls:
                if call.name in leased_names:
                    continue  # still leased: it runs again once the lease expires
                # Last resort: the row is gone, so put everything in the log.
                _log.critical(
                    "call %s (id=%d) lost: it could not be handed back; payload was %s",
                    call.name,
                    call.id,
                    call.payload,
                    extra=call_fields(call),
                )

    async def retry(self, call: StoredCall, due_at: datetime, leased: bool) -> bool:
        """Store the call again, due at ``due_at``; True if it was stored."""
        if leased:
            done = await self._write(
                call, "schedule the retry", self._store.release, self._owner, call.id, due_at
            )
            return bool(done)
        # The row went when the call started: put it back under its id (a second try
        # after an answer lost on the way cannot store it twice).
        stored = await self._write(
            call,
            "schedule the retry",
            self._store.put_back,
            [attrs.evolve(call, due_at=due_at)],
            None,
        )
        if stored is None:
            _log.critical(
                "call %s (id=%d) lost: its retry could not be stored; payload was %s",
                call.name,
                call.id,
                call.payload,
                extra=call_fields(call),
            )
            return False
        return True

    async def cancel_pending(self, call: StoredCall) -> None:
        """Delete the pending row of a call put back (its retry) as a cancel request
        named it."""
        await self._write(call, "cancel its stored retry", self._store.cancel, call.id)

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

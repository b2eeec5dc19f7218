"""What happens after a call's attempt ends: a pure decision, no Trio, no store.

The per-call task (``_execution.py``) finds out how an attempt ended (an
:class:`Outcome`) and asks :func:`decide` what to do with the call's row given the
class's :class:`CallPolicy`; ``_writes.py`` then carries the :class:`Action` out. Tests
drive :func:`decide` directly.
"""

from __future__ import annotations

import enum
from typing import TYPE_CHECKING, Final, Literal

import attrs

from ._retry import Delivery

if TYPE_CHECKING:
    from ._call import FutureCall

#: ``max_attempts`` of classes that leave it None, per delivery mode.
DEFAULT_MAX_ATTEMPTS: Final = {Delivery.AT_MOST_ONCE: 1, Delivery.AT_LEAST_ONCE: 5}


@attrs.frozen
class CallPolicy:
    """A registered class with its delivery and attempt budget resolved."""

    cls: type[FutureCall]
    delivery: Delivery
    max_attempts: int
    #: True when the row stays (leased) while the call runs: at-least-once. A field,
    #: not a property: it is read several times per call on the hot path.
    leased: bool

    @classmethod
    def resolve(cls, call_class: type[FutureCall], default_delivery: Delivery) -> CallPolicy:
        delivery = call_class.delivery or default_delivery
        attempts = call_class.max_attempts or DEFAULT_MAX_ATTEMPTS[delivery]
        return cls(call_class, delivery, attempts, delivery is Delivery.AT_LEAST_ONCE)


class Outcome(enum.Enum):
    """How one attempt of a call ended."""

    #: ``invoke`` returned.
    SUCCEEDED = "succeeded"
    #: ``invoke`` raised an exception that may be retried.
    FAILED = "failed"
    #: ``invoke`` raised one of the class's ``no_retry_on`` exceptions.
    FAILED_FOR_GOOD = "failed_for_good"
    #: The class's ``timeout`` cancelled ``invoke``.
    TIMED_OUT = "timed_out"
    #: The stored payload no longer decodes: no attempt can succeed.
    UNDECODABLE = "undecodable"
    #: Claimed again after its lease expired on the last allowed attempt: the worker
    #: running it died, hung or was cut off.
    ABANDONED = "abandoned"
    #: This worker lost the lease; another worker may run the call now.
    LEASE_LOST = "lease_lost"
    #: Shutdown (or an outer cancel) interrupted the call.
    INTERRUPTED = "interrupted"
    #: Someone cancelled the call while it ran (``Scheduler.cancel``): not run again.
    CANCELLED = "cancelled"

    @property
    def counter(self) -> Literal["succeeded", "failed", "cancelled"]:
        """The statistics counter it adds to: succeeded, failed or cancelled."""
        if self is Outcome.SUCCEEDED:
            return "succeeded"
        if self in (Outcome.LEASE_LOST, Outcome.INTERRUPTED, Outcome.CANCELLED):
            return "cancelled"
        return "failed"


class Action(enum.Enum):
    """What to do with the call's row after an attempt."""

    #: Nothing to write (at-most-once rows are gone; a lost lease is another's).
    FORGET = "forget"
    #: Delete the leased row: the call is done.
    COMPLETE = "complete"
    #: Store the call again, due after the class's backoff.
    RETRY = "retry"
    #: Keep the call as a dead letter with the reason.
    DEAD_LETTER = "dead_letter"
    #: Hand the leased row back at once, with the attempt refunded.
    RELEASE = "release"


def is_abandoned(attempt: int, policy: CallPolicy) -> bool:
    """True for a leased call claimed again after its last allowed attempt."""
    return policy.leased and attempt > policy.max_attempts


def decide(outcome: Outcome, attempt: int, policy: CallPolicy) -> Action:
    """What to do with a call whose attempt number ``attempt`` ended with ``outcome``."""
    if outcome is Outcome.SUCCEEDED:
        return Action.COMPLETE if policy.leased else Action.FORGET
    if outcome in (Outcome.LEASE_LOST, Outcome.CANCELLED):
        # A cancelled call's leased row went with the request; an at-most-once call
        # with dependents tells the store after (``_execution.py``).
        return Action.FORGET
    if outcome is Outcome.INTERRUPTED:
        return Action.RELEASE if policy.leased else Action.FORGET
    if outcome in (Outcome.FAILED, Outcome.TIMED_OUT) and attempt < policy.max_attempts:
        return Action.RETRY
    return Action.DEAD_LETTER

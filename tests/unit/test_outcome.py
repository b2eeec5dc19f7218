"""The decision after an attempt ends: a pure function, driven here without Trio."""

from __future__ import annotations

from typing import Any

import pytest

from trio_futurecalls import Delivery, FutureCall
from trio_futurecalls._outcome import (
    DEFAULT_MAX_ATTEMPTS,
    Action,
    CallPolicy,
    Outcome,
    decide,
    is_abandoned,
)


class Plain(FutureCall):
    name = "plain"

    async def invoke(self, session: Any, payload: Any) -> None:
        pass


class Patient(FutureCall):
    name = "patient"
    delivery = Delivery.AT_LEAST_ONCE
    max_attempts = 3

    async def invoke(self, session: Any, payload: Any) -> None:
        pass


AT_MOST = CallPolicy.resolve(Plain, Delivery.AT_MOST_ONCE)
LEASED = CallPolicy.resolve(Patient, Delivery.AT_MOST_ONCE)


def test_policy_resolves_delivery_and_attempts() -> None:
    assert (AT_MOST.delivery, AT_MOST.max_attempts, AT_MOST.leased) == (
        Delivery.AT_MOST_ONCE,
        1,
        False,
    )
    # The class's own delivery wins over the scheduler's default.
    assert (LEASED.delivery, LEASED.max_attempts, LEASED.leased) == (
        Delivery.AT_LEAST_ONCE,
        3,
        True,
    )
    by_default = CallPolicy.resolve(Plain, Delivery.AT_LEAST_ONCE)
    assert by_default.leased
    assert by_default.max_attempts == DEFAULT_MAX_ATTEMPTS[Delivery.AT_LEAST_ONCE] == 5


@pytest.mark.parametrize(
    ("outcome", "attempt", "policy", "action"),
    [
        (Outcome.SUCCEEDED, 1, AT_MOST, Action.FORGET),
        (Outcome.SUCCEEDED, 1, LEASED, Action.COMPLETE),
        (Outcome.FAILED, 1, AT_MOST, Action.DEAD_LETTER),  # one attempt by default
        (Outcome.FAILED, 1, LEASED, Action.RETRY),
        (Outcome.FAILED, 2, LEASED, Action.RETRY),
        (Outcome.FAILED, 3, LEASED, Action.DEAD_LETTER),  # the last attempt
        (Outcome.TIMED_OUT, 1, LEASED, Action.RETRY),
        (Outcome.TIMED_OUT, 3, LEASED, Action.DEAD_LETTER),
        (Outcome.FAILED_FOR_GOOD, 1, LEASED, Action.DEAD_LETTER),
        (Outcome.UNDECODABLE, 1, LEASED, Action.DEAD_LETTER),
        (Outcome.UNDECODABLE, 1, AT_MOST, Action.DEAD_LETTER),
        (Outcome.ABANDONED, 4, LEASED, Action.DEAD_LETTER),
        (Outcome.LEASE_LOST, 1, LEASED, Action.FORGET),
        (Outcome.INTERRUPTED, 1, LEASED, Action.RELEASE),
        (Outcome.INTERRUPTED, 1, AT_MOST, Action.FORGET),
    ],
)
def test_decide(outcome: Outcome, attempt: int, policy: CallPolicy, action: Action) -> None:
    assert decide(outcome, attempt, policy) is action


def test_every_outcome_has_a_decision_and_a_counter() -> None:
    for outcome in Outcome:
        for policy in (AT_MOST, LEASED):
            assert isinstance(decide(outcome, 1, policy), Action)
        assert outcome.counter in ("succeeded", "failed", "cancelled")
    assert Outcome.SUCCEEDED.counter == "succeeded"
    assert Outcome.INTERRUPTED.counter == Outcome.LEASE_LOST.counter == "cancelled"
    assert Outcome.TIMED_OUT.counter == Outcome.UNDECODABLE.counter == "failed"


def test_abandoned_only_past_the_last_attempt_of_a_leased_call() -> None:
    assert not is_abandoned(3, LEASED)
    assert is_abandoned(4, LEASED)
    assert not is_abandoned(7, AT_MOST)  # an at-most-once row is never claimed twice

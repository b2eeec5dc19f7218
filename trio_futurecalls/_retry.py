"""Delivery modes and retry backoff policies."""

from __future__ import annotations

import enum
import math
import random
from typing import Protocol, final

import attrs

from ._errors import InvalidArgumentError


class Delivery(enum.Enum):
    """What happens to a call's row when the call starts.

    * ``AT_MOST_ONCE``: the row is deleted in the same step that claims it. A call that
      has not started is never lost; a call running when its process dies is not run
      again.
    * ``AT_LEAST_ONCE``: the claim *leases* the row; the worker renews the lease while
      the call runs and deletes the row when it finishes. If the worker dies, hangs or
      is cut off, the lease expires and any worker runs the call again.
    """

    AT_MOST_ONCE = "at_most_once"
    AT_LEAST_ONCE = "at_least_once"


class Backoff(Protocol):
    """A backoff policy: seconds to wait before the next attempt.

    Called with the number of the attempt that just failed (1 for the first). Any
    function ``(int) -> float`` fits.
    """

    def __call__(self, attempt: int, /) -> float: ...


def _non_negative(instance: object, attribute: attrs.Attribute[float], value: float) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidArgumentError(f"{attribute.name} must be a number, got {value!r}")
    if not math.isfinite(value) or value < 0:
        raise InvalidArgumentError(f"{attribute.name} must be finite and >= 0, got {value!r}")


@final
@attrs.frozen
class FixedBackoff:
    """The same delay before every retry."""

    delay: float = attrs.field(validator=_non_negative)

    def __call__(self, attempt: int) -> float:
        return float(self.delay)


@final
@attrs.frozen(kw_only=True)
class ExponentialBackoff:
    """``base * factor ** (attempt - 1)`` seconds, capped at ``maximum``, with jitter.

    ``jitter`` is the fraction of the delay drawn at random (0.1: +/-10%), so that
    many calls failing together do not retry in lockstep.
    """

    base: float = attrs.field(default=1.0, validator=_non_negative)
    factor: float = attrs.field(default=2.0, validator=_non_negative)
    maximum: float = attrs.field(default=3600.0, validator=_non_negative)
    jitter: float = attrs.field(default=0.1, validator=_non_negative)

    def __attrs_post_init__(self) -> None:
        if self.factor < 1:
            raise InvalidArgumentError(f"factor must be >= 1, got {self.factor}")
        if self.jitter > 1:
            raise InvalidArgumentError(f"jitter must be within [0, 1], got {self.jitter}")

    def __call__(self, attempt: int) -> float:
        exponent = max(attempt - 1, 0)
        try:
            delay = min(self.base * self.factor**exponent, self.maximum)
        except OverflowError:
            delay = self.maximum
        if self.jitter:
            delay *= 1 + random.uniform(-self.jitter, self.jitter)
        return max(0.0, min(delay, self.maximum * (1 + self.jitter)))


def backoff_delay(policy: Backoff, attempt: int, where: str) -> float:
    """Call ``policy`` and check what it returns (a user function may misbehave)."""
    delay = policy(attempt)
    if isinstance(delay, bool) or not isinstance(delay, int | float) or not math.isfinite(delay):
        raise InvalidArgumentError(f"{where} returned {delay!r}; expected finite seconds")
    return max(0.0, float(delay))

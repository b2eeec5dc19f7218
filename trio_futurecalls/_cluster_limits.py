"""Cluster-wide limits: what every worker on one store obeys together.

:class:`RateLimit` is a class's ``rate_limit`` (at most ``count`` starts in any window
of ``per``); :class:`ClusterLimit` is a limit as the store keeps it: kind
``"concurrency"`` (at most ``tokens`` calls of ``name`` running at once across every
worker; ``name`` :data:`ALL_CLASSES` bounds all classes together) or ``"rate"``.

A store hands out one token per allowed call (migration 0008, ``Store.claim``): a
call of a limited class starts only with a token of each limit on it, taken in the
same transaction as the call itself.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Final, Literal

import attrs

from ._errors import InvalidArgumentError
from ._validate import check_aware, check_name

#: The ``name`` of the concurrency limit on all classes together.
ALL_CLASSES: Final = "*"
#: Most tokens one limit may have (the stores' bound).
MAX_TOKENS: Final = 100_000
#: Shortest and longest rate-limit window.
MIN_PER: Final = timedelta(milliseconds=1)
MAX_PER: Final = timedelta(days=36_600)

Kind = Literal["concurrency", "rate"]


def check_tokens(value: object, what: str) -> int:
    """A cluster-wide limit's size: an int from 1 to :data:`MAX_TOKENS`."""
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_TOKENS:
        raise InvalidArgumentError(f"{what} must be an int from 1 to {MAX_TOKENS}, got {value!r}")
    return value


def check_cluster_limit(value: object, what: str) -> int | None:
    """``cluster_max_concurrent``: None (no cluster-wide limit) or a token count."""
    return None if value is None else check_tokens(value, what)


def _per(value: object) -> timedelta:
    if isinstance(value, bool) or not isinstance(value, timedelta | int | float):
        raise InvalidArgumentError(
            f"RateLimit.per must be a timedelta or a number of seconds, got {value!r}"
        )
    try:
        per = value if isinstance(value, timedelta) else timedelta(seconds=value)
    except (OverflowError, ValueError) as exc:
        raise InvalidArgumentError(f"RateLimit.per is out of range: {value!r}") from exc
    # Whole microseconds: what the stores keep.
    if not MIN_PER <= per <= MAX_PER:
        raise InvalidArgumentError(f"RateLimit.per must be from {MIN_PER} to {MAX_PER}, got {per}")
    return per


def _count(value: object) -> int:
    return check_tokens(value, "RateLimit.count")


@attrs.frozen
class RateLimit:
    """At most ``count`` calls of a class start in any window of ``per``, across every
    worker on the store. Calls beyond it stay pending and start, in order, when the
    window allows: never dropped, never failed."""

    count: int = attrs.field(converter=_count)
    #: A timedelta, or seconds.
    per: timedelta = attrs.field(converter=_per)


def _kind(instance: object, attribute: object, value: object) -> None:
    if value not in ("concurrency", "rate"):
        raise InvalidArgumentError(
            f"a cluster limit's kind is 'concurrency' or 'rate', got {value!r}"
        )


@attrs.frozen(kw_only=True)
class ClusterLimit:
    """One cluster-wide limit, as a store keeps it."""

    kind: Kind = attrs.field(validator=_kind)
    #: The class's name; :data:`ALL_CLASSES` for the concurrency limit on all of them.
    name: str
    #: How many calls may run at once (concurrency), or start per window (rate).
    tokens: int
    #: The window of a rate limit; None for a concurrency limit.
    per: timedelta | None = None
    #: When it was set, and by whom (a worker's id, or what an operator's tool says).
    set_at: datetime
    set_by: str | None = None

    def __attrs_post_init__(self) -> None:
        if self.name != ALL_CLASSES or self.kind != "concurrency":
            check_name(self.name)
        check_tokens(self.tokens, "a cluster limit's tokens")
        if (self.kind == "rate") != (self.per is not None):
            raise InvalidArgumentError("a rate limit has a window (per); a concurrency limit none")
        if self.per is not None:
            _per(self.per)
        check_aware(self.set_at, "set_at")

    @property
    def per_us(self) -> int | None:
        """The window in whole microseconds (as stored)."""
        return None if self.per is None else self.per // timedelta(microseconds=1)

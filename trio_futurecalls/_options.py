"""Scheduler options: every setting of a scheduler, validated once, in one frozen value.

:func:`open_scheduler` and :func:`run_due_calls` take these settings as keyword
arguments (typed by :class:`SchedulerKeywords`) and/or as a ready
:class:`SchedulerOptions` (``options=``); either way they build one
:class:`SchedulerOptions` and hand it down, so a setting is declared, documented and
checked here only.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Final, TypedDict, final

import attrs

from ._adaptive import Adaptive, check_max_concurrent
from ._cluster_limits import check_cluster_limit
from ._errors import InvalidArgumentError
from ._executors import DEFAULT_MAX_THREADS, default_max_processes
from ._retry import Delivery
from ._validate import check_aware, check_bool, check_positive_seconds

#: Environment variable read for the global limit when ``max_concurrent`` is not given.
ENV_MAX_CONCURRENT: Final = "TRIO_FUTURECALLS_MAX_CONCURRENT"
#: Global limit used when neither the argument nor the environment variable is set.
DEFAULT_MAX_CONCURRENT: Final = 100
#: Seconds running calls get to finish at shutdown before they are cancelled.
DEFAULT_GRACE_PERIOD: Final = 30.0
#: Default lease length of at-least-once calls (renewed every third of it).
DEFAULT_LEASE_DURATION: Final = 60.0
#: Seconds between checks of the store for pending calls no registered class matches.
DEFAULT_UNKNOWN_CHECK_INTERVAL: Final = 60.0
#: Seconds after which a worker not heard from is dead (it heartbeats every third).
DEFAULT_WORKER_TIMEOUT: Final = 30.0

#: A wall clock: returns the current time as an aware datetime.
Clock = Callable[[], datetime]


def utc_now() -> datetime:
    """The default wall clock: an aware UTC datetime."""
    return datetime.now(UTC)


def global_limit_from_env() -> int | None:
    """``$TRIO_FUTURECALLS_MAX_CONCURRENT`` (a positive int or ``unlimited``), else 100."""
    raw = os.environ.get(ENV_MAX_CONCURRENT)
    if raw is None or not raw.strip():
        return DEFAULT_MAX_CONCURRENT
    text = raw.strip().lower()
    if text in ("unlimited", "none", "inf"):
        return None
    try:
        number = int(text)
    except ValueError:
        raise InvalidArgumentError(
            f"{ENV_MAX_CONCURRENT}={raw!r}: expected a positive integer or 'unlimited'"
        ) from None
    if number <= 0:
        raise InvalidArgumentError(f"{ENV_MAX_CONCURRENT}={raw!r}: must be >= 1 (or 'unlimited')")
    return number


def _limit(value: object) -> int | Adaptive | None:
    return check_max_concurrent(value, "max_concurrent")


def _seconds(value: object, what: str, *, positive: bool = False) -> float:
    seconds = check_positive_seconds(value, what)
    assert seconds is not None
    if positive and not seconds:
        raise InvalidArgumentError(f"{what} must be > 0")
    return seconds


# attrs converters must be named functions for mypy to follow them.
def _execute(value: object) -> bool:
    return check_bool(value, "execute")


def _grace_period(value: object) -> float:
    return _seconds(value, "grace_period")


def _unknown_check_interval(value: object) -> float:
    return _seconds(value, "unknown_check_interval", positive=True)


def _cluster_limit(value: object) -> int | None:
    return check_cluster_limit(value, "cluster_max_concurrent")


def _lease_duration(value: object) -> float:
    return _seconds(value, "lease_duration", positive=True)


def _lease_renew_interval(value: object) -> float | None:
    return None if value is None else _seconds(value, "lease_renew_interval", positive=True)


def _worker_timeout(value: object) -> float:
    return _seconds(value, "worker_timeout", positive=True)


def _pool_size(value: object, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InvalidArgumentError(f"{what} must be an int >= 1, got {value!r}")
    return value


def _max_threads(value: object) -> int:
    return _pool_size(value, "max_threads")


def _max_processes(value: object) -> int:
    return _pool_size(value, "max_processes")


def _check_clock(instance: object, attribute: object, clock: object) -> None:
    if not callable(clock):
        raise InvalidArgumentError(f"clock must be callable, got {clock!r}")
    check_aware(clock(), "clock()")


def _check_delivery(instance: object, attribute: object, value: object) -> None:
    if not isinstance(value, Delivery):
        raise InvalidArgumentError(f"default_delivery must be a Delivery, got {value!r}")


@final
@attrs.frozen(kw_only=True)
class SchedulerOptions:
    """How a scheduler runs. Every field is also a keyword of :func:`open_scheduler`."""

    #: The global limit on calls running at once; None: unlimited (only the per-class
    #: limits apply); an :class:`Adaptive`: a limit raised and lowered within its
    #: bounds from what the scheduler observes. Not given:
    #: ``$TRIO_FUTURECALLS_MAX_CONCURRENT`` (an int or ``unlimited``), else 100.
    max_concurrent: int | Adaptive | None = attrs.field(
        factory=global_limit_from_env, converter=_limit
    )
    #: Seconds running calls get at shutdown before they are cancelled.
    grace_period: float = attrs.field(default=DEFAULT_GRACE_PERIOD, converter=_grace_period)
    #: False: this node only schedules; it starts no calls.
    execute: bool = attrs.field(default=True, converter=_execute)
    #: Returns the current aware datetime (tests pass one tied to Trio's clock).
    clock: Clock = attrs.field(default=utc_now, validator=_check_clock)
    #: Seconds between checks for pending calls whose name no class here matches.
    unknown_check_interval: float = attrs.field(
        default=DEFAULT_UNKNOWN_CHECK_INTERVAL,
        converter=_unknown_check_interval,
    )
    #: Delivery of classes whose ``delivery`` is None.
    default_delivery: Delivery = attrs.field(
        default=Delivery.AT_MOST_ONCE, validator=_check_delivery
    )
    #: At most this many calls of all classes together run at once across every
    #: scheduler on the store; recorded in the store (the last value set wins).
    #: None: this scheduler sets none (one stored still applies).
    cluster_max_concurrent: int | None = attrs.field(default=None, converter=_cluster_limit)
    #: How long a claim leases an at-least-once call's row.
    lease_duration: float = attrs.field(default=DEFAULT_LEASE_DURATION, converter=_lease_duration)
    #: How often running calls' leases are renewed; None: a third of ``lease_duration``.
    lease_renew_interval: float | None = attrs.field(default=None, converter=_lease_renew_interval)
    #: A worker (a scheduler that executes calls) not heard from for this long is dead:
    #: its row in the store's workers registry expires and its cluster concurrency
    #: tokens are free again. It heartbeats every third of it.
    worker_timeout: float = attrs.field(default=DEFAULT_WORKER_TIMEOUT, converter=_worker_timeout)
    #: Threads that may run calls' work at once (``Executor.THREAD`` classes and
    #: ``to_thread``); abandoned threads count until they end.
    max_threads: int = attrs.field(default=DEFAULT_MAX_THREADS, converter=_max_threads)
    #: Worker processes (``Executor.PROCESS`` classes and ``to_process``), started on
    #: first use. Default: the CPUs this process may use.
    max_processes: int = attrs.field(factory=default_max_processes, converter=_max_processes)

    def __attrs_post_init__(self) -> None:
        if self.renew_interval >= self.lease_duration:
            raise InvalidArgumentError(
                "lease_renew_interval must be > 0 and shorter than lease_duration "
                f"({self.lease_duration} s)"
            )

    @property
    def renew_interval(self) -> float:
        """Seconds between lease renewals (``lease_renew_interval`` resolved)."""
        if self.lease_renew_interval is None:
            return self.lease_duration / 3
        return self.lease_renew_interval


class SchedulerKeywords(TypedDict, total=False):
    """The keyword arguments of :func:`open_scheduler` and :func:`run_due_calls`.

    One per :class:`SchedulerOptions` field (a unit test keeps the two in step).
    """

    max_concurrent: int | Adaptive | None
    grace_period: float
    execute: bool
    clock: Clock
    unknown_check_interval: float
    default_delivery: Delivery
    cluster_max_concurrent: int | None
    lease_duration: float
    lease_renew_interval: float | None
    worker_timeout: float
    max_threads: int
    max_processes: int


def build_options(base: SchedulerOptions | None, keywords: SchedulerKeywords) -> SchedulerOptions:
    """``base`` (or the defaults) with ``keywords`` applied, validated once."""
    if base is None:
        return SchedulerOptions(**keywords)
    if not isinstance(base, SchedulerOptions):
        raise InvalidArgumentError(f"options must be a SchedulerOptions, got {base!r}")
    return attrs.evolve(base, **keywords) if keywords else base

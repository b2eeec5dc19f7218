"""Adaptive concurrency: the :class:`Adaptive` limit value, and the pure decisions that
raise and lower such a limit (no Trio, no store: tests drive them with synthetic series).

The algorithm is of the family of TCP Vegas and Netflix concurrency-limits'
``Gradient2``: a limit is good while adding calls adds throughput without adding
latency. Every sampling window (``_adaptive_limits.py`` closes one once about as many
calls as the limit lets run at once have ended: one "round trip", as TCP counts) a
:class:`LimitController` gets a :class:`Window`: the mean run time of the calls that
succeeded in it, how many failed or timed out, the most calls that ran at once, and how
late the event loop woke from its sleeps. Then:

1. **Event-loop lag** above ``max_loop_lag`` (the loop is loaded: every call and the
   dispatcher wait): multiplicative decrease, ``limit * backoff``.
2. **Errors and timeouts**, a tenth or more of the calls that ended in the window:
   multiplicative decrease, ``limit * backoff`` (a downstream that sheds load or times
   out is past its capacity, whatever its latency says).
3. Otherwise the **gradient**: the window's latency against its *recent best* (the
   least window mean of the last :data:`BASELINE_SECONDS`: Vegas' base RTT,
   not Gradient2's long-term average, which drifts up under sustained load and lets
   the limit creep up with it). ``gradient = clamp(tolerance * best / latency, 0.5,
   1)``; the new estimate is ``limit * gradient + sqrt(limit)`` (the square root is the
   queue Gradient2 allows, so that the limit keeps probing for room), smoothed:
   ``limit = 0.8 * limit + 0.2 * estimate``. While latency stays within ``tolerance``
   the limit rises by about ``0.2 * sqrt(limit)`` a window; as latency grows past it
   the limit falls, by at most a tenth a window (half the limit, smoothed).
4. **Slow start**: until the first sign of congestion (latency past ``tolerance``,
   errors, lag) the limit doubles each window instead, as TCP's does, so that
   ``Adaptive(1, 64)`` reaches a downstream's capacity in a few windows.

The limit grows only when it is used (the most calls at once in the window reached
half of it, Gradient2's "application limited" check) and the loop is calm (lag under
half ``max_loop_lag``): a class that runs three calls at a time learns nothing about
thirty. It never leaves ``[min, max]``. The limit in force is the estimate rounded
down.
"""

from __future__ import annotations

import math
from collections import deque
from typing import Final, final

import attrs

from ._errors import InvalidArgumentError

#: Seconds of windows the recent best latency looks back over: a downstream whose
#: unloaded latency rose for good is measured anew after that long.
BASELINE_SECONDS: Final = 60.0
#: Weight of a window's estimate in the new limit (Gradient2's ``smoothing``).
SMOOTHING: Final = 0.2
#: Failed and timed-out calls, as a share of the calls that ended in a window, from
#: which the window counts as overloaded (below it: errors of the calls themselves).
ERROR_SHARE: Final = 0.1
#: The gradient never goes below this (one window cannot halve the estimate: outliers).
MIN_GRADIENT: Final = 0.5


def _check_bound(value: object, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InvalidArgumentError(f"Adaptive {what} must be an int >= 1, got {value!r}")
    return value


def _check_min(instance: object, attribute: object, value: object) -> None:
    _check_bound(value, "min")


def _check_max(instance: Adaptive, attribute: object, value: object) -> None:
    _check_bound(value, "max")
    assert isinstance(value, int)
    if value < instance.min:
        raise InvalidArgumentError(f"Adaptive max must be >= min ({instance.min}), got {value!r}")


def _check_initial(instance: Adaptive, attribute: object, value: int | None) -> None:
    if value is None:
        return
    _check_bound(value, "initial")
    assert isinstance(value, int)
    if not instance.min <= value <= instance.max:
        raise InvalidArgumentError(
            f"Adaptive initial must be within min..max ({instance.min}..{instance.max}), "
            f"got {value!r}"
        )


def _check_number(value: object, what: str, low: float, high: float) -> float:
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not math.isfinite(value)
        or not low < value < high
    ):
        raise InvalidArgumentError(
            f"Adaptive {what} must be a number above {low:g}"
            + ("" if math.isinf(high) else f" and below {high:g}")
            + f", got {value!r}"
        )
    return float(value)


def _check_tolerance(instance: object, attribute: object, value: object) -> None:
    if _check_number(value, "latency_tolerance", 0, math.inf) < 1:
        raise InvalidArgumentError(f"Adaptive latency_tolerance must be >= 1, got {value!r}")


def _check_backoff(instance: object, attribute: object, value: object) -> None:
    _check_number(value, "backoff", 0, 1)


def _check_lag(instance: object, attribute: object, value: object) -> None:
    _check_number(value, "max_loop_lag", 0, math.inf)


@final
@attrs.frozen
class Adaptive:
    """A concurrency limit the scheduler raises and lowers while it runs, within
    ``min..max``, from what it observes (README, "Adaptive concurrency")::

        class CallPartner(FutureCall):
            name = "call-partner"
            max_concurrent = Adaptive(min=1, max=64)

    Also the global limit: ``open_scheduler(store, calls, max_concurrent=Adaptive(4, 200))``.
    """

    #: The limit never goes below this.
    min: int = attrs.field(default=1, validator=_check_min)
    #: The limit never goes above this (and the database pool is sized for it).
    max: int = attrs.field(default=64, validator=_check_max)
    #: The limit at start; None: ``min`` (it doubles each window until congestion).
    initial: int | None = attrs.field(default=None, kw_only=True, validator=_check_initial)
    #: Latency up to this multiple of the recent best counts as no queueing.
    latency_tolerance: float = attrs.field(default=1.5, kw_only=True, validator=_check_tolerance)
    #: Factor of a multiplicative decrease (errors, timeouts, event-loop lag).
    backoff: float = attrs.field(default=0.7, kw_only=True, validator=_check_backoff)
    #: Mean lateness (seconds) of the event loop's wake-ups above which every adaptive
    #: limit decreases; above half of it, none increases.
    max_loop_lag: float = attrs.field(default=0.1, kw_only=True, validator=_check_lag)

    @property
    def start(self) -> int:
        """The limit in force when a scheduler starts."""
        return self.min if self.initial is None else self.initial


def check_max_concurrent(value: object, what: str) -> int | Adaptive | None:
    """A concurrency limit: a positive int, an :class:`Adaptive`, or None (unlimited)."""
    if isinstance(value, Adaptive) or value is None:
        return value
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidArgumentError(
            f"{what} must be a positive int, an Adaptive or None, got {value!r}"
        )
    if value <= 0:
        raise InvalidArgumentError(f"{what} must be >= 1 (use None for unlimited), got {value!r}")
    return value


def ceiling(limit: int | Adaptive | None) -> int | None:
    """The most calls ``limit`` ever lets run at once (None: unlimited)."""
    return limit.max if isinstance(limit, Adaptive) else limit


def start_limit(limit: int | Adaptive | None) -> int | None:
    """The limit in force as a scheduler starts (an adaptive limit's ``start``)."""
    return limit.start if isinstance(limit, Adaptive) else limit


@final
@attrs.frozen
class Window:
    """What one limiter saw during one sampling window."""

    #: Calls that succeeded.
    succeeded: int = 0
    #: Calls that failed (may be retried) or timed out: signs of overload.
    overloaded: int = 0
    #: Mean run time (seconds) of the calls that succeeded; None if none did.
    latency: float | None = None
    #: Most calls running at once under this limiter, as calls ended.
    peak_running: int = 0
    #: Mean lateness (seconds) of the event loop's probe sleeps.
    loop_lag: float = 0.0
    #: Seconds the window covered.
    duration: float = 0.1


class RecentBest:
    """The least value of the last ``horizon`` seconds of windows: a latency baseline
    that follows a downstream that got faster at once, and one that got slower for
    good after ``horizon`` seconds."""

    def __init__(self, horizon: float = BASELINE_SECONDS) -> None:
        self._horizon = horizon
        self._values: deque[tuple[float, float]] = deque()
        self._covered = 0.0

    def add(self, value: float, duration: float) -> float:
        """Record ``value``, seen over ``duration`` seconds; return the best now."""
        values = self._values
        values.append((duration, value))
        self._covered += duration
        while len(values) > 1 and self._covered - values[0][0] >= self._horizon:
            self._covered -= values.popleft()[0]
        return min(v for _, v in values)


@attrs.frozen
class Decision:
    """A controller's answer to one window: the new limit, and why (for logs)."""

    limit: int
    reason: str


class LimitController:
    """Raises and lowers one limit within its :class:`Adaptive` bounds (see the
    module's description). Pure: call :meth:`update` once per window."""

    def __init__(self, bounds: Adaptive, start: int | None = None) -> None:
        self.bounds = bounds
        first = bounds.start if start is None else start
        self._estimate = float(min(max(first, bounds.min), bounds.max))
        self._slow_start = True
        self._best = RecentBest()

    @property
    def limit(self) -> int:
        """The limit in force: the estimate rounded down, within ``min..max``."""
        return min(max(int(self._estimate), self.bounds.min), self.bounds.max)

    @property
    def slow_start(self) -> bool:
        return self._slow_start

    def update(self, window: Window) -> Decision:
        """Take one window's observations; return the limit from now on."""
        bounds = self.bounds
        estimate = self._estimate
        ended = window.succeeded + window.overloaded
        if window.loop_lag > bounds.max_loop_lag:
            estimate *= bounds.backoff
            self._slow_start = False
            reason = f"event-loop lag {window.loop_lag * 1000:.0f} ms"
        elif window.overloaded and window.overloaded >= ERROR_SHARE * ended:
            estimate *= bounds.backoff
            self._slow_start = False
            reason = f"{window.overloaded} of {ended} calls failed or timed out"
        elif window.latency is None:
            return Decision(self.limit, "no call succeeded")
        else:
            best = self._best.add(window.latency, window.duration)
            ratio = window.latency / best if best > 0 else 1.0
            grow = (
                window.peak_running >= estimate / 2 and window.loop_lag <= bounds.max_loop_lag / 2
            )
            if self._slow_start and ratio > bounds.latency_tolerance:
                self._slow_start = False
            if self._slow_start:
                if grow:
                    estimate *= 2
                reason = f"slow start, latency {ratio:.2f} x best"
            else:
                gradient = max(MIN_GRADIENT, min(1.0, bounds.latency_tolerance / ratio))
                if gradient < 1.0 or grow:
                    queue = math.sqrt(estimate) if grow else 0.0
                    target = estimate * gradient + queue
                    estimate = estimate * (1 - SMOOTHING) + target * SMOOTHING
                reason = f"latency {ratio:.2f} x best, gradient {gradient:.2f}"
        self._estimate = min(max(estimate, float(bounds.min)), float(bounds.max))
        return Decision(self.limit, reason)

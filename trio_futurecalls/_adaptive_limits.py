"""The scheduler's adaptive limits at run time: observations in, limits out.

Each call that ends reports its run time and outcome (:meth:`AdaptiveLimits.observe`,
called by ``_execution.py``); one task (:meth:`AdaptiveLimits.run`) measures the event
loop's lag (how late ``trio.sleep`` wakes), and about every :data:`INTERVAL` seconds
closes the sampling windows that saw at least :data:`MIN_SAMPLES` calls end, asks each
adaptive limit's :class:`LimitController` for its new limit, and applies it with
``Slots.set_limit`` (``CapacityLimiter.total_tokens``): a lower limit cancels no
running call, only no call starts until fewer run than it.

A class's controller sees the run times of its own calls. The global controller sees
every call, so its latency is *normalised*: each class's window mean divided by that
class's recent best, averaged over the classes weighted by their calls (a mix of slow
and fast classes then reads as "no queueing" when none of them queues). A window of
high event-loop lag lowers every adaptive limit, whether or not calls ended in it.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Final

import trio

from ._adaptive import Adaptive, LimitController, RecentBest, Window
from ._outcome import Outcome
from ._slots import Slots

_log = logging.getLogger("trio_futurecalls.scheduler.adaptive")

#: Seconds between decisions (a window stays open longer until MIN_SAMPLES calls ended).
INTERVAL: Final = 0.5
#: Calls that must end in a window before it counts.
MIN_SAMPLES: Final = 5
#: Seconds between event-loop lag probes (sleeps whose lateness is measured).
PROBE_INTERVAL: Final = 0.05

#: Outcomes that count as signs of overload.
_OVERLOAD: Final = frozenset({Outcome.FAILED, Outcome.TIMED_OUT})


class _Samples:
    """One limiter's (or class's) open window (mutable, cheap to update)."""

    __slots__ = ("latency_sum", "overloaded", "peak", "succeeded")

    def __init__(self) -> None:
        self.succeeded = 0
        self.latency_sum = 0.0
        self.overloaded = 0
        self.peak = 0

    @property
    def ended(self) -> int:
        return self.succeeded + self.overloaded

    def window(self, lag: float) -> Window:
        return Window(
            succeeded=self.succeeded,
            overloaded=self.overloaded,
            latency=self.latency_sum / self.succeeded if self.succeeded else None,
            peak_running=self.peak,
            loop_lag=lag,
        )


class AdaptiveLimits:
    """The controllers of one scheduler's adaptive limits (global and per class)."""

    def __init__(
        self, slots: Slots, global_limit: int | Adaptive | None, classes: Mapping[str, object]
    ) -> None:
        self._slots = slots
        #: Controller per adaptive limit; the key None is the global limit.
        self._controllers: dict[str | None, LimitController] = {}
        if isinstance(global_limit, Adaptive):
            self._controllers[None] = LimitController(global_limit)
        for name, limit in classes.items():
            if isinstance(limit, Adaptive):
                self._controllers[name] = LimitController(limit)
        self._samples = {name: _Samples() for name in classes}
        self._global = _Samples()
        #: Per class: the recent best of its window means (to normalise the global's).
        self._best = {name: RecentBest() for name in classes}
        #: The global window's normalised latencies, weighted: (sum, weight).
        self._normal = (0.0, 0)
        self._lags: list[float] = []
        self._activated = trio.Event()

    @property
    def active(self) -> bool:
        """True while any limit is adaptive (else nothing needs to observe calls)."""
        return bool(self._controllers)

    def bounds(self, name: str | None) -> Adaptive | None:
        """The bounds of limit ``name`` (None: the global) if it is adaptive."""
        controller = self._controllers.get(name)
        return None if controller is None else controller.bounds

    def set(self, name: str | None, limit: int | Adaptive | None) -> None:
        """``Scheduler.set_limit``: an int or None fixes limit ``name`` (its adaptation
        stops); an :class:`Adaptive` makes it adaptive within those bounds, starting
        from the limit in force (clamped into them)."""
        if isinstance(limit, Adaptive):
            now = self._slots.limit(name)
            start = limit.start if now is None else now
            controller = LimitController(limit, start)
            self._controllers[name] = controller
            self._slots.set_limit(name, controller.limit)
            self._activated.set()
        else:
            self._controllers.pop(name, None)
            self._slots.set_limit(name, limit)

    def observe(self, name: str, seconds: float, outcome: Outcome) -> None:
        """A call of class ``name`` ended after ``seconds`` with ``outcome`` (it still
        holds its tokens). Outcomes other than success, failure and timeout (a
        cancellation, an undecodable payload, a ``no_retry_on`` error) say nothing
        about load and are left out."""
        if outcome is Outcome.SUCCEEDED:
            ok = True
        elif outcome in _OVERLOAD:
            ok = False
        else:
            return
        slots = self._slots
        _add(self._samples[name], ok, seconds, slots.running(name))
        if None in self._controllers:
            _add(self._global, ok, seconds, sum(slots.running(n) for n in self._samples))

    def probe(self, lateness: float) -> None:
        """Record how late (seconds) one of the loop's sleeps woke."""
        self._lags.append(max(lateness, 0.0))

    def tick(self) -> None:
        """Close the windows that are ready; apply the controllers' decisions."""
        lags, self._lags = self._lags, []
        lag = sum(lags) / len(lags) if lags else 0.0
        for name, samples in self._samples.items():
            if samples.ended < MIN_SAMPLES:
                # Not enough calls ended to judge latency; a loaded loop still counts.
                self._decide(name, None, lag)
                continue
            self._samples[name] = _Samples()
            if samples.succeeded:
                mean = samples.latency_sum / samples.succeeded
                best = self._best[name].add(mean)
                total, weight = self._normal
                ratio = mean / best if best > 0 else 1.0
                self._normal = (total + ratio * samples.succeeded, weight + samples.succeeded)
            self._decide(name, samples, lag)
        glob = self._global
        if glob.ended < MIN_SAMPLES:
            self._decide(None, None, lag)
            return
        self._global = _Samples()
        total, weight = self._normal
        self._normal = (0.0, 0)
        # The global controller compares normalised latencies (1.0: every class at its
        # best) in place of the raw mean.
        self._apply(
            None,
            Window(
                succeeded=glob.succeeded,
                overloaded=glob.overloaded,
                latency=total / weight if weight else None,
                peak_running=glob.peak,
                loop_lag=lag,
            ),
        )

    def _decide(self, name: str | None, samples: _Samples | None, lag: float) -> None:
        controller = self._controllers.get(name)
        if controller is None:
            return
        if samples is None:
            if lag <= controller.bounds.max_loop_lag:
                return
            self._apply(name, Window(loop_lag=lag))
        else:
            self._apply(name, samples.window(lag))

    def _apply(self, name: str | None, window: Window) -> None:
        controller = self._controllers.get(name)
        if controller is None:
            return
        before = controller.limit
        decision = controller.update(window)
        if decision.limit != before:
            _log.debug(
                "adaptive limit of %s: %d -> %d (%s)",
                "all calls" if name is None else repr(name),
                before,
                decision.limit,
                decision.reason,
            )
        if decision.limit != self._slots.limit(name):
            self._slots.set_limit(name, decision.limit)

    async def run(self) -> None:
        """Probe the loop's lag every PROBE_INTERVAL, decide every INTERVAL; forever.

        Idle (no timer at all) while no limit is adaptive, until :meth:`set` makes one.
        """
        while True:
            while not self.active:
                self._activated = trio.Event()
                await self._activated.wait()
            next_tick = trio.current_time() + INTERVAL
            while self.active:
                deadline = trio.current_time() + PROBE_INTERVAL
                await trio.sleep_until(deadline)
                now = trio.current_time()
                self.probe(now - deadline)
                if now >= next_tick:
                    next_tick = now + INTERVAL
                    self.tick()


def _add(samples: _Samples, ok: bool, seconds: float, running: int) -> None:
    if ok:
        samples.succeeded += 1
        samples.latency_sum += seconds
    else:
        samples.overloaded += 1
    if running > samples.peak:
        samples.peak = running

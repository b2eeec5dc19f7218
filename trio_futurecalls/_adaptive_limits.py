"""The scheduler's adaptive limits at run time: observations in, limits out.

Each call that ends reports its run time and outcome (:meth:`AdaptiveLimits.observe`,
called by ``_execution.py``). One task (:meth:`AdaptiveLimits.run`) sleeps in steps of
:data:`PROBE_INTERVAL` and measures how late each sleep wakes (the event loop's lag);
every :data:`TICK` it closes the sampling windows in which enough calls ended (as many
as the limit lets run at once, and at least :data:`MIN_SAMPLES`: about one round trip
of the whole limit, as TCP updates once per round trip), asks each adaptive limit's
:class:`LimitController` for its new limit, and applies it with ``Slots.set_limit``
(``CapacityLimiter.total_tokens``): a lower limit cancels no running call, only no
call starts until fewer run than it.

The loop's lag is judged over :data:`LAG_WINDOW` seconds of probes (one late wake-up
is not a loaded loop): when that window closes, a mean lag above a limit's
``max_loop_lag`` lowers it, whether or not calls ended; between, windows carry the
last mean (capped), so that a loop lagging over half of it keeps limits from growing.

A class's controller sees the run times of its own calls. The global controller sees
every call, so its latency is *normalised*: each class's window mean divided by that
class's recent best, averaged over the classes weighted by their calls (a mix of slow
and fast classes then reads as "no queueing" when none of them queues).
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

#: Seconds between looks at the windows.
TICK: Final = 0.1
#: Calls that must end in a window before it counts (more: the limit in force).
MIN_SAMPLES: Final = 5
#: A window never waits for more calls than this, whatever the limit.
MAX_SAMPLES: Final = 200
#: Seconds between event-loop lag probes (sleeps whose lateness is measured).
PROBE_INTERVAL: Final = 0.05
#: Seconds of probes whose mean lag is judged at once.
LAG_WINDOW: Final = 0.5

#: Outcomes that count as signs of overload.
_OVERLOAD: Final = frozenset({Outcome.FAILED, Outcome.TIMED_OUT})


class _Samples:
    """One limiter's (or class's) open window (mutable, cheap to update)."""

    __slots__ = ("latency_sum", "opened", "overloaded", "peak", "succeeded")

    def __init__(self, opened: float | None = None) -> None:
        self.opened = opened
        self.succeeded = 0
        self.latency_sum = 0.0
        self.overloaded = 0
        self.peak = 0

    @property
    def ended(self) -> int:
        return self.succeeded + self.overloaded

    def window(self, lag: float, now: float, latency: float | None = None) -> Window:
        mean = self.latency_sum / self.succeeded if self.succeeded else None
        return Window(
            succeeded=self.succeeded,
            overloaded=self.overloaded,
            latency=mean if latency is None else latency,
            peak_running=self.peak,
            loop_lag=lag,
            duration=TICK if self.opened is None else max(now - self.opened, 0.0),
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
        self._lag_since: float | None = None
        #: The mean lag of the last LAG_WINDOW closed.
        self._lag = 0.0
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
            controller = LimitController(limit, limit.max if now is None else now)
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

    def probe(self, lateness: float, now: float) -> None:
        """Record how late (seconds) one of the loop's sleeps woke, at ``now``."""
        if self._lag_since is None:
            self._lag_since = now
        self._lags.append(max(lateness, 0.0))

    def tick(self, now: float) -> None:
        """Close the windows that are ready; apply the controllers' decisions."""
        fresh = self._lag_since is not None and now - self._lag_since >= LAG_WINDOW - 1e-9
        if fresh:
            lags, self._lags, self._lag_since = self._lags, [], None
            self._lag = sum(lags) / len(lags) if lags else 0.0
        for name, samples in self._samples.items():
            if samples.ended < self._needed(name):
                if fresh:  # a loaded loop lowers the limit, with or without calls
                    self._decide(name, None, now, fresh)
                continue
            self._samples[name] = _Samples(now)
            if samples.succeeded:
                mean = samples.latency_sum / samples.succeeded
                duration = samples.window(0.0, now).duration
                best = self._best[name].add(mean, duration)
                total, weight = self._normal
                ratio = mean / best if best > 0 else 1.0
                self._normal = (total + ratio * samples.succeeded, weight + samples.succeeded)
            self._decide(name, samples, now, fresh)
        glob = self._global
        if glob.ended < self._needed(None):
            if fresh:
                self._decide(None, None, now, fresh)
            return
        self._global = _Samples(now)
        total, weight = self._normal
        self._normal = (0.0, 0)
        # The global controller compares normalised latencies (1.0: every class at its
        # best) in place of the raw mean.
        self._decide(None, glob, now, fresh, total / weight if weight else None)

    def _needed(self, name: str | None) -> int:
        limit = self._slots.limit(name)
        return max(MIN_SAMPLES, min(MAX_SAMPLES if limit is None else limit, MAX_SAMPLES))

    def _decide(
        self,
        name: str | None,
        samples: _Samples | None,
        now: float,
        fresh: bool,
        latency: float | None = None,
    ) -> None:
        controller = self._controllers.get(name)
        if controller is None:
            return
        most = controller.bounds.max_loop_lag
        # The lag lowers a limit once per LAG_WINDOW: between, it only stops growth.
        lag = self._lag if fresh else min(self._lag, most)
        if samples is None:
            if lag <= most:
                return
            window = Window(loop_lag=lag)
        else:
            window = samples.window(lag, now, latency)
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
        """Probe the loop's lag every PROBE_INTERVAL, look at the windows every TICK;
        forever. Idle (no timer at all) while no limit is adaptive, until :meth:`set`
        makes one."""
        while True:
            while not self.active:
                self._activated = trio.Event()
                await self._activated.wait()
            next_tick = trio.current_time() + TICK
            while self.active:
                deadline = trio.current_time() + PROBE_INTERVAL
                await trio.sleep_until(deadline)
                now = trio.current_time()
                self.probe(now - deadline, now)
                if now >= next_tick - 1e-9:
                    next_tick = now + TICK
                    self.tick(now)


def _add(samples: _Samples, ok: bool, seconds: float, running: int) -> None:
    if ok:
        samples.succeeded += 1
        samples.latency_sum += seconds
    else:
        samples.overloaded += 1
    if running > samples.peak:
        samples.peak = running

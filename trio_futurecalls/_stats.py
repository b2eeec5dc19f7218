"""Statistics: counters and time distributions per call class, and their snapshots.

The engine updates a :class:`ClassCounters` per class as calls start and end;
:meth:`Scheduler.statistics` turns them into frozen :class:`ClassStatistics` values.
"""

from __future__ import annotations

import bisect
import math
from typing import Final, Literal, final

import attrs

from ._executors import ExecutorStatistics

#: Upper bounds (seconds) of the histogram buckets for wait and run times. The same
#: bounds serve the Prometheus exporter; the last bucket is +Inf.
BUCKETS: Final = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
    300.0,
    900.0,
    3600.0,
    math.inf,
)


@final
@attrs.frozen(kw_only=True)
class Distribution:
    """A histogram of durations in seconds (Prometheus-style, non-cumulative counts)."""

    count: int
    sum: float
    min: float
    max: float
    counts: tuple[int, ...]  # one per BUCKETS bound

    @property
    def mean(self) -> float | None:
        return self.sum / self.count if self.count else None

    def quantile(self, q: float) -> float | None:
        """Estimate the ``q`` quantile (0..1) by interpolating inside its bucket."""
        if not 0 <= q <= 1:
            raise ValueError(f"q must be within [0, 1], got {q}")
        if not self.count:
            return None
        rank = q * self.count
        seen = 0
        lower = 0.0
        for bound, n in zip(BUCKETS, self.counts, strict=True):
            if n and seen + n >= rank:
                # The exact min and max narrow the first and last buckets.
                lower = max(lower, self.min)
                upper = min(bound, self.max)
                if upper <= lower:
                    return upper
                return lower + (upper - lower) * ((rank - seen) / n)
            seen += n
            lower = bound
        return self.max

    @property
    def p50(self) -> float | None:
        return self.quantile(0.5)

    @property
    def p95(self) -> float | None:
        return self.quantile(0.95)

    @property
    def p99(self) -> float | None:
        return self.quantile(0.99)


class Recorder:
    """Mutable accumulator behind a :class:`Distribution` (cheap to update)."""

    __slots__ = ("count", "counts", "max", "min", "sum")

    def __init__(self) -> None:
        self.count = 0
        self.sum = 0.0
        self.min = math.inf
        self.max = 0.0
        self.counts = [0] * len(BUCKETS)

    def add(self, seconds: float) -> None:
        if seconds < 0:
            seconds = 0.0
        self.count += 1
        self.sum += seconds
        if seconds > self.max:
            self.max = seconds
        if seconds < self.min:
            self.min = seconds
        self.counts[bisect.bisect_left(BUCKETS, seconds)] += 1

    def snapshot(self) -> Distribution:
        return Distribution(
            count=self.count,
            sum=self.sum,
            min=self.min if self.count else 0.0,
            max=self.max,
            counts=tuple(self.counts),
        )

    @staticmethod
    def merge(parts: list[Distribution]) -> Distribution:
        counts = [0] * len(BUCKETS)
        for part in parts:
            for i, n in enumerate(part.counts):
                counts[i] += n
        return Distribution(
            count=sum(p.count for p in parts),
            sum=sum(p.sum for p in parts),
            min=min((p.min for p in parts if p.count), default=0.0),
            max=max((p.max for p in parts), default=0.0),
            counts=tuple(counts),
        )


@final
@attrs.frozen(kw_only=True)
class QueueLength:
    """Pending calls of one name in the store: how many are due (their time has come
    and nothing holds them), and how many wait for prerequisites (``after=``) to succeed.

    ``pending`` counts them all (``due`` and ``waiting`` never overlap: a call waiting
    for a prerequisite is not due, whatever its due time).
    """

    pending: int
    due: int
    waiting: int = 0


@final
@attrs.frozen(kw_only=True)
class ClassStatistics:
    """Counters of one call class in one scheduler since it started (or all classes)."""

    name: str
    #: The limit set: an int, or an adaptive limit's ``max``; None: unlimited.
    max_concurrent: int | None
    running: int
    started: int
    succeeded: int
    failed: int
    cancelled: int
    #: Failed attempts that were scheduled again.
    retried: int
    #: Calls given up on and kept as dead letters.
    dead_lettered: int
    #: Start minus due time of started calls.
    wait: Distribution
    #: Execution time of finished calls.
    run: Distribution
    #: Paused in the store (no worker starts its calls), as this scheduler last read
    #: it (see ``Scheduler.statistics``); always False for all classes together.
    paused: bool = False
    #: The limit in force now (None: unlimited): an adaptive limit's current value,
    #: else ``max_concurrent``.
    current_limit: int | None = None

    @property
    def finished(self) -> int:
        return self.succeeded + self.failed + self.cancelled

    @property
    def average_wait_seconds(self) -> float | None:
        """Average of (start - due) over started calls."""
        return self.wait.mean

    @property
    def average_run_seconds(self) -> float | None:
        """Average execution time over finished calls."""
        return self.run.mean


@final
@attrs.frozen(kw_only=True)
class SchedulerStatistics:
    """A snapshot of :meth:`Scheduler.statistics`."""

    max_concurrent: int | None
    running: int
    classes: dict[str, ClassStatistics]
    #: All classes together (``name`` is ``"*"``).
    total: ClassStatistics
    #: The worker threads (``Executor.THREAD`` classes and ``to_thread``).
    threads: ExecutorStatistics
    #: The worker processes (``Executor.PROCESS`` classes and ``to_process``).
    processes: ExecutorStatistics


@attrs.define(eq=False)
class ClassCounters:
    """What happened to the calls of one class so far (mutable, cheap to update)."""

    started: int = 0
    succeeded: int = 0
    failed: int = 0
    cancelled: int = 0
    retried: int = 0
    dead_lettered: int = 0
    wait: Recorder = attrs.Factory(Recorder)
    run: Recorder = attrs.Factory(Recorder)

    def count_end(self, counter: Literal["succeeded", "failed", "cancelled"]) -> None:
        """Count a call that ended: it succeeded, failed or was cancelled."""
        if counter == "succeeded":
            self.succeeded += 1
        elif counter == "failed":
            self.failed += 1
        else:
            self.cancelled += 1

    def snapshot(
        self,
        name: str,
        limit: int | None,
        running: int,
        paused: bool = False,
        current_limit: int | None = None,
    ) -> ClassStatistics:
        """``limit`` is the limit set; ``current_limit`` the one in force, if it
        differs (an adaptive limit's)."""
        return ClassStatistics(
            name=name,
            paused=paused,
            max_concurrent=limit,
            current_limit=limit if current_limit is None else current_limit,
            running=running,
            started=self.started,
            succeeded=self.succeeded,
            failed=self.failed,
            cancelled=self.cancelled,
            retried=self.retried,
            dead_lettered=self.dead_lettered,
            wait=self.wait.snapshot(),
            run=self.run.snapshot(),
        )


def total_statistics(
    classes: dict[str, ClassStatistics],
    limit: int | None,
    running: int,
    current_limit: int | None = None,
    *,
    threads: ExecutorStatistics,
    processes: ExecutorStatistics,
) -> SchedulerStatistics:
    """The scheduler's snapshot: each class, and all of them together as ``"*"``
    (``limit`` and ``current_limit``: the global limit set and in force)."""
    parts = list(classes.values())
    total = ClassStatistics(
        name="*",
        max_concurrent=limit,
        current_limit=limit if current_limit is None else current_limit,
        running=running,
        started=sum(c.started for c in parts),
        succeeded=sum(c.succeeded for c in parts),
        failed=sum(c.failed for c in parts),
        cancelled=sum(c.cancelled for c in parts),
        retried=sum(c.retried for c in parts),
        dead_lettered=sum(c.dead_lettered for c in parts),
        wait=Recorder.merge([c.wait for c in parts]),
        run=Recorder.merge([c.run for c in parts]),
    )
    return SchedulerStatistics(
        max_concurrent=limit,
        running=running,
        classes=classes,
        total=total,
        threads=threads,
        processes=processes,
    )

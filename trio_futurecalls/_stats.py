"""Statistics values: counters and time distributions per call class."""

from __future__ import annotations

import bisect
import math
from typing import Final, final

import attrs

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
    """Pending calls of one name in the store, and how many of them are already due."""

    pending: int
    due: int

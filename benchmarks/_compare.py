"""Comparisons: a measured value against its ceiling measured in the same run.

The targets of issue 16 are ratios (">= 0.5 x the bare Trio spawn ceiling in the same
run"), because this machine's speed drifts by more than the gaps they judge. A
:class:`Comparison` names two results (ours and the ceiling) and the target of their
ratio; :func:`comparison_table` prints one row each, with both medians, the ratio and
whether the target is met. When both were measured the same number of times, the
ratio is taken per repeat (each repeat measures both back to back) and the median of
those is judged; otherwise the ratio of the medians.

Workload modules add theirs with :func:`register`: a function of the run's sizes that
returns its comparisons (metric names depend on the sizes).
"""

from __future__ import annotations

import statistics
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import attrs

from benchmarks._harness import Result, Results, Target

if TYPE_CHECKING:
    from benchmarks._workloads import Sizes

#: (workload, store, metric) of a result.
Key = tuple[str, str, str]


@attrs.frozen
class Comparison:
    """One row of the comparison table: ``ours / ceiling``, judged by ``target``."""

    label: str
    ours: Key
    ceiling: Key
    target: Target


@attrs.frozen
class Compared:
    """A comparison with its numbers (None when a side was not measured in this run)."""

    comparison: Comparison
    ours: Result | None
    ceiling: Result | None
    ratios: list[float]

    @property
    def ratio(self) -> float | None:
        return statistics.median(self.ratios) if self.ratios else None

    def met(self) -> bool | None:
        ratio = self.ratio
        return None if ratio is None else self.comparison.target.met(ratio)

    def to_json(self) -> dict[str, Any]:
        c = self.comparison
        return {
            "label": c.label,
            "ours": list(c.ours),
            "ceiling": list(c.ceiling),
            "ours_median": None if self.ours is None else self.ours.median,
            "ceiling_median": None if self.ceiling is None else self.ceiling.median,
            "ratios": self.ratios,
            "ratio": self.ratio,
            "target": c.target.text,
            "met": self.met(),
        }


_REGISTRY: list[Callable[[Sizes], list[Comparison]]] = []


def register(
    fn: Callable[[Sizes], list[Comparison]],
) -> Callable[[Sizes], list[Comparison]]:
    """Add a module's comparisons (a decorator)."""
    _REGISTRY.append(fn)
    return fn


def comparisons(sizes: Sizes) -> list[Comparison]:
    return [c for fn in _REGISTRY for c in fn(sizes)]


def compare(results: Results, sizes: Sizes) -> list[Compared]:
    """Every registered comparison whose two sides were measured in this run."""
    out = []
    for c in comparisons(sizes):
        ours, ceiling = results.get(*c.ours), results.get(*c.ceiling)
        if ours is None or ceiling is None or not ours.values or not ceiling.values:
            continue
        if len(ours.values) == len(ceiling.values):
            ratios = [o / m for o, m in zip(ours.values, ceiling.values, strict=True) if m]
        else:
            ratios = [ours.median / ceiling.median] if ceiling.median else []
        out.append(Compared(c, ours, ceiling, ratios))
    return out


def _fmt(result: Result | None) -> str:
    if result is None:
        return "-"
    value = result.median
    return f"{value:,.0f}" if abs(value) >= 100 else f"{value:.3f}"


def comparison_table(compared: list[Compared]) -> str:
    lines = [
        "| comparison (same run) | ours | ceiling | ratio (min-max) | target | met? |",
        "| --- | ---: | ---: | ---: | --- | --- |",
    ]
    for row in compared:
        met = row.met()
        mark = "" if met is None else ("yes" if met else "**no**")
        ratio = row.ratio
        shown = "-" if ratio is None else f"{ratio:.3f}"
        if len(row.ratios) > 1:
            shown += f" ({min(row.ratios):.3f}-{max(row.ratios):.3f})"
        lines.append(
            f"| {row.comparison.label} | {_fmt(row.ours)} | {_fmt(row.ceiling)} | {shown} "
            f"| {row.comparison.target.text} | {mark} |"
        )
    return "\n".join(lines)

"""Results, targets, the markdown table, machine information and the JSON report."""

from __future__ import annotations

import json
import os
import platform
import sqlite3
import statistics
import subprocess
import sys
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any, Literal

import attrs

Op = Literal[">=", "<=", "<"]


@attrs.frozen
class Target:
    """A goal for a metric: ``value op threshold``."""

    op: Op
    threshold: float
    text: str  # as shown in the table

    def met(self, value: float) -> bool:
        if self.op == ">=":
            return value >= self.threshold
        if self.op == "<=":
            return value <= self.threshold
        return value < self.threshold


@attrs.define
class Result:
    """One metric of one workload on one store, measured once per repeat."""

    workload: str
    store: str
    metric: str
    unit: str
    values: list[float] = attrs.field(factory=list)
    target: Target | None = None
    note: str = ""

    @property
    def median(self) -> float:
        return statistics.median(self.values)

    @property
    def spread(self) -> float:
        """(max - min) / median: how noisy the repeats were."""
        med = self.median
        return (max(self.values) - min(self.values)) / med if med else 0.0

    def met(self) -> bool | None:
        if self.target is None or not self.values:
            return None
        return self.target.met(self.median)

    def to_json(self) -> dict[str, Any]:
        met = self.met()
        return {
            "workload": self.workload,
            "store": self.store,
            "metric": self.metric,
            "unit": self.unit,
            "values": self.values,
            "median": self.median if self.values else None,
            "min": min(self.values) if self.values else None,
            "max": max(self.values) if self.values else None,
            "target": None if self.target is None else self.target.text,
            "met": met,
            "note": self.note,
        }


class Results:
    """Results keyed by (workload, store, metric), in the order they were first added."""

    def __init__(self) -> None:
        self._by_key: dict[tuple[str, str, str], Result] = {}

    def add(
        self,
        workload: str,
        store: str,
        metric: str,
        unit: str,
        value: float,
        target: Target | None = None,
        note: str = "",
    ) -> None:
        key = (workload, store, metric)
        result = self._by_key.get(key)
        if result is None:
            result = self._by_key[key] = Result(workload, store, metric, unit, target=target)
        result.values.append(value)
        if note:
            result.note = note

    def get(self, workload: str, store: str, metric: str) -> Result | None:
        return self._by_key.get((workload, store, metric))

    def __iter__(self) -> Any:
        return iter(list(self._by_key.values()))


def fmt(value: float, unit: str) -> str:
    """A number as shown in the table."""
    if unit in ("calls/s", "rows/s"):
        return f"{value:,.0f}"
    if unit == "ms":
        return f"{value:.2f}"
    if unit == "MiB":
        return f"{value:.1f}"
    if unit == "s":
        return f"{value:.3f}"
    return f"{value:.3f}"


def markdown_table(results: Results) -> str:
    lines = [
        "| workload | store | metric | median | min | max | target | met? |",
        "| --- | --- | --- | ---: | ---: | ---: | --- | --- |",
    ]
    for r in results:
        if not r.values:
            continue
        met = r.met()
        mark = "" if met is None else ("yes" if met else "**no**")
        unit = "" if r.unit in ("", "x") else f" {r.unit}"
        metric = f"{r.metric} ({r.unit})" if unit else r.metric
        lines.append(
            f"| {r.workload} | {r.store} | {metric} | {fmt(r.median, r.unit)} "
            f"| {fmt(min(r.values), r.unit)} | {fmt(max(r.values), r.unit)} "
            f"| {'' if r.target is None else r.target.text} | {mark} |"
        )
    return "\n".join(lines)


def _cpu_model() -> str:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.processor() or "unknown"
    for line in text.splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def _version(package: str) -> str | None:
    try:
        return version(package)
    except PackageNotFoundError:
        return None


def _git(*args: str) -> str | None:
    try:
        out = subprocess.run(
            ["git", *args], capture_output=True, text=True, check=True, timeout=10
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    return out.strip()


def _memory_total_mib() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def machine_info() -> dict[str, Any]:
    """What the numbers were measured on (PostgreSQL's version is added by the caller)."""
    status = _git("status", "--porcelain", "--untracked-files=no")
    return {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "cpu_model": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "memory_total_mib": _memory_total_mib(),
        "platform": platform.platform(),
        "python": sys.version.split()[0],
        "python_implementation": platform.python_implementation(),
        "trio": _version("trio"),
        "trio_asyncio": _version("trio-asyncio"),
        "asyncpg": _version("asyncpg"),
        "attrs": _version("attrs"),
        "sqlite": sqlite3.sqlite_version,
        "git_commit": _git("rev-parse", "HEAD"),
        "git_dirty": None if status is None else bool(status),
        "loadavg_at_start": list(os.getloadavg()),
    }


def write_report(
    path: Path,
    *,
    machine: dict[str, Any],
    config: dict[str, Any],
    results: Results,
    errors: Sequence[str],
    notes: Sequence[str],
    comparisons: Sequence[dict[str, Any]] = (),
) -> None:
    machine = {**machine, "loadavg_at_end": list(os.getloadavg())}
    report = {
        "machine": machine,
        "config": config,
        "results": [r.to_json() for r in results if r.values],
        "comparisons": list(comparisons),
        "errors": list(errors),
        "notes": list(notes),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2) + "\n")


def noise_summary(results: Results, keep: Callable[[Result], bool] | None = None) -> str:
    """One line: the largest relative spread (max - min) / median across repeats."""
    spreads = [
        (r.spread, r)
        for r in results
        if len(r.values) > 1 and r.unit not in ("ms",) and (keep is None or keep(r))
    ]
    if not spreads:
        return "noise: only one repeat per metric (no spread to report)"
    spreads.sort(key=lambda item: item[0])
    worst, r = spreads[-1]
    median_spread = statistics.median(s for s, _ in spreads)
    return (
        f"noise: (max - min) / median across repeats is {median_spread:.0%} for the typical "
        f"metric, {worst:.0%} at worst ({r.workload}/{r.store}/{r.metric})"
    )

"""The ``adaptive`` workload: ``Adaptive(1, 64)`` against fixed limits, on a simulated
downstream (issue 14).

The downstream serves :data:`CAPACITY` requests at once in :data:`BASE` seconds; past
that it queues them, so latency grows linearly (``BASE * in_flight / capacity``, where
``in_flight`` counts the request itself as it arrives), and past :data:`FAIL_PAST` at
once a request hangs until the call's ``timeout`` (1 s) fails it. Its best throughput
is ``CAPACITY / BASE`` = 400 calls/s, reached with anywhere from 8 to 32 calls at once.

1. **Throughput**: one class, thousands of due calls, for :data:`STEADY_SECONDS`
   seconds from the scheduler's start (so an adaptive limit's ramp-up counts against
   it), with ``Adaptive(1, 64)`` and with each fixed limit of :data:`FIXED_LIMITS`.
   Successful calls per second.
2. **Settling and recovery**: ``Adaptive(1, 64)`` for three phases of
   :data:`PHASE_SECONDS`: capacity 8 (hangs past 32), then 4 (hangs past 16), then 8
   again; the limit in force sampled every 0.25 s. For each phase: the time from its
   start until the limit stays within the phase's good band (``capacity`` to
   ``fail_past``: best throughput, no timeouts) for the rest of the phase, the limit
   at its end, the calls served per second and the timeouts.

Runs on the memory store: it measures the controller, not a database. Medians of
``--repeat`` runs.
"""

from __future__ import annotations

import logging
import math
import os
import statistics
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Final

import attrs
import trio

from trio_futurecalls import Adaptive, FutureCall, MemoryStore, open_scheduler

#: Unloaded latency of the downstream (seconds).
BASE: Final = 0.020
#: Requests it serves at once at BASE; and past how many at once a request hangs.
CAPACITY: Final = 8
FAIL_PAST: Final = 32
#: The call's timeout (seconds): a hanging request fails after this.
TIMEOUT: Final = 1.0
STEADY_SECONDS: Final = 10.0
PHASE_SECONDS: Final = 15.0
FIXED_LIMITS: Final = (1, 2, 4, 8, 12, 16, 24, 32, 48, 64)
#: Seconds between samples of the limit in force.
SAMPLE_EVERY: Final = 0.25
#: Calls scheduled up front: more than the best throughput could run.
BACKLOG_PER_SECOND: Final = 600


@attrs.define
class Downstream:
    """The simulated service (see the module's description); its shape may change."""

    capacity: int = CAPACITY
    fail_past: int = FAIL_PAST
    in_flight: int = 0
    served: int = 0
    latency_sum: float = 0.0

    async def request(self) -> None:
        self.in_flight += 1
        try:
            if self.in_flight > self.fail_past:
                await trio.sleep_forever()
            latency = BASE * max(1.0, self.in_flight / self.capacity)
            await trio.sleep(latency)
            self.served += 1
            self.latency_sum += latency
        finally:
            self.in_flight -= 1


def _call_class(downstream: Downstream, limit: int | Adaptive) -> type[FutureCall]:
    class Partner(FutureCall):
        name = "bench-partner"
        max_concurrent = limit
        timeout = TIMEOUT

        async def invoke(self, session: Any, payload: Any) -> None:
            await downstream.request()

    return Partner


async def _backlog(scheduler: Any, cls: type[FutureCall], seconds: float) -> None:
    n = int(BACKLOG_PER_SECOND * seconds)
    for start in range(0, n, 1000):
        await scheduler.schedule_many([(cls, None, 0.0)] * min(1000, n - start))


def steady(limit: int | Adaptive, seconds: float) -> dict[str, float]:
    """Successful calls/s, timeouts and mean latency over ``seconds`` from the start."""

    async def main() -> dict[str, float]:
        downstream = Downstream()
        cls = _call_class(downstream, limit)
        store = MemoryStore()
        async with open_scheduler(store, [cls], max_concurrent=None, grace_period=0) as s:
            await _backlog(s, cls, seconds)
            downstream.served = 0
            started = time.perf_counter()
            await trio.sleep(seconds)
            elapsed = time.perf_counter() - started
            served = downstream.served
            stats = s.statistics().classes[cls.name]
            latency = downstream.latency_sum / served if served else 0.0
            result = {
                "throughput": served / elapsed,
                "timeouts": float(stats.failed),
                "latency_ms": latency * 1000,
                "final_limit": float(stats.current_limit or 0),
            }
            await s.shutdown(0)
        return result

    return trio.run(main)


#: (capacity, fail_past) of each phase of the settling run.
PHASES: Final = ((CAPACITY, FAIL_PAST), (CAPACITY // 2, FAIL_PAST // 2), (CAPACITY, FAIL_PAST))


def phases(seconds: float) -> list[dict[str, Any]]:
    """The settling run: per phase, settle times, final limit, throughput, timeouts,
    and the limit at each whole second."""

    async def main() -> list[dict[str, Any]]:
        downstream = Downstream()
        cls = _call_class(downstream, Adaptive(1, 64))
        out = []
        async with open_scheduler(MemoryStore(), [cls], max_concurrent=None, grace_period=0) as s:
            await _backlog(s, cls, seconds * len(PHASES))
            for capacity, fail_past in PHASES:
                downstream.capacity, downstream.fail_past = capacity, fail_past
                served, failed = downstream.served, s.statistics().classes[cls.name].failed
                samples: list[tuple[float, int]] = []
                start = time.perf_counter()
                while (now := time.perf_counter()) - start < seconds:
                    limit = s.statistics().classes[cls.name].current_limit
                    samples.append((now - start, limit or 0))
                    await trio.sleep(SAMPLE_EVERY)
                elapsed = time.perf_counter() - start
                end = samples[-1][1]
                out.append(
                    {
                        "settle_s": _settled_at(samples, capacity, fail_past),
                        "level_s": _settled_at(
                            samples, math.floor(end * 0.8), math.ceil(end * 1.2)
                        ),
                        "trace": [float(limit) for at, limit in samples if _whole(at)],
                        "final_limit": float(samples[-1][1]),
                        "throughput": (downstream.served - served) / elapsed,
                        "timeouts": float(s.statistics().classes[cls.name].failed - failed),
                    }
                )
            await s.shutdown(0)
        return out

    return trio.run(main)


def _whole(at: float) -> bool:
    """True for the sample nearest each whole second (samples come every 0.25 s)."""
    return abs(at - round(at)) < SAMPLE_EVERY / 2


def _settled_at(samples: Sequence[tuple[float, int]], low: int, high: int) -> float:
    """Seconds until the limit entered ``low..high`` for good (inf: it never did)."""
    # The first sample after the last one outside the band.
    last_out = -1
    for i, (_, limit) in enumerate(samples):
        if not low <= limit <= high:
            last_out = i
    if last_out == len(samples) - 1:
        return float("inf")
    return samples[last_out + 1][0] if last_out >= 0 else 0.0


@attrs.frozen
class Report:
    """Medians of the repeats, and the runs behind them."""

    steady: dict[str, list[dict[str, float]]]
    phases: list[list[dict[str, Any]]]
    repeat: int
    seconds: float
    phase_seconds: float
    load: tuple[tuple[float, ...], tuple[float, ...]]


def measure(
    repeat: int, *, quick: bool = False, log: Any = print, fixed: Sequence[int] = FIXED_LIMITS
) -> Report:
    """Run both parts ``repeat`` times."""
    seconds = 3.0 if quick else STEADY_SECONDS
    phase_seconds = 5.0 if quick else PHASE_SECONDS
    limits: list[int | Adaptive] = [Adaptive(1, 64), *fixed]
    # Every timeout logs an error and the shutdown a warning per running call: the
    # fixed limits past 32 would flood the output.
    logging.getLogger("trio_futurecalls").setLevel(logging.CRITICAL)
    load_start = os.getloadavg()
    runs: dict[str, list[dict[str, float]]] = {_label(limit): [] for limit in limits}
    for i in range(repeat):
        for limit in limits:
            result = steady(limit, seconds)
            runs[_label(limit)].append(result)
            log(
                f"adaptive/steady {_label(limit)} {i + 1}/{repeat}: "
                f"{result['throughput']:,.0f} calls/s, {result['timeouts']:.0f} timeouts, "
                f"{result['latency_ms']:.1f} ms, final limit {result['final_limit']:.0f}"
            )
    phase_runs = []
    for i in range(repeat):
        result_phases = phases(phase_seconds)
        phase_runs.append(result_phases)
        log(f"adaptive/phases {i + 1}/{repeat}: {result_phases}")
    return Report(
        steady=runs,
        phases=phase_runs,
        repeat=repeat,
        seconds=seconds,
        phase_seconds=phase_seconds,
        load=(load_start, os.getloadavg()),
    )


def _label(limit: int | Adaptive) -> str:
    return f"Adaptive({limit.min}, {limit.max})" if isinstance(limit, Adaptive) else f"{limit}"


def _median(runs: list[dict[str, float]], key: str) -> float:
    return statistics.median(r[key] for r in runs)


def _runs(runs: list[dict[str, float]], key: str, fmt: str) -> str:
    return ", ".join(format(r[key], fmt) for r in runs)


def best_fixed(report: Report) -> tuple[str, float]:
    """The fixed limit with the best median throughput, and that throughput."""
    fixed = {k: _median(v, "throughput") for k, v in report.steady.items() if k.isdigit()}
    label = max(fixed, key=lambda k: fixed[k])
    return label, fixed[label]


def markdown(report: Report, command: str) -> str:
    adaptive = next(k for k in report.steady if not k.isdigit())
    best_label, best = best_fixed(report)
    ours = _median(report.steady[adaptive], "throughput")
    lines = [
        f"# adaptive concurrency ({time.strftime('%Y-%m-%d %H:%M', time.gmtime())} UTC, "
        f"{os.cpu_count()} cores)",
        "",
        f"Simulated downstream: {BASE * 1000:g} ms up to {CAPACITY} requests at once, latency "
        f"growing linearly beyond (`{BASE * 1000:g} ms x in_flight / {CAPACITY}`), requests "
        f"hang past {FAIL_PAST} at once until the call's {TIMEOUT:g} s timeout fails them. "
        f"Best possible: {CAPACITY / BASE:,.0f} calls/s, with {CAPACITY} to {FAIL_PAST} "
        "calls at once. Memory store, one class, a backlog of due calls.",
        "",
        f"## throughput: successful calls/s over the first {report.seconds:g} s (ramp-up included)",
        "",
        "| limit | calls/s (median) | runs | timeouts (median) | mean latency ms | "
        "limit at the end |",
        "| --- | ---: | --- | ---: | ---: | ---: |",
    ]
    for label, runs in report.steady.items():
        name = f"`{label}`" if label == adaptive else f"fixed {label}"
        if label == best_label:
            name += " (best fixed)"
        if label in ("1", "64"):
            name += " (a default)" if label == "1" else " (the issue's other default)"
        lines.append(
            f"| {name} | {_median(runs, 'throughput'):,.0f} | {_runs(runs, 'throughput', ',.0f')} "
            f"| {_median(runs, 'timeouts'):.0f} | {_median(runs, 'latency_ms'):.1f} "
            f"| {_median(runs, 'final_limit'):.0f} |"
        )
    lines += [
        "",
        f"`Adaptive(1, 64)` / best fixed ({best_label}): **{ours / best:.2f}** "
        "(the issue's target: >= 0.9).",
        "",
        f"## settling and recovery: `Adaptive(1, 64)`, three phases of {report.phase_seconds:g} s",
        "",
        "| phase | downstream | in the good band within (s) | runs | at its end level "
        "within (s) | runs | limit at the end | calls/s | timeouts |",
        "| --- | --- | ---: | --- | ---: | --- | ---: | ---: | ---: |",
    ]
    for i, (capacity, fail_past) in enumerate(PHASES):
        runs = [r[i] for r in report.phases]
        lines.append(
            f"| {i + 1} | capacity {capacity}, hangs past {fail_past} (good band "
            f"{capacity}..{fail_past}) | {_median(runs, 'settle_s'):.2f} "
            f"| {_runs(runs, 'settle_s', '.2f')} | {_median(runs, 'level_s'):.2f} "
            f"| {_runs(runs, 'level_s', '.2f')} | {_median(runs, 'final_limit'):.0f} "
            f"({_runs(runs, 'final_limit', '.0f')}) | {_median(runs, 'throughput'):,.0f} "
            f"| {_median(runs, 'timeouts'):.0f} |"
        )
    start, end = report.load
    lines += [
        "",
        '"In the good band within": seconds from the phase\'s start until the limit in '
        "force (sampled every 0.25 s) entered the band (best throughput, no timeouts) and "
        'stayed in it to the phase\'s end. "At its end level within": until it came within '
        "20 % of its value at the phase's end and stayed there (how long the change took).",
        "",
        "The limit at each second of the first run (phases separated by `|`): "
        + " | ".join(" ".join(f"{v:.0f}" for v in phase["trace"]) for phase in report.phases[0])
        + ".",
        "",
        f"Command: `{command}`; medians of {report.repeat} runs (each run listed).",
        "",
        f"Noise: load average {start[0]:.2f} / {start[1]:.2f} / {start[2]:.2f} at the "
        f"start and {end[0]:.2f} / {end[1]:.2f} / {end[2]:.2f} at the end, on "
        f"{os.cpu_count()} cores shared with other jobs; the runs of each row show the "
        "spread. Real time (`trio.sleep` latencies), so a loaded machine shows as event-"
        "loop lag and later wake-ups.",
    ]
    return "\n".join(lines) + "\n"


def write(report: Report, command: str, path: Path) -> str:
    text = markdown(report, command)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return text

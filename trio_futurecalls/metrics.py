"""Prometheus metrics for a running scheduler.

Optional: needs the ``prometheus`` extra (``pip install 'trio_futurecalls[prometheus]'``).

Serve them over HTTP from inside the Trio program that runs the scheduler::

    from trio_futurecalls.metrics import serve_metrics

    async with open_scheduler(store, calls) as scheduler, trio.open_nursery() as nursery:
        port = await nursery.start(partial(serve_metrics, scheduler, port=9464))
        ...

or add :class:`SchedulerCollector` to a ``prometheus_client`` registry of your own.

The HTTP side is ``prometheus_client``'s ASGI app served by Hypercorn's Trio worker
(``_metrics_http.py``), inside the caller's nursery; the metrics come from a private
``CollectorRegistry``, so nothing leaks into the global default registry. Counters and
histograms are read from :meth:`Scheduler.statistics` at scrape time; the queue lengths
(pending and due calls per name) and the recurring schedules need the store, which is
read before each scrape (both queries within one ``store_timeout``, 5 s); when the
store cannot answer, ``futurecalls_store_up`` is 0 and the queue-length and recurring
metrics are left out (the recurring metrics alone when only that query fails).

Metrics (``call_class`` is the call class's ``name``):

* ``futurecalls_calls_started_total{call_class}``
* ``futurecalls_calls_finished_total{call_class, outcome}``
  (``outcome``: ``succeeded``, ``failed``, ``cancelled``)
* ``futurecalls_calls_retried_total{call_class}``: failed attempts scheduled again
* ``futurecalls_calls_dead_lettered_total{call_class}``: calls kept as dead letters
* ``futurecalls_calls_running{call_class}``
* ``futurecalls_calls_pending{call_class}``: pending calls in the store (also names no
  registered class matches)
* ``futurecalls_calls_due_waiting{call_class}``: pending calls already due (waiting for
  a free slot)
* ``futurecalls_calls_waiting_prerequisites{call_class}``: pending calls waiting for
  prerequisites (``after=``) to succeed; not due, whatever their due time
* ``futurecalls_call_wait_seconds{call_class}``: histogram of start minus due time
* ``futurecalls_call_run_seconds{call_class}``: histogram of execution time
* ``futurecalls_concurrency_limit{call_class}``: per-class limit (``+Inf``: unlimited;
  an adaptive limit's ``max``)
* ``futurecalls_concurrency_current_limit{call_class}``: the per-class limit in force
  now (an adaptive limit's current value; else the same as the limit)
* ``futurecalls_class_paused{call_class}``: 1 if the class is paused in the store
  (no worker starts its calls), else 0; as the scheduler last read it, which the
  scrape refreshes (it reads the queue lengths)
* ``futurecalls_global_concurrency_limit``: the scheduler's global limit (``+Inf``:
  unlimited). A separate metric rather than a ``call_class="global"`` label, because
  ``global`` is a valid call-class name.
* ``futurecalls_global_concurrency_current_limit``: the global limit in force now
* ``futurecalls_store_up``: 1 if the last queue-length query succeeded, else 0
* ``futurecalls_executor_capacity{executor}``, ``futurecalls_executor_busy{executor}``:
  worker threads (``executor="thread"``) and processes (``"process"``) that may run
  calls' work at once, and those running now
* ``futurecalls_executor_abandoned{executor}``: threads whose call was cancelled but
  which still run (each keeps its call's slots until it ends); 0 for processes

Per recurring schedule (``key`` is the schedule's key), read from the store:

* ``futurecalls_recurring_next_tick_timestamp_seconds{key}``: its next tick (Unix
  time); absent once the schedule is finished
* ``futurecalls_recurring_last_tick_timestamp_seconds{key}``: the tick of its latest
  run; absent until it first runs
* ``futurecalls_recurring_runs_total{key}``: runs created
* ``futurecalls_recurring_skipped_total{key, reason}``: ticks not run (``reason``:
  ``overlap``, the previous run was not done; ``misfire``, missed while no worker ran)
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator
from typing import Final, final

import trio

try:
    from hypercorn.typing import ASGIFramework
    from prometheus_client import CollectorRegistry
    from prometheus_client.core import (
        CounterMetricFamily,
        GaugeMetricFamily,
        HistogramMetricFamily,
    )
    from prometheus_client.registry import Collector

    from ._metrics_http import scrape_app, serve_asgi
except ImportError as exc:  # pragma: no cover - exercised by a test with the module hidden
    raise ImportError(
        "trio_futurecalls.metrics needs prometheus-client and Hypercorn; install the "
        "`prometheus` extra: pip install 'trio_futurecalls[prometheus]'"
    ) from exc

from ._errors import FutureCallsError, InvalidArgumentError
from ._executors import ExecutorStatistics
from ._model import RecurringInfo
from ._scheduler import Scheduler
from ._stats import BUCKETS, Distribution, QueueLength
from ._validate import check_host

__all__ = ["SchedulerCollector", "histogram_buckets", "metrics_app", "serve_metrics"]

_log = logging.getLogger("trio_futurecalls.metrics")

_OUTCOMES: Final = ("succeeded", "failed", "cancelled")


def _le(bound: float) -> str:
    return "+Inf" if math.isinf(bound) else repr(float(bound))


def histogram_buckets(distribution: Distribution) -> list[tuple[str, float]]:
    """Prometheus buckets (``le`` label, *cumulative* count) of a :class:`Distribution`.

    ``Distribution.counts`` holds one non-cumulative count per :data:`BUCKETS` bound;
    Prometheus wants the running total, ending with ``+Inf`` (the total count).
    """
    out: list[tuple[str, float]] = []
    total = 0
    for bound, count in zip(BUCKETS, distribution.counts, strict=True):
        total += count
        out.append((_le(bound), float(total)))
    return out


def _limit(value: int | None) -> float:
    return math.inf if value is None else float(value)


@final
class SchedulerCollector(Collector):
    """A ``prometheus_client`` collector reading one :class:`Scheduler`.

    :meth:`collect` is synchronous (as ``prometheus_client`` requires) and reads
    :meth:`Scheduler.statistics`; queue lengths and recurring schedules come from the
    last :meth:`refresh_queue_lengths`, which is async (store queries) and must be
    awaited before a scrape (:func:`serve_metrics` does) or periodically.
    """

    def __init__(self, scheduler: Scheduler, *, store_timeout: float = 5.0) -> None:
        self._scheduler = scheduler
        self._store_timeout = store_timeout
        self._queues: dict[str, QueueLength] | None = None
        self._recurring: list[RecurringInfo] | None = None
        self._store_up = False

    async def refresh_queue_lengths(self) -> bool:
        """Read the queue lengths and the recurring schedules from the store (both
        within ``store_timeout`` seconds).

        Returns False, and leaves the queue-length and recurring metrics out, when the
        store fails; when only the schedules cannot be read, their metrics alone are
        left out.
        """
        queues: dict[str, QueueLength] | None = None
        recurring: list[RecurringInfo] | None = None
        with trio.move_on_after(self._store_timeout):
            try:
                queues = await self._scheduler.queue_lengths()
            except FutureCallsError as exc:
                _log.warning("metrics: could not read queue lengths from the store: %s", exc)
            else:
                # On its own: a schedule row no one can read hides only these metrics.
                try:
                    recurring = await self._scheduler.recurring()
                except FutureCallsError as exc:
                    _log.warning("metrics: could not read recurring schedules: %s", exc)
        self._store_up = queues is not None
        self._queues = queues
        self._recurring = recurring
        return self._store_up

    def collect(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily | HistogramMetricFamily]:
        stats = self._scheduler.statistics()
        classes = sorted(stats.classes.values(), key=lambda c: c.name)

        started = CounterMetricFamily(
            "futurecalls_calls_started_total", "Calls started.", labels=["call_class"]
        )
        finished = CounterMetricFamily(
            "futurecalls_calls_finished_total",
            "Calls finished, by outcome (succeeded, failed, cancelled).",
            labels=["call_class", "outcome"],
        )
        retried = CounterMetricFamily(
            "futurecalls_calls_retried_total",
            "Failed attempts that were scheduled again.",
            labels=["call_class"],
        )
        dead_lettered = CounterMetricFamily(
            "futurecalls_calls_dead_lettered_total",
            "Calls given up on and kept as dead letters.",
            labels=["call_class"],
        )
        running = GaugeMetricFamily(
            "futurecalls_calls_running", "Calls running now.", labels=["call_class"]
        )
        wait = HistogramMetricFamily(
            "futurecalls_call_wait_seconds",
            "Time from a call's due time to its start.",
            labels=["call_class"],
        )
        run = HistogramMetricFamily(
            "futurecalls_call_run_seconds",
            "Execution time of finished calls.",
            labels=["call_class"],
        )
        limit = GaugeMetricFamily(
            "futurecalls_concurrency_limit",
            "Per-class limit on calls running at once (+Inf: unlimited).",
            labels=["call_class"],
        )
        current = GaugeMetricFamily(
            "futurecalls_concurrency_current_limit",
            "Per-class limit in force now (an adaptive limit's current value; +Inf: unlimited).",
            labels=["call_class"],
        )
        paused = GaugeMetricFamily(
            "futurecalls_class_paused",
            "1 if the class is paused in the store (no worker starts its calls), else 0.",
            labels=["call_class"],
        )
        for c in classes:
            started.add_metric([c.name], c.started)
            for outcome in _OUTCOMES:
                finished.add_metric([c.name, outcome], getattr(c, outcome))
            retried.add_metric([c.name], c.retried)
            dead_lettered.add_metric([c.name], c.dead_lettered)
            running.add_metric([c.name], c.running)
            wait.add_metric([c.name], histogram_buckets(c.wait), c.wait.sum)
            run.add_metric([c.name], histogram_buckets(c.run), c.run.sum)
            limit.add_metric([c.name], _limit(c.max_concurrent))
            current.add_metric([c.name], _limit(c.current_limit))
            paused.add_metric([c.name], 1.0 if c.paused else 0.0)
        yield from (started, finished, retried, dead_lettered, running, wait, run, limit)
        yield from (current, paused)
        yield GaugeMetricFamily(
            "futurecalls_global_concurrency_limit",
            "Scheduler-wide limit on calls running at once (+Inf: unlimited).",
            value=_limit(stats.max_concurrent),
        )
        yield from _executor_metrics(stats.threads, stats.processes)
        yield GaugeMetricFamily(
            "futurecalls_global_concurrency_current_limit",
            "Scheduler-wide limit in force now (an adaptive limit's current value).",
            value=_limit(stats.total.current_limit),
        )
        yield GaugeMetricFamily(
            "futurecalls_store_up",
            "1 if the last queue-length query to the store succeeded, else 0.",
            value=1.0 if self._store_up else 0.0,
        )
        if self._recurring is not None:
            yield from _recurring_metrics(self._recurring)
        if self._queues is not None:
            pending = GaugeMetricFamily(
                "futurecalls_calls_pending", "Pending calls in the store.", labels=["call_class"]
            )
            due = GaugeMetricFamily(
                "futurecalls_calls_due_waiting",
                "Pending calls already due, waiting for a free slot.",
                labels=["call_class"],
            )
            held = GaugeMetricFamily(
                "futurecalls_calls_waiting_prerequisites",
                "Pending calls waiting for prerequisites to succeed.",
                labels=["call_class"],
            )
            for name, queue in self._queues.items():
                pending.add_metric([name], queue.pending)
                due.add_metric([name], queue.due)
                held.add_metric([name], queue.waiting)
            yield from (pending, due, held)


def _executor_metrics(
    threads: ExecutorStatistics, processes: ExecutorStatistics
) -> Iterator[GaugeMetricFamily]:
    capacity = GaugeMetricFamily(
        "futurecalls_executor_capacity",
        "Worker threads or processes that may run calls' work at once.",
        labels=["executor"],
    )
    busy = GaugeMetricFamily(
        "futurecalls_executor_busy",
        "Worker threads or processes running calls' work now.",
        labels=["executor"],
    )
    abandoned = GaugeMetricFamily(
        "futurecalls_executor_abandoned",
        "Threads whose call was cancelled but which still run (holding its slots).",
        labels=["executor"],
    )
    for kind, pool in (("thread", threads), ("process", processes)):
        capacity.add_metric([kind], pool.capacity)
        busy.add_metric([kind], pool.busy)
        abandoned.add_metric([kind], pool.abandoned)
    yield from (capacity, busy, abandoned)


def _recurring_metrics(
    schedules: list[RecurringInfo],
) -> Iterator[CounterMetricFamily | GaugeMetricFamily]:
    """The metrics of each recurring schedule, from its values in the store."""
    next_tick = GaugeMetricFamily(
        "futurecalls_recurring_next_tick_timestamp_seconds",
        "Next tick of a recurring schedule, in Unix time (absent once finished).",
        labels=["key"],
    )
    last_tick = GaugeMetricFamily(
        "futurecalls_recurring_last_tick_timestamp_seconds",
        "Tick of a recurring schedule's latest run, in Unix time (absent before its first).",
        labels=["key"],
    )
    runs = CounterMetricFamily(
        "futurecalls_recurring_runs_total", "Runs a recurring schedule created.", labels=["key"]
    )
    skipped = CounterMetricFamily(
        "futurecalls_recurring_skipped_total",
        "Ticks of a recurring schedule not run, by reason (overlap, misfire).",
        labels=["key", "reason"],
    )
    for s in schedules:
        if s.next_tick is not None:
            next_tick.add_metric([s.key], s.next_tick.timestamp())
        if s.last_tick is not None:
            last_tick.add_metric([s.key], s.last_tick.timestamp())
        runs.add_metric([s.key], s.runs)
        skipped.add_metric([s.key, "overlap"], s.skipped_overlap)
        skipped.add_metric([s.key, "misfire"], s.skipped_misfire)
    yield from (next_tick, last_tick, runs, skipped)


async def serve_metrics(
    scheduler: Scheduler,
    *,
    port: int,
    host: str = "127.0.0.1",
    task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve ``scheduler``'s metrics over HTTP at ``http://host:port/metrics`` forever.

    ``port=0`` picks a free port. Start it with ``await nursery.start(...)``: set-up
    errors (port in use) surface there, and the value is the port actually bound.
    Cancel the enclosing scope to stop it.
    """
    if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
        raise InvalidArgumentError(f"port must be an int within 0..65535, got {port!r}")
    check_host(host)
    await serve_asgi(
        metrics_app(scheduler),
        host=host,
        port=port,
        what="metrics",
        path="/metrics",
        task_status=task_status,
    )


def metrics_app(scheduler: Scheduler) -> ASGIFramework:
    """``scheduler``'s metrics as an ASGI app answering ``GET /metrics`` (and ``/``).

    :func:`serve_metrics` serves it alone; the dashboard (``serve_dashboard``) mounts it
    at ``/metrics`` beside its pages, so that one port serves both.
    """
    collector = SchedulerCollector(scheduler)
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    return scrape_app(registry, collector.refresh_queue_lengths)

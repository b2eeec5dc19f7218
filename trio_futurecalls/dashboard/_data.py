"""What the dashboard's pages show, read from a store (and a scheduler, when there is one).

Over a bare store (``futurecalls dashboard --store URL``: no scheduler in this process)
the per-class numbers are what the store knows: queue lengths, pauses, the limits that
live workers registered and the cluster-wide limits; how many calls a class runs, and
its outcomes and timings, are only known to the scheduler that runs them. Over a
:class:`Scheduler`, its :meth:`~Scheduler.statistics` add those (for this process).

A store may hold rows another program wrote (a worker's ``limits`` of any shape): they
are read defensively and shown as text, never trusted to have the shape expected.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any, Final

import attrs

from .._errors import StoreClosedError, StoreError, StoreUnavailableError
from .._model import CallInfo, DeadLetter, StoredCall, WorkerInfo
from .._scheduler import Scheduler
from .._stats import ClassStatistics
from .._store import PendingQuery, Store

__all__ = ["ClassRow", "Overview", "Source", "find_call", "overview"]

#: Rows a list page reads at most (pages beyond are refused: narrow the filters).
MAX_ROWS: Final = 10_000


@attrs.frozen
class Source:
    """Where the dashboard reads: a store, and the scheduler running over it, if any."""

    store: Store
    scheduler: Scheduler | None = None
    #: How the store is named on pages (a URL with its password hidden).
    label: str = ""


@attrs.frozen(kw_only=True)
class ClassRow:
    """One call class (or name found in the store) on the overview."""

    name: str
    pending: int = 0
    due: int = 0
    waiting: int = 0
    #: None: not known here (over a bare store, or a name this scheduler does not run).
    running: int | None = None
    succeeded: int | None = None
    failed: int | None = None
    cancelled: int | None = None
    dead_lettered: int | None = None
    wait_p50: float | None = None
    wait_p95: float | None = None
    run_p50: float | None = None
    run_p95: float | None = None
    limit: str = "—"
    paused_at: datetime | None = None


@attrs.frozen(kw_only=True)
class Overview:
    rows: list[ClassRow]
    #: Calls running: this scheduler's, or (bare store) what live workers last reported.
    running: int
    global_limit: str
    workers: int
    #: Dead letters, counted up to MAX_ROWS (``dead_letters_capped``: there may be more);
    #: None when a row of them cannot be read (``dead_letters_problem`` says why).
    dead_letters: int | None
    dead_letters_capped: bool
    dead_letters_problem: str | None = None
    #: True when the per-class counters come from a scheduler in this process.
    with_scheduler: bool


def _limit_text(value: int | None) -> str:
    return "unlimited" if value is None else str(value)


def _current_limit_text(stat: ClassStatistics) -> str:
    """The limit in force; an adaptive one (``current_limit`` below its
    ``max_concurrent``) with its ceiling: ``"16 (adaptive, max 64)"``."""
    if stat.current_limit != stat.max_concurrent and stat.current_limit is not None:
        return f"{stat.current_limit} (adaptive, max {_limit_text(stat.max_concurrent)})"
    return _limit_text(stat.max_concurrent)


def _worker_limits(workers: Iterable[WorkerInfo]) -> tuple[dict[str, set[str]], set[str]]:
    """Per class, the limits the live workers registered; and their global limits."""
    classes: dict[str, set[str]] = {}
    overall: set[str] = set()
    for worker in workers:
        limits: Any = worker.limits
        if not isinstance(limits, dict):
            continue
        value = limits.get("max_concurrent")
        if value is None or (isinstance(value, int) and not isinstance(value, bool)):
            overall.add(_limit_text(value))
        per_class = limits.get("classes")
        if not isinstance(per_class, dict):
            continue
        for name, entry in per_class.items():
            if not isinstance(name, str) or not isinstance(entry, dict):
                continue
            value = entry.get("max_concurrent")
            if value is None or (isinstance(value, int) and not isinstance(value, bool)):
                classes.setdefault(name, set()).add(_limit_text(value))
    return classes, overall


def _sorted_limits(values: set[str]) -> str:
    return " / ".join(sorted(values, key=lambda v: (v == "unlimited", len(v), v)))


async def overview(source: Source, now: datetime) -> Overview:
    """Everything the overview shows, read at ``now``."""
    store = source.store
    queues = await store.pending_counts(now)
    paused = await store.paused()
    workers = await store.workers(now)
    cluster = await store.cluster_limits()
    dead: int | None = None
    dead_problem = None
    try:
        dead = len(await store.dead_letters(limit=MAX_ROWS))
    except (StoreUnavailableError, StoreClosedError):
        raise
    except StoreError as exc:
        # A dead-letter row another program wrote that cannot be read: the dead-letter
        # pages say which (and how to purge it); the queues are still shown here.
        dead_problem = str(exc)
    stats: dict[str, ClassStatistics] = {}
    if source.scheduler is not None:
        snapshot = source.scheduler.statistics()
        stats = snapshot.classes
        running = snapshot.running
        global_limit = _current_limit_text(snapshot.total)
    else:
        running = sum(w.running for w in workers)
        global_limit = _sorted_limits(_worker_limits(workers)[1]) or "—"
    registered, _ = _worker_limits(workers)
    cluster_text: dict[str, list[str]] = {}
    for stored in cluster:
        if stored.kind == "concurrency":
            text = f"cluster {stored.tokens}"
        else:
            per = stored.per.total_seconds() if stored.per is not None else 0.0
            text = f"rate {stored.tokens} per {per:g} s"
        cluster_text.setdefault(stored.name, []).append(text)
    names = sorted({*queues, *paused, *stats, *registered})
    rows = []
    for name in names:
        queue = queues.get(name)
        stat = stats.get(name)
        if stat is not None:
            local = _current_limit_text(stat)
        else:
            local = _sorted_limits(registered.get(name, set())) or "—"
        limit = " · ".join([local, *cluster_text.get(name, [])])
        fields: dict[str, Any] = {}
        if stat is not None:
            fields = {
                "running": stat.running,
                "succeeded": stat.succeeded,
                "failed": stat.failed,
                "cancelled": stat.cancelled,
                "dead_lettered": stat.dead_lettered,
                "wait_p50": stat.wait.p50,
                "wait_p95": stat.wait.p95,
                "run_p50": stat.run.p50,
                "run_p95": stat.run.p95,
            }
        rows.append(
            ClassRow(
                name=name,
                pending=queue.pending if queue else 0,
                due=queue.due if queue else 0,
                waiting=queue.waiting if queue else 0,
                limit=limit,
                paused_at=paused.get(name),
                **fields,
            )
        )
    if "*" in cluster_text:
        global_limit = " · ".join([global_limit, *cluster_text["*"]])
    return Overview(
        rows=rows,
        running=running,
        global_limit=global_limit,
        workers=len(workers),
        dead_letters=dead,
        dead_letters_capped=dead is not None and dead >= MAX_ROWS,
        dead_letters_problem=dead_problem,
        with_scheduler=source.scheduler is not None,
    )


@attrs.frozen(kw_only=True)
class CallView:
    """What is known of one call id: its pending row, the run in this process, and its
    dead letters (a call requeued and failed again has several)."""

    call_id: int
    pending: StoredCall | None = None
    running: CallInfo | None = None
    dead_letters: list[DeadLetter] = attrs.Factory(list)

    @property
    def found(self) -> bool:
        return bool(self.pending or self.running or self.dead_letters)


async def find_call(
    source: Source, call_id: int, now: datetime, name: str | None = None
) -> CallView:
    """Look for ``call_id`` among pending rows (of ``name`` when the link said it; read
    at most :data:`MAX_ROWS`: the store protocol has no lookup by id), this scheduler's
    running calls and dead letters."""
    pending = None
    for call in await source.store.pending(PendingQuery(name=name, now=now, limit=MAX_ROWS)):
        if call.id == call_id:
            pending = call
            break
    running = None
    if source.scheduler is not None:
        running = next((c for c in source.scheduler.running() if c.id == call_id), None)
    dead = [d for d in await source.store.dead_letters(limit=MAX_ROWS) if d.call_id == call_id]
    return CallView(call_id=call_id, pending=pending, running=running, dead_letters=dead)

"""The workers registry on PostgreSQL: statement arguments and rows read back.

Every operation is one statement of ``queries.sql`` (``worker_register``,
``worker_heartbeat``, which renews a row and deletes the expired ones together,
``worker_deregister``, which deletes the row, frees the worker's tokens and sends
the NOTIFY together, and ``workers_live``). The table's types and CHECKs keep most odd
values out; what they let through (limits that are not a JSON object, a name with
characters the library refuses) leaves that row out of the listing, with a warning.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ..._model import WorkerInfo
from ..._validate import check_time
from ..._validate_workers import (
    check_pid,
    check_running,
    check_worker_host,
    check_worker_id,
    limits_from_text,
    limits_text,
    readable_workers,
)


def register_args(worker: WorkerInfo) -> tuple[Any, ...]:
    return (
        worker.id,
        worker.host,
        worker.pid,
        worker.started_at,
        worker.heartbeat_at,
        worker.expires_at,
        worker.running,
        limits_text(worker.limits),
    )


def live_workers(rows: Sequence[Any]) -> list[WorkerInfo]:
    return readable_workers(rows, _worker, lambda row: repr(row[0]))


def _worker(row: Any) -> WorkerInfo:
    worker_id, host, pid, started, beat, expires, running, limits = row
    return WorkerInfo(
        id=check_worker_id(worker_id, "id"),
        host=check_worker_host(host),
        pid=check_pid(pid),
        started_at=check_time(started, "started_at"),
        heartbeat_at=check_time(beat, "heartbeat_at"),
        expires_at=check_time(expires, "expires_at"),
        running=check_running(running),
        limits=limits_from_text(limits),
    )

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
    limits_text,
    readable_workers,
    worker_from_row,
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
    return worker_from_row(row, check_time)

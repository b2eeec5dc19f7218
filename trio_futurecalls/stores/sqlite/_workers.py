"""The workers registry in SQLite: what each store method runs on the connection.

Each write runs in the store's ``BEGIN IMMEDIATE`` transaction (a heartbeat renews its
row and deletes the expired ones together; deregistering deletes the row and frees
the worker's tokens together). Rows are read defensively: a row another program
wrote (with ``PRAGMA ignore_check_constraints``, say) that is not a valid worker is
left out of the listing with a warning (``_validate_workers.readable_workers``).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping, Sequence
from datetime import datetime

from ..._errors import InvalidArgumentError
from ..._model import WorkerInfo
from ..._validate_workers import (
    limits_text,
    readable_workers,
    worker_from_row,
)
from ._connection import from_micros, to_micros
from ._rows import EARLIEST_MICROS, LATEST_MICROS, show


def register(q: Mapping[str, str], worker: WorkerInfo, conn: sqlite3.Connection) -> None:
    conn.execute(
        q["worker_register"],
        (
            worker.id,
            worker.host,
            worker.pid,
            to_micros(worker.started_at),
            to_micros(worker.heartbeat_at),
            to_micros(worker.expires_at),
            worker.running,
            limits_text(worker.limits),
        ),
    )


def heartbeat(
    q: Mapping[str, str],
    worker_id: str,
    now: datetime,
    expires_at: datetime,
    running: int,
    conn: sqlite3.Connection,
) -> bool:
    now_us = to_micros(now)
    renewed = conn.execute(
        q["worker_heartbeat"], (worker_id, now_us, to_micros(expires_at), running)
    ).rowcount
    conn.execute(q["workers_expire"], (now_us,))
    return bool(renewed)


def deregister(q: Mapping[str, str], worker_id: str, conn: sqlite3.Connection) -> int:
    """Delete the row and free the worker's tokens; how many tokens were freed."""
    conn.execute(q["worker_delete"], (worker_id,))
    freed: int = conn.execute(q["worker_free_tokens"], (worker_id,)).rowcount
    return freed


def live(q: Mapping[str, str], now: datetime, conn: sqlite3.Connection) -> list[WorkerInfo]:
    rows = conn.execute(q["workers_live"], (to_micros(now),)).fetchall()
    return readable_workers(rows, _worker, lambda row: show(row[0]))


def _time(value: object, what: str) -> datetime:
    if type(value) is int and EARLIEST_MICROS <= value <= LATEST_MICROS:
        return from_micros(value)
    raise InvalidArgumentError(f"{what} is not a stored time: {show(value)}")


def _worker(row: Sequence[object]) -> WorkerInfo:
    return worker_from_row(row, _time)

"""The memory store's workers registry.

The memory store treats its process as the cluster: each scheduler on it registers
here as it would in a database's ``workers`` table, and the concurrency tokens of
cluster-wide limits (``_memory_cluster.py``) ask :meth:`MemoryWorkers.expiry` whether
their holder is alive.
"""

from __future__ import annotations

from datetime import datetime

import attrs

from .._errors import InvalidArgumentError
from .._model import WorkerInfo
from .._validate_workers import check_worker, readable_workers


class MemoryWorkers:
    """Worker rows by id."""

    def __init__(self) -> None:
        self.rows: dict[str, WorkerInfo] = {}

    def register(self, worker: WorkerInfo) -> None:
        self.rows[worker.id] = worker

    def heartbeat(self, worker_id: str, now: datetime, expires_at: datetime, running: int) -> bool:
        for other in [w for w in self.rows.values() if _expired(w, now)]:
            del self.rows[other.id]
        current = self.rows.get(worker_id)
        if current is None:
            return False
        self.rows[worker_id] = attrs.evolve(
            current, heartbeat_at=now, expires_at=expires_at, running=running
        )
        return True

    def deregister(self, worker_id: str) -> None:
        """Delete the row (the store frees the worker's tokens)."""
        self.rows.pop(worker_id, None)

    def expiry(self, worker_id: str, now: datetime) -> datetime | None:
        """Until when ``worker_id`` is alive, if it is alive at ``now``."""
        worker = self.rows.get(worker_id)
        if worker is None or _expired(worker, now):
            return None
        return worker.expires_at

    def live(self, now: datetime) -> list[WorkerInfo]:
        found = readable_workers(self.rows.items(), _checked, lambda item: repr(item[0])[:200])
        alive = [w for w in found if w.expires_at > now]
        alive.sort(key=lambda w: (w.started_at, w.id))
        return alive


def _checked(item: tuple[str, WorkerInfo]) -> WorkerInfo:
    key, worker = item
    checked = check_worker(worker)
    if checked.id != key:
        raise InvalidArgumentError(f"the row of {key!r} holds the worker {checked.id!r}")
    return checked


def _expired(worker: WorkerInfo, now: datetime) -> bool:
    """Whether ``worker``'s row expired by ``now``; a row whose expiry is not an
    aware time (put there by hand) counts as expired."""
    try:
        return bool(worker.expires_at <= now)
    except TypeError:
        return True

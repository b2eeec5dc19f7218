"""The memory store's workers registry, and the concurrency tokens a worker holds.

The memory store treats its process as the cluster: each scheduler on it registers
here as it would in a database's ``workers`` table. :attr:`MemoryWorkers.tokens`
mirrors the ``cluster_tokens`` table (``(kind, name, slot)`` to who holds it), so that
deregistering frees a worker's tokens as the SQL stores do.
"""

from __future__ import annotations

from datetime import datetime

import attrs

from .._errors import InvalidArgumentError
from .._model import WorkerInfo
from .._validate_workers import check_worker, readable_workers


@attrs.define
class MemoryToken:
    """One row of ``cluster_tokens``: held for ``call_id`` by ``owner`` (or free)."""

    call_id: int | None = None
    owner: str | None = None
    used_until: datetime | None = None


class MemoryWorkers:
    """Worker rows by id, and the concurrency tokens they hold."""

    def __init__(self) -> None:
        self.rows: dict[str, WorkerInfo] = {}
        self.tokens: dict[tuple[str, str, int], MemoryToken] = {}

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

    def deregister(self, worker_id: str) -> int:
        """Delete the row; free the worker's tokens; return how many were freed."""
        self.rows.pop(worker_id, None)
        freed = 0
        for token in self.tokens.values():
            if token.owner == worker_id:
                token.call_id = token.owner = None
                freed += 1
        return freed

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

"""The memory store's part in cluster-wide coordination: limits and their tokens,
paused classes, the workers registry, and the cancel requests every worker reads
(``_memory_cluster.py``, ``_paused.py``, ``_memory_workers.py``, ``_memory_cancels.py``
hold the state; these are the store's methods over them)."""

from __future__ import annotations

from collections.abc import Collection
from datetime import datetime

from .._cancel_model import CancelArgs, CancelRequest
from .._cluster_limits import ClusterLimit
from .._model import WorkerInfo
from .._store_args import StoreArgs
from .._validate_workers import WorkerArgs
from ._listeners import WAKE_NOW, Listeners
from ._memory_cancels import MemoryCancels
from ._memory_cluster import MemoryCluster
from ._memory_workers import MemoryWorkers
from ._paused import RESUMED, MemoryPaused


class MemoryCoordination:
    """Methods of :class:`MemoryStore` (mixed in)."""

    _cluster: MemoryCluster
    _workers: MemoryWorkers
    _paused: MemoryPaused
    _listeners: Listeners
    _cancels: MemoryCancels

    # -- cluster-wide limits -----------------------------------------------------------

    def _worker_expiry(self, worker: str, now: datetime) -> datetime | None:
        """Until when ``worker`` is alive (None: dead or unknown)."""
        return self._workers.expiry(worker, now)

    async def set_cluster_limit(self, limit: ClusterLimit) -> ClusterLimit | None:
        previous = self._cluster.set(StoreArgs.set_cluster_limit(limit))
        self._listeners.notify(WAKE_NOW)  # a larger limit has free tokens
        return previous

    async def remove_cluster_limit(self, kind: str, name: str) -> bool:
        removed = self._cluster.remove(StoreArgs.cluster_limit_key(kind, name))
        if removed:
            self._listeners.notify(WAKE_NOW)
        return removed

    async def cluster_limits(self) -> list[ClusterLimit]:
        return self._cluster.limits()

    async def free_tokens(self, owner: str, call_ids: Collection[int]) -> int:
        owner, ids = StoreArgs.free_tokens(owner, call_ids)
        freed = self._cluster.free(owner, set(ids)) if ids else 0
        if freed:
            self._listeners.notify(WAKE_NOW)
        return freed

    # -- paused classes ---------------------------------------------------------------

    async def pause(self, name: str, now: datetime) -> bool:
        name, now = StoreArgs.pause(name, now)
        return self._paused.pause(name, now)

    async def resume(self, name: str) -> bool:
        name = StoreArgs.resume(name)
        if not self._paused.resume(name):
            return False
        self._listeners.notify(RESUMED)
        return True

    async def paused(self) -> dict[str, datetime]:
        return self._paused.listed()

    # -- workers (see _memory_workers.py) ----------------------------------------------

    async def register_worker(self, worker: WorkerInfo) -> None:
        self._workers.register(WorkerArgs.register_worker(worker))

    async def heartbeat(
        self, worker_id: str, now: datetime, expires_at: datetime, running: int
    ) -> bool:
        args = WorkerArgs.heartbeat(worker_id, now, expires_at, running)
        return self._workers.heartbeat(*args)

    async def deregister_worker(self, worker_id: str) -> None:
        worker_id = WorkerArgs.deregister_worker(worker_id)
        self._workers.deregister(worker_id)
        if self._cluster.free(worker_id):
            self._listeners.notify(WAKE_NOW)

    async def workers(self, now: datetime) -> list[WorkerInfo]:
        return self._workers.live(WorkerArgs.workers(now))

    # -- cancel requests: read and acked by every worker (see _cancels.py) ----------

    async def cancel_requests(self, now: datetime) -> list[CancelRequest]:
        return self._cancels.live(CancelArgs.cancel_requests(now))

    async def ack_cancel(self, request_id: int, worker_id: str, found: int) -> None:
        self._cancels.ack(*CancelArgs.ack_cancel(request_id, worker_id, found))

    async def cancel_acks(self, request_id: int) -> dict[str, int]:
        return self._cancels.acks_of(CancelArgs.cancel_acks(request_id))

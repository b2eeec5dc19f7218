"""The SQLite store's part in cluster-wide coordination: limits and their tokens
(``_cluster.py``), paused classes (``_paused.py``), the workers registry
(``_workers.py``) and the cancel requests every worker reads (``_cancels.py``): the
store's methods over them, mixed into :class:`SQLiteStore`."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Collection, Mapping
from datetime import datetime
from functools import partial
from typing import TYPE_CHECKING, TypeVar

from ..._cancel_model import CancelArgs, CancelRequest
from ..._cluster_limits import ClusterLimit
from ..._model import WorkerInfo
from ..._store_args import StoreArgs
from ..._validate_workers import WorkerArgs
from .._listeners import WAKE_NOW, Listeners
from .._paused import RESUMED
from . import _cancels as cancels
from . import _cluster as cluster
from . import _paused as paused
from . import _workers as registry
from ._connection import to_micros

T = TypeVar("T")


class SQLiteCoordination:
    """Methods of :class:`SQLiteStore` (mixed in)."""

    if TYPE_CHECKING:  # what they use of the store
        _q: Mapping[str, str]
        _listeners: Listeners

        async def _write(self, fn: Callable[[sqlite3.Connection], T]) -> T: ...

        async def _read(self, fn: Callable[[sqlite3.Connection], T]) -> T: ...

        async def _run(self, fn: Callable[[sqlite3.Connection], T]) -> T: ...

        async def _grouped(self, op: Callable[[sqlite3.Connection], T]) -> T: ...

    # -- cluster-wide limits (_cluster.py) -----------------------------------------------

    async def set_cluster_limit(self, limit: ClusterLimit) -> ClusterLimit | None:
        limit = StoreArgs.set_cluster_limit(limit)
        previous = await self._write(partial(cluster.set_limit, self._q, limit=limit))
        self._listeners.notify(WAKE_NOW)  # a larger limit has free tokens
        return previous

    async def remove_cluster_limit(self, kind: str, name: str) -> bool:
        key = StoreArgs.cluster_limit_key(kind, name)
        removed = await self._write(partial(cluster.remove_limit, self._q, key=key))
        if removed:
            self._listeners.notify(WAKE_NOW)
        return removed

    async def cluster_limits(self) -> list[ClusterLimit]:
        return await self._read(partial(cluster.limits, self._q))

    async def free_tokens(self, owner: str, call_ids: Collection[int]) -> int:
        owner, ids = StoreArgs.free_tokens(owner, call_ids)
        if not ids:
            return 0
        # Grouped with the other writes after calls (calls ending together share a
        # transaction).
        freed = await self._grouped(partial(cluster.free, self._q, owner=owner, call_ids=ids))
        if freed:
            self._listeners.notify(WAKE_NOW)
        return freed

    # -- paused classes (_paused.py) ----------------------------------------------------

    async def pause(self, name: str, now: datetime) -> bool:
        name, now = StoreArgs.pause(name, now)
        return await self._write(partial(paused.pause, self._q, name, to_micros(now)))

    async def resume(self, name: str) -> bool:
        name = StoreArgs.resume(name)
        resumed = await self._write(partial(paused.resume, self._q, name))
        if resumed:  # (other processes see the commit: their watcher wakes them)
            self._listeners.notify(RESUMED)
        return resumed

    async def paused(self) -> dict[str, datetime]:
        return await self._run(partial(paused.listed, self._q))

    # -- workers (see _workers.py) ----------------------------------------------------

    async def register_worker(self, worker: WorkerInfo) -> None:
        worker = WorkerArgs.register_worker(worker)
        await self._write(partial(registry.register, self._q, worker))

    async def heartbeat(
        self, worker_id: str, now: datetime, expires_at: datetime, running: int
    ) -> bool:
        args = WorkerArgs.heartbeat(worker_id, now, expires_at, running)
        return await self._write(partial(registry.heartbeat, self._q, *args))

    async def deregister_worker(self, worker_id: str) -> None:
        worker_id = WorkerArgs.deregister_worker(worker_id)
        # Other processes see the commit through their data_version watchers.
        if await self._write(partial(registry.deregister, self._q, worker_id)):
            self._listeners.notify(WAKE_NOW)

    async def workers(self, now: datetime) -> list[WorkerInfo]:
        now = WorkerArgs.workers(now)
        return await self._read(partial(registry.live, self._q, now))

    # -- cancel requests: read and acked by every worker (see _cancels.py) ----------

    async def cancel_requests(self, now: datetime) -> list[CancelRequest]:
        now = CancelArgs.cancel_requests(now)
        live, doomed = cancels.split(await self._read(partial(cancels.all_rows, self._q)), now)
        if doomed:
            await self._write(partial(cancels.delete, self._q, doomed))
        return live

    async def ack_cancel(self, request_id: int, worker_id: str, found: int) -> None:
        args = CancelArgs.ack_cancel(request_id, worker_id, found)
        await self._write(partial(cancels.ack, self._q, *args))

    async def cancel_acks(self, request_id: int) -> dict[str, int]:
        request_id = CancelArgs.cancel_acks(request_id)
        return await self._read(partial(cancels.acks, self._q, request_id))

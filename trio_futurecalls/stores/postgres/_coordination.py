"""The PostgreSQL store's part in cluster-wide coordination: limits and their tokens,
paused classes, the workers registry and the cancel requests every worker reads (the
SQL is in queries.sql; ``_workers.py`` and ``_cancels.py`` read rows): the store's
methods, mixed into :class:`PostgresStore`."""

from __future__ import annotations

from collections.abc import Collection
from datetime import datetime
from typing import TYPE_CHECKING, Any

from ..._cancel_model import CancelArgs, CancelRequest
from ..._cluster_limits import ClusterLimit
from ..._model import WorkerInfo
from ..._store_args import StoreArgs
from ..._validate_workers import WorkerArgs
from .._listeners import WAKE_NOW, Listeners
from .._paused import RESUMED
from .._rows import cluster_limit_from_row, cluster_limits_from_rows
from ._cancels import ack_rows, live_requests
from ._grouped import GroupedWrites
from ._listener import notify_payload
from ._values import utc
from ._workers import live_workers, register_args


class PostgresCoordination:
    """Methods of :class:`PostgresStore` (mixed in)."""

    if TYPE_CHECKING:  # what they use of the store
        channel: str
        _listeners: Listeners
        _writes: GroupedWrites

        async def _call(self, method: str, query: str, *args: Any) -> Any: ...

    # -- cluster-wide limits (migration 0008) -------------------------------------------

    async def set_cluster_limit(self, limit: ClusterLimit) -> ClusterLimit | None:
        limit = StoreArgs.set_cluster_limit(limit)
        row = await self._call(
            "fetchrow",
            "set_cluster_limit",
            limit.kind,
            limit.name,
            limit.tokens,
            limit.per_us,
            limit.set_at,
            limit.set_by,
            self.channel,
            notify_payload(WAKE_NOW),
        )
        self._listeners.notify(WAKE_NOW)
        return None if row["kind"] is None else cluster_limit_from_row(row, utc)

    async def remove_cluster_limit(self, kind: str, name: str) -> bool:
        kind, name = StoreArgs.cluster_limit_key(kind, name)
        gone = await self._call(
            "fetch", "remove_cluster_limit", kind, name, self.channel, notify_payload(WAKE_NOW)
        )
        if gone:
            self._listeners.notify(WAKE_NOW)
        return bool(gone)

    async def cluster_limits(self) -> list[ClusterLimit]:
        rows = await self._call("fetch", "cluster_limits")
        return cluster_limits_from_rows(rows, utc)

    async def free_tokens(self, owner: str, call_ids: Collection[int]) -> int:
        owner, ids = StoreArgs.free_tokens(owner, call_ids)
        if not ids:
            return 0
        return await self._writes.free_tokens(owner, ids)

    # -- paused classes (table paused; claims leave them out: see _claim_picked) --------

    async def pause(self, name: str, now: datetime) -> bool:
        name, now = StoreArgs.pause(name, now)
        return bool(await self._call("fetchval", "pause", name, now))

    async def resume(self, name: str) -> bool:
        name = StoreArgs.resume(name)
        resumed = bool(
            await self._call("fetchval", "resume", name, self.channel, notify_payload(RESUMED))
        )
        if resumed:  # at once here; the NOTIFY reaches the other processes
            self._listeners.notify(RESUMED)
        return resumed

    async def paused(self) -> dict[str, datetime]:
        rows = await self._call("fetch", "paused")
        return {row[0]: utc(row[1]) for row in rows}

    # -- workers (see _workers.py) ----------------------------------------------------

    async def register_worker(self, worker: WorkerInfo) -> None:
        worker = WorkerArgs.register_worker(worker)
        await self._call("execute", "worker_register", *register_args(worker))

    async def heartbeat(
        self, worker_id: str, now: datetime, expires_at: datetime, running: int
    ) -> bool:
        args = WorkerArgs.heartbeat(worker_id, now, expires_at, running)
        renewed: bool = await self._call("fetchval", "worker_heartbeat", *args)
        return renewed

    async def deregister_worker(self, worker_id: str) -> None:
        worker_id = WorkerArgs.deregister_worker(worker_id)
        freed, _ = await self._call(
            "fetchrow", "worker_deregister", worker_id, self.channel, notify_payload(WAKE_NOW)
        )
        if freed:
            self._listeners.notify(WAKE_NOW)

    async def workers(self, now: datetime) -> list[WorkerInfo]:
        now = WorkerArgs.workers(now)
        return live_workers(await self._call("fetch", "workers_live", now))

    # -- cancel requests: read and acked by every worker (see _cancels.py) ----------

    async def cancel_requests(self, now: datetime) -> list[CancelRequest]:
        now = CancelArgs.cancel_requests(now)
        return live_requests(await self._call("fetch", "cancel_requests_live", now))

    async def ack_cancel(self, request_id: int, worker_id: str, found: int) -> None:
        args = CancelArgs.ack_cancel(request_id, worker_id, found)
        await self._call("execute", "cancel_ack", *args)

    async def cancel_acks(self, request_id: int) -> dict[str, int]:
        request_id = CancelArgs.cancel_acks(request_id)
        return ack_rows(await self._call("fetch", "cancel_acks", request_id))

"""Presence: this scheduler's row in the store's workers registry, kept alive.

A scheduler that executes calls registers as it starts, *before* its dispatcher
claims anything (cluster concurrency tokens are taken only under the id of a live
worker), renews its row with a heartbeat every ``worker_timeout / 3`` and deletes it
at shutdown once its calls have ended (which also frees the tokens it still holds).
Its id is the scheduler's owner string, the one its leases carry.

A **lapse** is the moment this worker may have been declared dead: a heartbeat was
answered False (the row was gone or had expired), or no heartbeat succeeded by
``confirmed_until - worker_timeout / 10`` (the store is slow or cut off, and the row
may expire before an answer comes). Then the callbacks given to
:meth:`Presence.on_lapse` are called (to stop the calls that hold cluster tokens:
another worker may have their slots now) and the worker registers again.

Registering can fail like any store operation (the store is down as the scheduler
starts). That does not stop the scheduler, as it does not stop the dispatcher: the
error is logged and registering is retried with backoff (50 ms doubling to 30 s).
Startup waits for the first attempt only, so the application's block runs (and can
schedule calls) during an outage, but the dispatcher starts only once the worker is
registered (:meth:`Presence.after_registered`): it never claims under an id that no
live row backs.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Awaitable, Callable, Mapping
from datetime import datetime, timedelta
from typing import Any, Final

import trio

from ._adaptive import Adaptive
from ._errors import StoreError
from ._model import WorkerInfo
from ._options import SchedulerOptions
from ._retry import Delivery
from ._store import Store
from ._validate_workers import MAX_HOST_LENGTH

_log = logging.getLogger("trio_futurecalls.scheduler.presence")

#: Longest pause between two registration attempts (the pause doubles from 50 ms).
MAX_REGISTER_BACKOFF: Final = 30.0
#: How long deregistering at shutdown may take. It adds to shutdown (after the calls'
#: own final writes, bounded by CLEANUP_TIMEOUT), and it is a courtesy: the calls
#: freed their cluster tokens as they ended, and the row expires on its own within
#: ``worker_timeout``. So it is short, not CLEANUP_TIMEOUT.
DEREGISTER_TIMEOUT: Final = 2.0


def worker_limits(
    max_concurrent: int | Adaptive | None,
    classes: Mapping[str, tuple[int | Adaptive | None, Delivery]],
) -> dict[str, Any]:
    """The limits a worker shows in the registry (``WorkerInfo.limits``): the global
    one and, per class name, its limit and delivery (None: unlimited). An adaptive
    limit shows its ``max`` as ``max_concurrent``, and its bounds as ``adaptive``."""
    out = _limit_fields(max_concurrent)
    out["classes"] = {
        name: {**_limit_fields(limit), "delivery": delivery.value}
        for name, (limit, delivery) in sorted(classes.items())
    }
    return out


def _limit_fields(limit: int | Adaptive | None) -> dict[str, Any]:
    if isinstance(limit, Adaptive):
        return {"max_concurrent": limit.max, "adaptive": {"min": limit.min, "max": limit.max}}
    return {"max_concurrent": limit}


class Presence:
    """Registers ``worker_id`` in ``store``, heartbeats, and deregisters at the end."""

    def __init__(
        self,
        store: Store,
        worker_id: str,
        options: SchedulerOptions,
        *,
        running: Callable[[], int],
        limits: dict[str, Any],
    ) -> None:
        self._store = store
        self.worker_id = worker_id
        self._clock = options.clock
        self._timeout = options.worker_timeout
        self.interval = options.worker_timeout / 3
        self.margin = options.worker_timeout / 10
        self._host = socket.gethostname()[:MAX_HOST_LENGTH]
        self._pid = os.getpid()
        self._started_at = self._clock()
        self._running = running
        self._limits = limits
        self._callbacks: list[Callable[[], None]] = []
        self._registered = trio.Event()
        self._attempted = False
        #: Until when the store confirmed this worker's row (its last successful
        #: registration or heartbeat's expiry); None while not registered.
        self.confirmed_until: datetime | None = None
        #: How many lapses happened (see :meth:`holds_since`).
        self.lapses = 0
        #: Set while the row is confirmed (replaced by a new one at each lapse).
        self._live = trio.Event()

    @property
    def live(self) -> bool:
        """Whether the row is confirmed and no lapse happened since."""
        return self.confirmed_until is not None

    def holds_since(self, lapses: int) -> bool:
        """Whether tokens taken under this worker's id since :attr:`lapses` was
        ``lapses`` are still its own: the row is confirmed, and no lapse happened in
        between (a claim in flight across a lapse, or made while the worker registers
        again, may have taken tokens under a row about to expire: their calls would
        run on, unstopped, once another worker takes those tokens)."""
        return self.live and self.lapses == lapses

    async def wait_live(self) -> None:
        """Return once the row is confirmed (at once if it is)."""
        while not self.live:
            await self._live.wait()

    def on_lapse(self, callback: Callable[[], None]) -> None:
        """Call ``callback()`` at each lapse (see the module's description)."""
        self._callbacks.append(callback)

    async def after_registered(self, fn: Callable[..., Awaitable[object]], *args: Any) -> None:
        """Run ``fn(*args)`` once this worker registered for the first time."""
        await self._registered.wait()
        await fn(*args)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Register, heartbeat until cancelled, then deregister.

        Reports started after the first registration attempt, whatever its outcome.
        """
        try:
            await self._register(task_status.started)
            while True:
                why = await self._beat_until_lapse()
                self._lapse(why)
                await self._register(lambda: None)
        finally:
            if self._attempted:
                await self._deregister()

    def _info(self, now: datetime, expires_at: datetime) -> WorkerInfo:
        return WorkerInfo(
            id=self.worker_id,
            host=self._host,
            pid=self._pid,
            started_at=self._started_at,
            heartbeat_at=now,
            expires_at=expires_at,
            running=self._running(),
            limits=self._limits,
        )

    async def _register(self, tried: Callable[[], None]) -> None:
        """Register, retrying store errors with backoff; ``tried()`` after the first
        attempt."""
        backoff = 0.0
        while True:
            now = self._clock()
            expires_at = now + timedelta(seconds=self._timeout)
            self._attempted = True
            try:
                await self._store.register_worker(self._info(now, expires_at))
            except StoreError as exc:
                backoff = min(max(backoff * 2, 0.05), MAX_REGISTER_BACKOFF)
                _log.warning(
                    "could not register worker %s (retrying in %.2f s; no call starts "
                    "until it is registered): %s",
                    self.worker_id,
                    backoff,
                    exc,
                )
                tried()
                tried = _nothing
                await trio.sleep(backoff)
                continue
            self.confirmed_until = expires_at
            self._live.set()
            self._registered.set()
            tried()
            return

    def _left(self) -> float:
        """Seconds until the lapse point (the confirmed expiry minus the margin)."""
        assert self.confirmed_until is not None
        lapse_at = self.confirmed_until - timedelta(seconds=self.margin)
        return (lapse_at - self._clock()).total_seconds()

    async def _beat_until_lapse(self) -> str:
        """Heartbeat every interval until a lapse; return what happened."""
        late = f"no heartbeat succeeded within {self._timeout - self.margin:.3g} s"
        while True:
            left = self._left()
            if left <= 0:
                return late
            await trio.sleep(min(self.interval, left))
            left = self._left()
            if left <= 0:
                return late
            now = self._clock()
            expires_at = now + timedelta(seconds=self._timeout)
            answer: bool | None = None
            # An answer that comes after the lapse point is no use: the row may
            # have expired by then, so a hanging store counts as a failure.
            with trio.move_on_after(left):
                try:
                    answer = await self._store.heartbeat(
                        self.worker_id, now, expires_at, self._running()
                    )
                except Exception as exc:  # whatever the store raises, no beat was stored
                    _log.warning(
                        "heartbeat of worker %s failed: %s",
                        self.worker_id,
                        exc,
                        exc_info=not isinstance(exc, StoreError),
                    )
            if answer is True:
                self.confirmed_until = expires_at
            elif answer is False:
                return "the store no longer had its row (it had expired or was deleted)"

    def _lapse(self, why: str) -> None:
        self.confirmed_until = None
        self.lapses += 1
        self._live = trio.Event()
        _log.warning(
            "worker %s may have been declared dead (%s); registering again",
            self.worker_id,
            why,
        )
        for callback in list(self._callbacks):
            try:
                callback()
            except Exception:
                _log.exception("lapse callback %r failed", callback)

    async def _deregister(self) -> None:
        """Delete the row (bounded, shielded: this runs at shutdown, maybe cancelled).
        A failure is logged: the row then expires within ``worker_timeout``."""
        self.confirmed_until = None
        with trio.move_on_after(DEREGISTER_TIMEOUT, shield=True) as scope:
            try:
                await self._store.deregister_worker(self.worker_id)
            except Exception as exc:
                _log.warning(
                    "could not deregister worker %s (its row expires within %.3g s): %s",
                    self.worker_id,
                    self._timeout,
                    exc,
                    exc_info=not isinstance(exc, StoreError),
                )
        if scope.cancelled_caught:
            _log.warning(
                "deregistering worker %s took over %.3g s; its row expires within %.3g s",
                self.worker_id,
                DEREGISTER_TIMEOUT,
                self._timeout,
            )


def _nothing() -> None:
    pass

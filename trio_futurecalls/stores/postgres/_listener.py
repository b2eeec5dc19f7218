"""LISTEN/NOTIFY wake-ups: the store's listener task and the notification payload.

``schedule`` (and ``release``, ``requeue_dead_letter``) send ``pg_notify`` on the
schema's channel with :func:`notify_payload` of the earliest due time. The
:class:`NotifyListener` ``LISTEN``\\ s on a dedicated connection (outside the pool) and
calls the store's wake-up listeners for notifications from every process, this one
included. When that connection drops it reconnects with backoff and then wakes the
listeners once with the epoch, since notifications may have been missed.

The store runs it only while it has wake-up listeners (``stores/_on_demand.py``): a
store that only schedules opens no LISTEN connection and hears no notification.
"""

from __future__ import annotations

import logging
from contextlib import suppress
from datetime import UTC, datetime, timedelta
from typing import Any, Final, final

import asyncpg
import trio

from ..._errors import StoreError
from .._listeners import WAKE_NOW, Listeners
from ._errors import bridge, on_connection

_log = logging.getLogger("trio_futurecalls.store.postgres.listener")

_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_MICRO: Final = timedelta(microseconds=1)
_MAX_BACKOFF: Final = 5.0


def notify_payload(due_at: datetime) -> str:
    """The NOTIFY payload for an (aware) due time: epoch microseconds, as text."""
    return str((due_at - _EPOCH) // _MICRO)


@final
class NotifyListener:
    """Keeps a ``LISTEN`` connection on ``channel`` open while :meth:`run` runs.

    Notifications wake ``listeners`` with the due time they carry. A connection that
    drops is replaced, with backoff; a silent one is found by a ping every
    ``recheck_interval`` (1 to 10 s).
    """

    def __init__(
        self,
        *,
        loop: Any,
        dsn: str,
        channel: str,
        application_name: str,
        connect_timeout: float,
        recheck_interval: float | None,
        listeners: Listeners,
    ) -> None:
        self._loop = loop
        self._dsn = dsn
        self._connect_timeout = connect_timeout
        self._recheck_interval = recheck_interval
        self._listeners = listeners
        self.channel = channel
        #: ``application_name`` of the LISTEN connection (visible in pg_stat_activity).
        self.application_name = f"{application_name}:listen"[:63]
        #: How many times the listener (re)connected: 0 until a listener wanted it.
        self.connects = 0
        #: How many notifications it heard.
        self.notifications = 0
        #: The LISTEN connection, while there is one.
        self.connection: asyncpg.Connection | None = None
        # Set once the current connection listens (a new one after each loss).
        self._up = trio.Event()

    async def wait_connected(self) -> None:
        """Return once a LISTEN connection is up (at once if it is)."""
        while self.connection is None:
            await self._up.wait()

    def _on_notify(self, conn: object, pid: int, channel: str, payload: object) -> None:
        # asyncpg calls this from the asyncio loop, which trio-asyncio runs in the Trio
        # thread: calling the listeners synchronously here is safe.
        self.notifications += 1
        try:
            due_at = _EPOCH + timedelta(microseconds=int(str(payload)))
        except (ValueError, OverflowError):
            _log.warning("ignoring malformed notification on %s: %r", channel, payload)
            due_at = _EPOCH
        self._listeners.notify(due_at)

    async def _connect(self, lost: trio.Event) -> asyncpg.Connection:
        conn: asyncpg.Connection = await bridge(
            self._loop,
            "listen connect",
            asyncpg.connect,
            self._dsn,
            timeout=self._connect_timeout,
            command_timeout=self._connect_timeout,
            server_settings={"application_name": self.application_name},
        )
        conn.add_termination_listener(lambda _conn: lost.set())
        try:
            await bridge(
                self._loop,
                "listen",
                on_connection,
                conn,
                conn.add_listener,
                self.channel,
                self._on_notify,
            )
        except BaseException:
            conn.terminate()
            raise
        return conn

    async def run(self) -> None:
        """Keep a LISTEN connection open while this runs; reconnect with backoff when it
        drops (a first connection that fails too: the store's users wait for it with
        :meth:`wait_connected`, bounded, and rely on ``recheck_interval`` meanwhile)."""
        backoff = 0.0
        # Notifications may have been missed (a failed try or a loss); or this run
        # follows another (stopped, and wanted again before it ended: wait_connected
        # saw that one's connection), and those sent in between were heard by no one.
        deaf = self.connects > 0
        while True:
            lost = trio.Event()
            try:
                conn = await self._connect(lost)
            except StoreError as exc:
                deaf = True
                backoff = min(max(backoff * 2, 0.1), _MAX_BACKOFF)
                _log.warning("LISTEN connect failed (retrying in %.2f s): %s", backoff, exc)
                await trio.sleep(backoff)
                continue
            self.connection = conn
            self.connects += 1
            self._up.set()
            if deaf:
                _log.info("LISTEN connection established on %s", self.channel)
                # Anything scheduled while we were deaf was not announced: wake everyone.
                self._listeners.notify(WAKE_NOW)
            deaf = True  # from now on, any new connection follows a loss
            connected_at = trio.current_time()
            try:
                await self._watch(conn, lost)
            finally:
                self.connection = None
                self._up = trio.Event()
                with trio.move_on_after(2, shield=True) as scope:
                    with suppress(StoreError):
                        await bridge(self._loop, "listen close", conn.close, timeout=1)
                if scope.cancelled_caught or not conn.is_closed():
                    conn.terminate()
            # A connection that dies right after connecting must not make us spin.
            if trio.current_time() - connected_at < 5.0:
                backoff = min(max(backoff * 2, 0.1), _MAX_BACKOFF)
            else:
                backoff = 0.0
            _log.warning(
                "LISTEN connection on %s lost; reconnecting in %.2f s", self.channel, backoff
            )
            await trio.sleep(backoff)

    async def _watch(self, conn: asyncpg.Connection, lost: trio.Event) -> None:
        """Return when the LISTEN connection is gone (closed, or fails a ping)."""
        interval = max(1.0, min(self._recheck_interval or 10.0, 10.0))
        while not conn.is_closed():
            with trio.move_on_after(interval):
                await lost.wait()
            if lost.is_set() or conn.is_closed():
                return
            # A silent network failure shows up only when we talk: ping.
            try:
                with trio.fail_after(self._connect_timeout):
                    await bridge(
                        self._loop, "listen ping", on_connection, conn, conn.fetchval, "SELECT 1"
                    )
            except (StoreError, trio.TooSlowError) as exc:
                _log.warning("LISTEN connection failed a ping: %s", exc)
                return

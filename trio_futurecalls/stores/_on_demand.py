"""A store's background watcher that runs only while someone listens for wake-ups.

A store opened only to schedule (a web process, a script) has no wake-up listeners:
it must not hold PostgreSQL's LISTEN connection (nor hear its own NOTIFYs), nor poll
SQLite's ``data_version``. :class:`OnDemand` starts the watcher in the store's
background nursery when the first listener is added and cancels it when the last one
goes; :class:`Listeners` tells it (``Listeners(demand=...)``).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import final

import trio


@final
class OnDemand:
    """Runs ``task()`` in a nursery (given by :meth:`attach`) while it is wanted.

    :meth:`want` and :meth:`unwant` are synchronous (listeners are added and removed
    from synchronous code). At most one run at a time: wanted again while a cancelled
    run is still ending, the next run starts once it has ended.
    """

    def __init__(self, task: Callable[[], Awaitable[None]], name: str) -> None:
        self._task = task
        self._name = name
        self._nursery: trio.Nursery | None = None
        self._scope: trio.CancelScope | None = None
        self._wanted = False
        #: How many times the watcher was started (tests read it).
        self.starts = 0

    @property
    def wanted(self) -> bool:
        """Whether someone wants the watcher (it runs, or is about to)."""
        return self._wanted and self._nursery is not None

    def attach(self, nursery: trio.Nursery) -> None:
        """Run the watcher in ``nursery`` from now on (at once, if already wanted)."""
        self._nursery = nursery
        if self._wanted and self._scope is None:
            self._start()

    def detach(self) -> None:
        """Start no more runs (the store is closing; its nursery ends the one left)."""
        self._nursery = None

    def want(self) -> None:
        self._wanted = True
        if self._nursery is not None and self._scope is None:
            self._start()

    def unwant(self) -> None:
        self._wanted = False
        if self._scope is not None:
            self._scope.cancel()

    def _start(self) -> None:
        assert self._nursery is not None
        scope = self._scope = trio.CancelScope()
        self.starts += 1
        self._nursery.start_soon(self._run, scope, name=self._name)

    async def _run(self, scope: trio.CancelScope) -> None:
        try:
            with scope:
                await self._task()
        finally:
            self._scope = None
            # Stopped, then wanted again before it had ended: run again. (A task that
            # ended on its own, a closed store, is not restarted.)
            if scope.cancel_called and self.wanted:
                self._start()

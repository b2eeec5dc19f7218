"""Wake-up listener bookkeeping shared by the stores."""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Final

from .._store import Listener
from ._on_demand import OnDemand

_log = logging.getLogger("trio_futurecalls.store")

#: The due time of a wake-up that says "look now" (a slot was freed, not a call
#: scheduled): earlier than anything a dispatcher waits for, so it always rings.
WAKE_NOW: Final = datetime(1970, 1, 1, tzinfo=UTC)

#: The due time of a wake-up that says "a cancel request was stored": one microsecond
#: after the epoch, so that the cancel watchers (``_cancels.py``) tell it apart; a
#: dispatcher takes it as "look now" (one claim per request).
CANCEL_REQUESTED: Final = datetime(1970, 1, 1, 0, 0, 0, 1, tzinfo=UTC)


class Listeners:
    """A set of wake-up callbacks; a failing callback is logged, never propagated.

    ``demand``: the store's watcher of other processes' changes, which runs only while
    there is a listener (a store that only schedules opens no LISTEN connection).
    """

    def __init__(self, demand: OnDemand | None = None) -> None:
        self._listeners: dict[int, Listener] = {}
        self._next = 0
        self._demand = demand

    def __len__(self) -> int:
        return len(self._listeners)

    def add(self, listener: Listener) -> Callable[[], None]:
        key = self._next
        self._next += 1
        self._listeners[key] = listener
        if self._demand is not None:
            self._demand.want()

        def remove() -> None:
            gone = self._listeners.pop(key, None) is not None
            if gone and not self._listeners and self._demand is not None:
                self._demand.unwant()

        return remove

    def notify(self, due_at: datetime) -> None:
        for listener in list(self._listeners.values()):
            try:
                listener(due_at)
            except Exception:
                _log.exception("wake-up listener %r failed", listener)

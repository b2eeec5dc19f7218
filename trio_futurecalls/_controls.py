"""Run-time controls of a scheduler: paused classes (in the store) and which limit
``set_limit`` changes.

A pause is kept in the store, so it holds for every worker on it: the store's claim
leaves paused names out (``Store.pause``). :class:`PausedClasses` is this scheduler's
view of them, for :meth:`Scheduler.statistics` and the metrics (which cannot ask the
store: they are synchronous): what it last read, refreshed by this scheduler's own
``pause``, ``resume`` and ``paused``, by ``queue_lengths`` (the metrics read it before
each scrape) and every ``unknown_check_interval`` while the scheduler runs.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import datetime

import trio

from ._call import FutureCall, check_call_class
from ._errors import InvalidArgumentError, StoreError
from ._options import Clock
from ._store import Store
from ._validate import check_name

_log = logging.getLogger("trio_futurecalls.scheduler.controls")


def class_name(call_class: object) -> str:
    """The name of ``call_class``: a :class:`FutureCall` subclass or a name (checked
    as every call name is)."""
    if isinstance(call_class, str):
        return check_name(call_class)
    return check_call_class(call_class).name


def limit_target(call_class: object, classes: Mapping[str, type[FutureCall]]) -> str | None:
    """Which limit ``set_limit(call_class, ...)`` changes: None for the global one, or
    the name of a class registered here (``classes``)."""
    if call_class is None:
        return None
    name = class_name(call_class)
    registered = classes.get(name)
    if registered is None or (isinstance(call_class, type) and registered is not call_class):
        raise InvalidArgumentError(
            f"{name!r} is not a call class registered with this scheduler, so it has no "
            f"limit here (registered: {', '.join(sorted(classes)) or 'none'})"
        )
    return name


class PausedClasses:
    """Pauses classes in the store, and remembers the paused names it last read."""

    def __init__(self, store: Store, clock: Clock) -> None:
        self._store = store
        self._clock = clock
        #: Name -> when it was paused, as last read (or changed here).
        self.names: dict[str, datetime] = {}

    async def pause(self, call_class: object) -> bool:
        name = class_name(call_class)
        now = self._clock()
        paused = await self._store.pause(name, now)
        self.names.setdefault(name, now)
        return paused

    async def resume(self, call_class: object) -> bool:
        name = class_name(call_class)
        resumed = await self._store.resume(name)
        self.names.pop(name, None)
        return resumed

    async def read(self) -> dict[str, datetime]:
        self.names = await self._store.paused()
        return dict(self.names)

    async def run(self, interval: float) -> None:
        """Read the paused names now and every ``interval`` seconds (errors are
        logged: the view stays as it was)."""
        while True:
            try:
                await self.read()
            except StoreError as exc:
                _log.debug("could not read the paused classes: %s", exc)
            except Exception:
                # A view for statistics must never stop the scheduler.
                _log.exception("reading the paused classes failed")
            await trio.sleep(interval)

"""Reports pending calls whose name matches no registered class (they are kept).

During a rolling deploy another worker may still know the name, so such rows are
never run or dropped here: each unknown name is logged once, and the operator lists
them (``Scheduler.unknown_calls``) or moves them to dead letters explicitly.
"""

from __future__ import annotations

import logging
from collections.abc import Collection

import trio

from ._errors import StoreError
from ._options import Clock
from ._store import Store

_log = logging.getLogger("trio_futurecalls.scheduler.unknown")


class UnknownNamesReporter:
    """Checks the store every ``interval`` seconds for names not in ``known``."""

    def __init__(self, store: Store, known: Collection[str], interval: float, clock: Clock) -> None:
        self._store = store
        self._clock = clock
        self._known = known
        self._interval = interval
        self._reported: set[str] = set()

    async def run(self) -> None:
        while True:
            await self.check_once()
            await trio.sleep(self._interval)

    async def check_once(self) -> None:
        try:
            names = await self._store.pending_counts(self._clock())
            unknown = [
                (name, counts.pending)
                for name, counts in sorted(names.items(), key=lambda item: repr(item[0]))
                if name not in self._known and name not in self._reported
            ]
        except StoreError as exc:
            _log.debug("could not check for unknown call names: %s", exc)
            return
        except Exception:
            # A report must never stop the scheduler, whatever the store answers.
            _log.exception("checking for unknown call names failed")
            return
        for name, count in unknown:
            self._reported.add(name)
            _log.error(
                "%d pending call(s) named %r match no registered FutureCall "
                "class; they are kept, not run (see Scheduler.unknown_calls())",
                count,
                name,
                extra={"call_name": name},
            )

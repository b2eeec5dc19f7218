"""The table of calls running in this scheduler right now.

The per-call task adds and removes its entry; the lease keeper reads it to renew
leases and cancels entries whose lease is lost; the facade lists it.
"""

from __future__ import annotations

from datetime import datetime

import attrs
import trio

from ._model import CallInfo


@attrs.define(eq=False)
class RunningCall:
    """One call in flight: what it is, and the cancel scope that stops it."""

    info: CallInfo
    scope: trio.CancelScope
    leased: bool
    #: Wall time our lease runs out unless renewed (leased calls only).
    lease_expires_at: datetime | None = None
    #: Set when the lease was lost: another worker may run the call now.
    lost: bool = False

    def lose_lease(self) -> None:
        """Stop the call: it must not run on unaware that another worker has it."""
        self.lost = True
        self.scope.cancel()


class RunningCalls:
    """Calls in flight, by call id."""

    def __init__(self) -> None:
        self._calls: dict[int, RunningCall] = {}

    def __len__(self) -> int:
        return len(self._calls)

    def add(self, running: RunningCall) -> None:
        self._calls[running.info.id] = running

    def remove(self, running: RunningCall) -> None:
        del self._calls[running.info.id]

    def is_current(self, running: RunningCall) -> bool:
        """True while ``running`` is the entry of its call id."""
        return self._calls.get(running.info.id) is running

    def infos(self) -> list[CallInfo]:
        return [r.info for r in self._calls.values()]

    def leased(self) -> dict[int, RunningCall]:
        """Leased calls whose lease is still ours, by call id."""
        return {i: r for i, r in self._calls.items() if r.leased and not r.lost}

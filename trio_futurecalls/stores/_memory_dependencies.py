"""The memory store's graph of dependencies between calls (see ``_dependencies.py``)."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

import attrs


@attrs.define
class MemoryDependencies:
    """Edges between pending calls, and the at-most-once prerequisites now running."""

    #: dependent -> the prerequisites it still waits for (never empty: an entry goes
    #: when its last prerequisite succeeded).
    waiting: dict[int, set[int]] = attrs.Factory(dict)
    #: prerequisite -> the calls waiting for it (never empty).
    dependents: dict[int, set[int]] = attrs.Factory(dict)
    #: At-most-once prerequisites claimed (their rows gone) whose end is not told yet:
    #: id -> (owner, expiry) of the record (both None: claimed without a lease).
    started: dict[int, tuple[str | None, datetime | None]] = attrs.Factory(dict)

    def add(self, dependent: int, prerequisites: Iterable[int]) -> None:
        wanted = set(prerequisites)
        if not wanted:
            return
        self.waiting[dependent] = wanted
        for prerequisite in wanted:
            self.dependents.setdefault(prerequisite, set()).add(dependent)

    def dependents_of(self, prerequisite: int) -> list[int]:
        return sorted(self.dependents.get(prerequisite, ()))

    def succeeded(self, prerequisite: int) -> list[int]:
        """``prerequisite`` succeeded: its edges go; return the dependents it was the
        last prerequisite of (due now, once their own time comes)."""
        ready = []
        for dependent in sorted(self.dependents.pop(prerequisite, ())):
            left = self.waiting.get(dependent)
            if left is None:
                continue
            left.discard(prerequisite)
            if not left:
                del self.waiting[dependent]
                ready.append(dependent)
        return ready

    def forget(self, call_id: int) -> None:
        """``call_id`` is gone for good (cancelled, dead letter): drop its edges both
        ways (its own dependents are the caller's business, see dependent_reasons)."""
        for prerequisite in self.waiting.pop(call_id, ()):
            waiting_for_it = self.dependents.get(prerequisite)
            if waiting_for_it is not None:
                waiting_for_it.discard(call_id)
                if not waiting_for_it:
                    del self.dependents[prerequisite]
        self.dependents.pop(call_id, None)
        self.started.pop(call_id, None)

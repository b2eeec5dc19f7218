"""The memory store's graph of dependencies between calls (see ``_dependencies.py``)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime

import attrs

from ._dependencies import dependent_reasons


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

    def record_started(self, call_id: int, owner: str | None, expires_at: datetime | None) -> None:
        """An at-most-once claim deleted ``call_id``, which others wait for: it runs."""
        self.started[call_id] = (owner, expires_at)

    def end_started(self, call_id: int) -> bool:
        """End the record of ``call_id``; False if there was none."""
        return self.started.pop(call_id, None) is not None

    def renew_started(self, call_id: int, owner: str, expires_at: datetime) -> bool:
        """Extend ``owner``'s record of ``call_id``; False if it has none."""
        if call_id not in self.started or self.started[call_id][0] != owner:
            return False
        self.started[call_id] = (owner, expires_at)
        return True

    def expire_started(self, now: datetime) -> list[int]:
        """End the records that expired by ``now``; return their ids."""
        expired = [
            call_id
            for call_id, (_, expires_at) in self.started.items()
            if expires_at is not None and expires_at <= now
        ]
        for call_id in expired:
            del self.started[call_id]
        return expired

    def end(self, roots: Mapping[int, str]) -> dict[int, str]:
        """``roots`` (id -> why) ended without success: every call that waits for one,
        transitively, with the reason its dead letter gets (``dependent_reasons``);
        the edges of all of them go, both ways."""
        reasons = dependent_reasons(roots, self.dependents_of) if self.dependents else {}
        for call_id in (*roots, *reasons):
            self.forget(call_id)
        return reasons

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

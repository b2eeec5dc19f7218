"""Paused classes: what the stores share, and the memory store's record of them.

A paused name's rows stay pending, but no claim takes them or counts them in
``next_due`` (``Store.pause``). Each store leaves those names out of the claim's
``slots`` before anything else, so the claim itself is unchanged: the memory store
and SQLite with :func:`without_paused`, PostgreSQL in its statement (a filter on the
``quotas`` of ``_claim_picked``).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from datetime import datetime
from typing import Final

from ._listeners import WAKE_NOW

#: The due time ``resume`` tells listeners: earlier than any a dispatcher sleeps
#: towards, so every dispatcher claims again at once (the resumed class's rows may
#: be due already).
RESUMED: Final = WAKE_NOW


def without_paused(slots: Mapping[str, int], paused: Collection[str]) -> Mapping[str, int]:
    """``slots`` without the ``paused`` names (``slots`` itself when none is paused)."""
    if not paused or not any(name in paused for name in slots):
        return slots
    return {name: free for name, free in slots.items() if name not in paused}


class MemoryPaused:
    """The memory store's paused names (name -> when it was paused)."""

    def __init__(self) -> None:
        self.names: dict[str, datetime] = {}

    def pause(self, name: str, now: datetime) -> bool:
        if name in self.names:
            return False
        self.names[name] = now
        return True

    def resume(self, name: str) -> bool:
        return self.names.pop(name, None) is not None

    def listed(self) -> dict[str, datetime]:
        return dict(sorted(self.names.items()))

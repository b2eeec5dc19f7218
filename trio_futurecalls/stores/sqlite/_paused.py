"""Paused classes in SQLite: what ``pause``, ``resume``, ``paused`` and the claim run
on the connection (table ``futurecalls_paused`` of migration 0008).

``pause`` and ``resume`` are write transactions (``BEGIN IMMEDIATE``), as is every
claim, so each claim runs wholly before or wholly after a pause: once ``pause``
returned, no claim of any process on the file takes a row of that name.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping
from datetime import datetime

from ..._errors import StoreError
from .._paused import without_paused
from ._connection import from_micros
from ._rows import show


def pause(q: Mapping[str, str], name: str, now_us: int, conn: sqlite3.Connection) -> bool:
    """Pause ``name``; True if it was not paused."""
    return conn.execute(q["pause"], (name, now_us)).rowcount > 0


def resume(q: Mapping[str, str], name: str, conn: sqlite3.Connection) -> bool:
    """End ``name``'s pause; True if it was paused."""
    return conn.execute(q["resume"], (name,)).rowcount > 0


def listed(q: Mapping[str, str], conn: sqlite3.Connection) -> dict[str, datetime]:
    """Every paused name and when it was paused. The table's CHECKs hold names to text
    and times to integers in range; a row that bypassed them is a StoreError."""
    paused = {}
    for name, paused_at in conn.execute(q["paused"]):
        try:
            if type(name) is not str or type(paused_at) is not int:
                raise TypeError(name, paused_at)
            paused[name] = from_micros(paused_at)
        except (TypeError, OverflowError):
            raise StoreError(
                f"SQLite store: a paused class cannot be read ({show(name)}, {show(paused_at)}); "
                "it was written by another program"
            ) from None
    return paused


def unpaused(
    q: Mapping[str, str], slots: Mapping[str, int], conn: sqlite3.Connection
) -> Mapping[str, int]:
    """``slots`` without the paused names, read in the claim's transaction."""
    return without_paused(slots, {row[0] for row in conn.execute(q["paused_names"])})

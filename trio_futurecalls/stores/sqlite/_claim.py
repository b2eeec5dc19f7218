"""The SQLite claim: one transaction that takes the best due calls and says when the
next one is due (see ``Store.claim``).

Runs inside the store's write transaction (``BEGIN IMMEDIATE``), on its thread. It
reads only the (name, priority, due_at, id) index of the calls that wait for nothing
(migration 0007) and the rows it takes. Rows are decoded here, defensively
(``_rows.py``): one that does not decode is kept as a dead letter, with the reason, in
the same commit that deletes it (and the calls that wait for it follow it), never
handed over, never lost.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Mapping
from datetime import datetime

import attrs

from ..._model import Lease, StoredCall
from .._claims import free_after_claim
from . import _cluster as cluster
from . import _dependencies as dependencies
from ._connection import from_micros, to_micros
from ._paused import unpaused
from ._quarantine import keep_as_dead_letters
from ._rows import Checked, claimed_call, due_time, has_dependents

UNREADABLE: str = "Moved to dead letters when claimed: this call could not be read"


@attrs.frozen
class Taken:
    """What a claim took, and what it moved to dead letters instead."""

    calls: list[StoredCall]
    #: Among the rows of the names that still have a free slot (see ``Store.claim``).
    next_due: datetime | None
    unreadable: list[Checked]
    #: The calls that took a concurrency token (see ``Claim.holding``).
    holding: frozenset[int] = frozenset()


def claim(
    q: Mapping[str, str],
    now_us: int,
    slots: Mapping[str, int],
    limit: int,
    lease: Lease | None,
    conn: sqlite3.Connection,
) -> Taken:
    """Take the due calls (``slots`` and ``limit`` as ``Store.claim`` says)."""
    owner = None if lease is None else lease.owner
    now = from_micros(now_us)
    slots = unpaused(q, slots, conn)  # (paused names: not taken, not in next_due)
    planned = cluster.plan(q, conn, slots, limit, now, owner)
    if planned is not None:  # cut to the free tokens of cluster-wide limits
        slots, limit = planned[0].slots, planned[0].limit
    found: list[StoredCall] = []
    unreadable: list[Checked] = []
    #: Rows that did not decode and that calls wait for -> the reason they go.
    failed_prerequisites: dict[int, str] = {}
    for name, free in slots.items():
        if free <= 0:
            continue
        # The name's priorities in use, highest first (one index seek each), and in
        # each its rows due by now, earliest first, up to the slots left: future rows
        # of a higher priority are never read. (A priority another program stored that
        # is not an int in range is walked too: its rows are dead-lettered below.)
        left = free
        priority = conn.execute(q["top_priority"], (name,)).fetchone()[0]
        while priority is not None:
            rows = conn.execute(q["claim_candidates"], (name, priority, now_us, left)).fetchall()
            for row in rows:
                call = claimed_call(row, now_us)
                if isinstance(call, Checked):
                    unreadable.append(call)
                    if has_dependents(row):
                        failed_prerequisites[call.id] = call.reason(UNREADABLE)
                else:
                    found.append(call)
            left -= len(rows)
            if left <= 0:
                break
            priority = conn.execute(q["next_priority"], (name, priority)).fetchone()[0]
    if unreadable:
        keep_as_dead_letters(conn, unreadable, now_us, UNREADABLE)
        conn.execute(q["delete_ids"], (json.dumps([bad.id for bad in unreadable]),))
        if failed_prerequisites:  # the calls that wait for them follow them
            dependencies.end_dependents(q, failed_prerequisites, (), now_us, conn)
    found.sort(key=lambda c: (-c.priority, c.due_at, c.id))
    calls = found[:limit]
    held: frozenset[int] = frozenset()
    if planned is not None:
        held = cluster.take_tokens(q, conn, planned, [(c.id, c.name) for c in calls], now, owner)
    leased = [c.id for c in calls if lease is not None and c.name in lease.names]
    deleted = [c.id for c in calls if lease is None or c.name not in lease.names]
    if deleted:
        started = [c.id for c in calls if c.dependents and c.id not in leased]
        if started:  # at-most-once: its row goes, its record says that it runs
            owner, expires = (
                (None, None) if lease is None else (lease.owner, to_micros(lease.expires_at))
            )
            conn.execute(q["record_started"], (json.dumps(started), now_us, owner, expires))
        conn.execute(q["delete_ids"], (json.dumps(deleted),))
    if leased:
        assert lease is not None
        params = (lease.owner, to_micros(lease.expires_at), json.dumps(leased))
        conn.execute(q["lease_ids"], params)
    # In the same transaction: a few index seeks per name that still has room.
    taken = json.dumps([c.id for c in calls])
    nexts = [
        conn.execute(q["next_due_of_name"], (name, taken)).fetchone()
        for name in free_after_claim(slots, limit, (c.name for c in calls))
    ]
    dues = [due_time(row[0]) for row in nexts if row is not None]
    if planned is not None and planned[0].wake is not None:
        dues.append(planned[0].wake)
    next_due = min((due for due in dues if due is not None), default=None)
    return Taken(calls, next_due, unreadable, held)

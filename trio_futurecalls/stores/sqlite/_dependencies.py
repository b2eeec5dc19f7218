"""Dependencies between calls in SQLite: the edges are the truth, and every change to
them happens in the transaction of the write that causes it.

The model is ``stores/_dependencies.py``'s (migration 0007 holds it): an edge per
unmet prerequisite in ``futurecalls_call_dependencies``; a call's ``waiting`` counts
its edges (the claim's index holds only rows at 0), and ``dependents`` says edges
point to it; an at-most-once call with dependents that runs is in
``futurecalls_started_prerequisites``. Counts are recomputed from the edges, never
decremented, so a count another program wrote cannot make a call wait for ever once
its prerequisites end.

Each function runs inside the store's write transaction (``BEGIN IMMEDIATE``), on its
thread; a write that ends no prerequisite and no waiting call runs none of them.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

from ..._errors import PrerequisiteError
from ..._model import NewCall
from .._dependencies import ABANDONED, dependent_reasons
from ._inserts import insert_params
from ._rows import CALL_COLUMNS, check_row, due_time

#: A removed row as the deletes return it: ``id, waiting, dependents``.
Removed = Sequence[Any]


def _ids(values: Iterable[int]) -> str:
    return json.dumps(list(values))


# -- scheduling ----------------------------------------------------------------------


def check_prerequisites(q: Mapping[str, str], ids: Iterable[int], conn: sqlite3.Connection) -> None:
    """Each of ``ids`` may be waited for (a row: it has dependents now; or a running
    at-most-once call with dependents); else :class:`PrerequisiteError` (the caller's
    transaction rolls back)."""
    for call_id in dict.fromkeys(ids):
        if conn.execute(q["mark_prerequisite"], (call_id,)).fetchone() is not None:
            continue
        if conn.execute(q["is_started"], (call_id,)).fetchone() is not None:
            continue
        failed = conn.execute(q["is_dead_letter"], (call_id,)).fetchone() is not None
        raise PrerequisiteError(call_id, failed)


def insert_waiting_calls(
    q: Mapping[str, str], calls: Sequence[NewCall], conn: sqlite3.Connection
) -> tuple[list[int], datetime | None]:
    """Store a batch in which calls wait for others (``after``, ``after_batch``); their
    ids, and the earliest due time among the calls that wait for nothing (None: all
    wait). All or nothing: a refused prerequisite raises before anything is stored."""
    check_prerequisites(q, (p for c in calls for p in c.after), conn)
    waited_for = {p for c in calls for p in c.after_batch}
    ids: list[int] = []
    ready: list[datetime] = []
    for position, c in enumerate(calls):
        prerequisites = list(dict.fromkeys([*c.after, *(ids[p] for p in c.after_batch)]))
        # (No unique keys here: StoreArgs refuses them in a batch with dependencies.)
        params = (*insert_params(c), len(prerequisites), int(position in waited_for))
        (call_id,) = conn.execute(q["insert_waiting_call"], params).fetchone()
        if prerequisites:
            conn.execute(q["insert_edges"], (call_id, _ids(prerequisites)))
        else:
            ready.append(c.due_at)
        ids.append(call_id)
    return ids, min(ready, default=None)


# -- success -------------------------------------------------------------------------


def succeeded(
    q: Mapping[str, str], prerequisite_id: int, conn: sqlite3.Connection
) -> tuple[int, datetime | None]:
    """``prerequisite_id`` succeeded: its edges go. How many of the calls that waited
    for it wait for nothing now, and the earliest due time among them."""
    waited = [row[0] for row in conn.execute(q["succeeded_edges"], (prerequisite_id,))]
    if not waited:
        return 0, None
    rows = conn.execute(q["recount_waiting"], (_ids(waited),)).fetchall()
    dues = [due_time(due_at) for _, waiting, due_at in rows if waiting == 0]
    return len(dues), min((due for due in dues if due is not None), default=None)


def prerequisite_ended(
    q: Mapping[str, str],
    call_id: int,
    error: str | None,
    ended_us: int,
    conn: sqlite3.Connection,
) -> tuple[int, datetime | None]:
    """``Store.prerequisite_ended``: how many calls it made due or dead letters, and
    the earliest due time of those made due."""
    if conn.execute(q["end_started"], (call_id,)).fetchone() is None:
        return 0, None  # told already, or not an at-most-once prerequisite that runs
    if error is None:
        return succeeded(q, call_id, conn)
    return end_dependents(q, {call_id: error}, (), ended_us, conn), None


def end_abandoned(q: Mapping[str, str], now_us: int, conn: sqlite3.Connection) -> int:
    """``Store.end_abandoned_prerequisites``: the records that expired by ``now_us``
    go, and the calls waiting for them end; how many dead letters."""
    expired = [row[0] for row in conn.execute(q["end_expired_started"], (now_us,))]
    if not expired:
        return 0
    roots = {call_id: ABANDONED for call_id in expired if type(call_id) is int}
    return end_dependents(q, roots, (), now_us, conn)


# -- failure -------------------------------------------------------------------------


def removed(
    q: Mapping[str, str],
    rows: Iterable[Removed],
    error: str,
    failed_us: int,
    conn: sqlite3.Connection,
) -> int:
    """Call rows just deleted for good because of ``error`` (cancelled, dead letters):
    the edges of those that waited go, and the calls that wait for them, and theirs,
    become dead letters (see ``end_dependents``). Returns how many."""
    rows = list(rows)
    roots = {row[0]: error for row in rows if row[2] != 0}
    waited = [row[0] for row in rows if row[1] != 0]
    if not roots and not waited:
        return 0
    return end_dependents(q, roots, waited, failed_us, conn, {row[0] for row in rows})


def end_dependents(
    q: Mapping[str, str],
    roots: Mapping[int, str],
    waited: Iterable[int],
    failed_us: int,
    conn: sqlite3.Connection,
    gone: Iterable[int] = (),
) -> int:
    """``roots`` (id -> why) ended without success and ``waited`` are calls gone for
    good that waited: every call that waits for a root, and theirs, becomes a dead
    letter failed at ``failed_us`` with the reason ``dependent_reasons`` gives; the
    edges of all of them go, both ways, and so do their running records. ``gone``:
    ids removed with the roots (no reason of their own). Returns how many moved."""
    gone = set(gone) | set(roots)

    def dependents_of(prerequisite: int) -> list[int]:
        found = conn.execute(q["dependents_of"], (prerequisite,)).fetchall()
        # (Only ids: an edge another program wrote may hold anything.)
        return [row[0] for row in found if type(row[0]) is int and row[0] not in gone]

    reasons = dependent_reasons(roots, dependents_of) if roots else {}
    # (Every dependent waited; a root that did is among ``waited``.)
    forgotten = {*waited, *reasons}
    left_behind: set[int] = set()
    if forgotten:
        found = conn.execute(q["forget_waiting"], (_ids(sorted(forgotten)),))
        left_behind = {row[0] for row in found if type(row[0]) is int}
    if roots:
        ended = _ids([*roots, *reasons])
        conn.execute(q["forget_dependents"], (ended,))
        conn.execute(q["end_started_of"], (ended,))
    left_behind -= gone | set(reasons)
    if left_behind:  # prerequisites that still run or wait, whose dependents went
        conn.execute(q["clear_dependents"], (_ids(sorted(left_behind)),))
    return _to_dead_letters(q, reasons, failed_us, conn) if reasons else 0


def _to_dead_letters(
    q: Mapping[str, str], reasons: Mapping[int, str], failed_us: int, conn: sqlite3.Connection
) -> int:
    """Move the calls of ``reasons`` (id -> reason) to dead letters, nearest first; a
    call another program wrote keeps what passes the row checks (``_rows.py``) and its
    error says what did not. Returns how many moved (a call with no row is skipped)."""
    wanted = _ids(reasons)
    rows = {row[0]: row for row in conn.execute(q["doomed_calls"], (wanted,))}
    moved = 0
    for call_id, reason in reasons.items():
        row = rows.get(call_id)
        if row is None:
            continue
        checked = check_row(row, CALL_COLUMNS, failed_us)
        name, payload, due_at, identifier, scheduled_at, attempts = checked.kept
        error = reason
        if checked.problems:
            error += "\n" + checked.reason("Values of this call were replaced")
        params = (call_id, name, payload, due_at, identifier, scheduled_at, failed_us)
        conn.execute(q["insert_dead_letter"], (*params, error, attempts))
        moved += 1
    conn.execute(q["delete_ids"], (wanted,))
    return moved


# -- listing -------------------------------------------------------------------------


def waiting_for(
    q: Mapping[str, str], call_ids: Sequence[int], conn: sqlite3.Connection
) -> dict[int, tuple[int, ...]]:
    """The prerequisites each of ``call_ids`` (pending calls that wait) waits for, in
    id order (none for a call whose count another program set)."""
    found: dict[int, list[int]] = {call_id: [] for call_id in call_ids}
    for call_id, prerequisite in conn.execute(q["waiting_for"], (_ids(call_ids),)):
        if call_id in found and type(prerequisite) is int:
            found[call_id].append(prerequisite)
    return {call_id: tuple(prerequisites) for call_id, prerequisites in found.items()}

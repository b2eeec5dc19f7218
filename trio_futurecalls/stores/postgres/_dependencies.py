"""Dependencies between calls on PostgreSQL: the transactions, on the asyncio side.

Each function runs inside one transaction the store opens on a connection of its own
(``Connections.transaction``). The rule that keeps a dependent from waiting forever:
a statement that reads edges (``call_dependencies``) runs *after* the statement that
took the locks of the rows those edges point to. In READ COMMITTED each statement
sees what was committed when it began, so an edge added by a transaction that held
such a lock (and committed while this one waited for it) is seen. A single statement
that deleted a row and read its edges would miss it.

* Scheduling with ``after`` locks the prerequisites' rows (marking them as having
  dependents) or their records as started at-most-once calls, then inserts.
* A prerequisite that succeeded: its row or record goes (lock), then its edges are
  read and its dependents released; NOTIFY for those now due.
* A prerequisite that ended otherwise: its row or record goes (lock), then its
  dependents are found, locked, and looked for again until no new one appears
  (an edge added to a dependent before it was locked is then seen); they become dead
  letters with the reasons of ``stores/_dependencies.py``.

Every transaction here locks call rows before edges, and rows in id order within a
statement; but a cascade locks its dependents level by level, and a grouped write
locks rows in its own order, so a cycle can still form between two of them. The
server breaks it by failing one, which the store runs again, whole
(``PostgresStore._dependency_transaction``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from ..._errors import PrerequisiteError
from ..._model import NewCall, StoredCall
from .._dependencies import ABANDONED, CANCELLED, dependent_reasons
from ._listener import notify_payload

Queries = Mapping[str, str]

#: How often a batch's prerequisites are looked up, rows then records (see
#: _schedule_waiting).
_LOOKUPS = 3


async def aio_schedule_waiting(
    q: Queries, channel: str, calls: Sequence[NewCall], conn: Any
) -> tuple[list[int], datetime | None]:
    """Store a batch in which calls wait for others (all or nothing); return the ids
    and the earliest due time of the calls that wait for nothing (None: none)."""
    wanted = list(dict.fromkeys(p for c in calls for p in c.after))  # first mention first
    missing = wanted
    # A call can move from its record back to a row (put_back) between the two
    # lookups: the record's lock waited for that put back, whose row the row lookup,
    # run before, could not see. The rows are looked up again then (a new statement,
    # a new snapshot), a few times at most.
    for _ in range(_LOOKUPS):
        if not missing:
            break
        seen = {r[0] for r in await conn.fetch(q["dependency_lock_calls"], sorted(missing))}
        missing = [p for p in missing if p not in seen]
        if not missing:
            break
        rows = await conn.fetch(q["dependency_lock_started"], sorted(missing))
        running = {r[0] for r in rows}
        missing = [p for p in missing if p not in running]
    for p in missing:
        failed = bool(await conn.fetchval(q["dependency_failed"], p))
        raise PrerequisiteError(p, failed)
    referenced = {p for c in calls for p in c.after_batch}
    rows = await conn.fetch(
        q["insert_waiting_calls"],
        [c.name for c in calls],
        [c.payload for c in calls],
        [c.due_at for c in calls],
        [c.identifier for c in calls],
        [c.scheduled_at for c in calls],
        [len(c.after) + len(c.after_batch) for c in calls],
        [k in referenced for k in range(len(calls))],
        [c.attempts for c in calls],
        [c.priority for c in calls],
        [c.recurring_key for c in calls],
        [c.tick_at for c in calls],
    )
    ids = sorted(r[0] for r in rows)  # identity values grow in input order
    prerequisites: list[int] = []
    dependents: list[int] = []
    for call, call_id in zip(calls, ids, strict=True):
        for p in (*call.after, *(ids[k] for k in call.after_batch)):
            prerequisites.append(p)
            dependents.append(call_id)
    await conn.execute(q["insert_dependencies"], prerequisites, dependents)
    ready = [c.due_at for c in calls if not c.after and not c.after_batch]
    earliest = min(ready) if ready else None
    if earliest is not None:
        await conn.execute(q["notify"], channel, notify_payload(earliest))
    return ids, earliest


async def aio_release(
    q: Queries, channel: str, prerequisites: Sequence[int], conn: Any
) -> tuple[int, datetime | None]:
    """``prerequisites`` succeeded (their rows or records gone, in an earlier
    statement): release their dependents, NOTIFY in the same statement; (how many are
    due now, the earliest due time among them)."""
    # Rows before edges, as every transaction here takes them (see the module).
    await conn.fetch(q["dependency_lock_dependents"], list(prerequisites))
    rows = await conn.fetch(q["release_dependents"], list(prerequisites), channel)
    if not rows:
        return 0, None
    earliest: datetime = min(r[1] for r in rows)
    return len(rows), earliest


async def aio_end(q: Queries, roots: Mapping[int, str], failed_at: datetime, conn: Any) -> int:
    """``roots`` (id -> why) ended without success (their rows or records gone, in an
    earlier statement): their dependents, transitively, become dead letters."""
    if not roots:
        return 0
    locked: set[int] = set()
    while True:
        edges = await conn.fetch(q["dependency_closure"], list(roots))
        new = sorted({r[1] for r in edges} - locked - roots.keys())
        if not new:
            break
        await conn.fetch(q["dependency_lock_rows"], new)
        locked.update(new)
    if not edges:
        return 0
    by_prerequisite: dict[int, list[int]] = {}
    for prerequisite, dependent in edges:
        by_prerequisite.setdefault(prerequisite, []).append(dependent)
    reasons = dependent_reasons(roots, lambda p: sorted(by_prerequisite.get(p, ())))
    moved: int = await conn.fetchval(
        q["dependency_end"], list(roots), list(reasons), list(reasons.values()), failed_at
    )
    return moved


async def aio_end_dropped(q: Queries, runs: Sequence[int], now: datetime, conn: Any) -> int:
    """Runs of recurring schedules cancelled while they ran, dropped by put_back: their
    records go, and the calls waiting for them end. How many dead letters."""
    dropped = [r[0] for r in await conn.fetch(q["started_drop"], sorted(set(runs)))]
    return await aio_end(q, dict.fromkeys(dropped, CANCELLED), now, conn)


async def aio_end_abandoned(q: Queries, now: datetime, conn: Any) -> int:
    """The records of started prerequisites that expired by ``now`` go; the calls
    waiting for them end (their worker stopped). How many dead letters."""
    expired = [r[0] for r in await conn.fetch(q["end_expired_started"], now)]
    return await aio_end(q, dict.fromkeys(expired, ABANDONED), now, conn)


async def aio_gone(
    q: Queries, rows: Sequence[Any], why: str, failed_at: datetime, conn: Any
) -> None:
    """Rows ``(id, dependents, waiting)`` just deleted (cancelled, moved to dead
    letters): the edges of the waiting ones go; the dependents of the others end."""
    waiting = [r[0] for r in rows if r[2]]
    if waiting:
        await conn.execute(q["dependency_forget"], waiting)
    await aio_end(q, {r[0]: why for r in rows if r[1]}, failed_at, conn)


async def aio_complete_prerequisite(
    q: Queries, channel: str, owner: str, call_id: int, conn: Any
) -> tuple[bool, datetime | None]:
    """A leased call other calls wait for succeeded: (its row went, earliest due time
    of the dependents now due)."""
    if await conn.fetchval(q["complete_prerequisite"], owner, call_id) is None:
        return False, None
    _, earliest = await aio_release(q, channel, [call_id], conn)
    return True, earliest


async def aio_dead_letter_prerequisite(
    q: Queries, call: StoredCall, error: str, failed_at: datetime, owner: str | None, conn: Any
) -> int | None:
    """Keep a call other calls wait for as a dead letter; its dependents end too."""
    dead_id: int | None = await conn.fetchval(
        q["dead_letter_prerequisite"],
        call.id,
        call.name,
        call.payload,
        call.due_at,
        call.identifier,
        call.scheduled_at,
        failed_at,
        error,
        call.attempts,
        owner,
    )
    if dead_id is not None:
        await aio_end(q, {call.id: error}, failed_at, conn)
    return dead_id


async def aio_prerequisite_ended(
    q: Queries, channel: str, call_id: int, error: str | None, ended_at: datetime, conn: Any
) -> tuple[int, datetime | None]:
    """A started at-most-once prerequisite ended: (how many dependents were made due or
    dead letters, the earliest due time of those made due)."""
    if await conn.fetchval(q["started_end"], call_id) is None:
        return 0, None  # told already, or never recorded
    if error is None:
        return await aio_release(q, channel, [call_id], conn)
    return await aio_end(q, {call_id: error}, ended_at, conn), None


async def aio_requeue_waiting(
    q: Queries, channel: str, dead_letter_id: int, due_at: datetime, after: Sequence[int], conn: Any
) -> int | None:
    """Move a dead letter back to pending, waiting for ``after`` (a PrerequisiteError
    rolls the transaction back: the dead letter stays)."""
    row = await conn.fetchrow(q["requeue_take"], dead_letter_id)
    if row is None:
        return None
    new = NewCall(
        name=row[0],
        payload=row[1],
        identifier=row[2],
        scheduled_at=row[3],
        due_at=due_at,
        after=tuple(after),
    )
    ids, _ = await aio_schedule_waiting(q, channel, [new], conn)
    return ids[0]

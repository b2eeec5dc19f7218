"""Storing calls: the parameters of ``insert_calls``, batches with unique keys, and
which statements store scheduled calls (``schedule_commit``).

Both run a statement of ``queries.sql``; the keyed one, on the asyncio side, runs
``insert_keyed_calls`` again for rows whose key holder it could not see, and a batch
the server rolled back for a deadlock (see the README's "Unique keys").
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Sequence
from datetime import datetime
from typing import Any, Final, Literal

import asyncpg

from ..._errors import StoreError
from ..._model import NewCall
from ..._new_call_columns import NewCallColumns
from ..._validate import check_choice
from ._listener import notify_payload

#: How a schedule commits (``open_postgres_store(schedule_commit=...)``): "durable"
#: with the server's ``synchronous_commit``; "asynchronous" without waiting for its WAL
#: to reach the disk (``_async_commit`` in queries.sql).
ScheduleCommit = Literal["durable", "asynchronous"]
SCHEDULE_COMMITS: Final[tuple[ScheduleCommit, ...]] = ("durable", "asynchronous")

#: The statements a schedule runs on the store's own connection, each alone or in a
#: transaction that holds only that batch. Each has an ``_async_commit`` variant.
#: Not here, so always durable: calls that wait for others (``insert_waiting_calls``,
#: several statements that also lock and mark their prerequisites' rows), the runs of
#: recurring schedules, and every write of a worker (claims, completions...).
SCHEDULE_QUERIES: Final = (
    "insert_one_call",
    "insert_new_calls",
    "insert_calls",
    "insert_keyed_calls",
)


def check_schedule_commit(value: object) -> ScheduleCommit:
    """One of :data:`SCHEDULE_COMMITS`, else :class:`InvalidArgumentError`."""
    return check_choice(value, SCHEDULE_COMMITS, "schedule_commit")


def schedule_queries(schedule_commit: ScheduleCommit) -> dict[str, str]:
    """Which query each of :data:`SCHEDULE_QUERIES` is, for ``schedule_commit``."""
    suffix = "_async_commit" if schedule_commit == "asynchronous" else ""
    return {name: name + suffix for name in SCHEDULE_QUERIES}


def _common_args(calls: Sequence[NewCall], channel: str, earliest: datetime) -> list[Any]:
    """``$1`` to ``$7`` of ``insert_calls`` and ``insert_new_calls``: the columns every
    call has, and the NOTIFY (``channel``, the earliest due time)."""
    return [
        [c.name for c in calls],
        [c.payload for c in calls],
        [c.due_at for c in calls],
        [c.identifier for c in calls],
        [c.scheduled_at for c in calls],
        channel,
        notify_payload(earliest),
    ]


def insert_calls_args(calls: Sequence[NewCall], channel: str, earliest: datetime) -> list[Any]:
    """The parameters of ``insert_calls`` for ``calls`` (NOTIFY ``channel`` with the
    earliest due time)."""
    return [
        *_common_args(calls, channel, earliest),
        [c.attempts for c in calls],
        [c.recurring_key for c in calls],
        [c.tick_at for c in calls],
        [c.priority for c in calls],
    ]


def is_new(call: NewCall) -> bool:
    """Whether ``insert_new_calls`` can store ``call`` (no attempts, not a recurring run)."""
    return call.attempts == 0 and call.recurring_key is None and call.tick_at is None


def insert_new_calls_args(calls: Sequence[NewCall], channel: str, earliest: datetime) -> list[Any]:
    """The parameters of ``insert_new_calls`` for ``calls`` (all :func:`is_new`)."""
    return [*_common_args(calls, channel, earliest), [c.priority for c in calls]]


def insert_columns_args(calls: NewCallColumns, channel: str, earliest: datetime) -> list[Any]:
    """The parameters of ``insert_new_calls`` for a batch kept as columns."""
    return [
        calls.names,
        calls.payloads,
        calls.due_ats,
        calls.identifiers,
        [calls.scheduled_at] * len(calls),
        channel,
        notify_payload(earliest),
        calls.priorities,
    ]


#: How often ``insert_keyed_calls`` runs again for rows whose key holder it could
#: not see (each time, another holder was committed right after its snapshot).
_KEYED_ATTEMPTS: Final = 50


#: How often a keyed batch is run again after the server rolled it back for a
#: deadlock or a serialization failure (see aio_insert_keyed).
DEADLOCK_ATTEMPTS: Final = 10
TRY_AGAIN: Final = (
    asyncpg.exceptions.DeadlockDetectedError,
    asyncpg.exceptions.SerializationError,
)


class _Duplicate(Exception):
    """Rolls back the transaction of a batch whose "error" key conflicted."""


async def aio_insert_keyed(
    conn: Any, sql: str, calls: Sequence[NewCall], channel: str, wake: str, atomic: bool
) -> list[tuple[int, bool]]:
    """On the asyncio side, on ``conn``: ``insert_keyed_calls`` for ``calls``, again
    for the rows whose holder its snapshot did not show, until each has an id; in a
    transaction of its own when ``atomic`` (rolled back if an "error" row conflicted).
    Returns ``(id, conflicted)`` per call."""
    answers: list[tuple[int, bool] | None] = [None] * len(calls)

    async def run(positions: list[int]) -> None:
        rows = await conn.fetch(
            sql,
            [calls[k].name for k in positions],
            [calls[k].payload for k in positions],
            [calls[k].due_at for k in positions],
            [calls[k].identifier for k in positions],
            [calls[k].scheduled_at for k in positions],
            channel,
            wake,
            [calls[k].attempts for k in positions],
            [calls[k].unique_key for k in positions],
            [calls[k].on_conflict for k in positions],
            [calls[k].recurring_key for k in positions],
            [calls[k].tick_at for k in positions],
            [calls[k].priority for k in positions],
        )
        for k, row in zip(positions, rows, strict=True):
            if row[0] is not None:
                answers[k] = (row[0], row[1])

    async def all_rows() -> None:
        for _ in range(_KEYED_ATTEMPTS):
            missing = [k for k, answer in enumerate(answers) if answer is None]
            if not missing:
                return
            await run(missing)
        raise StoreError(
            f"PostgreSQL: unique keys kept changing hands; {_KEYED_ATTEMPTS} attempts "
            "could not tell which call holds them"
        )

    if not atomic:
        await all_rows()
        return [answer for answer in answers if answer is not None]
    for attempt in range(1, DEADLOCK_ATTEMPTS + 1):
        answers[:] = [None] * len(calls)
        try:
            async with conn.transaction():
                await all_rows()
                if any(
                    answer is not None and answer[1] and call.on_conflict == "error"
                    for call, answer in zip(calls, answers, strict=True)
                ):
                    raise _Duplicate
        except _Duplicate:
            pass  # rolled back: nothing of the batch is stored
        except TRY_AGAIN:
            # Two batches took the same keys in crossed order (an "ignore" and a
            # "replace" row lock in two steps of one statement): the server rolled
            # this one back whole; run it again, after a short random pause.
            if attempt == DEADLOCK_ATTEMPTS:
                raise
            await asyncio.sleep(random.uniform(0, 0.01 * attempt))
            continue
        break
    return [answer for answer in answers if answer is not None]

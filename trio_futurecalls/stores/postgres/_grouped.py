"""The writes after a call, grouped: completions, releases, hand-backs and dead letters
that callers ask for at the same time share one statement each.

At shutdown every running call ends at once, and each wants a write (a release of its
lease, a hand-back, a dead letter). One statement each, run concurrently, would take
one pool connection each: hundreds of connections, more than the server allows. Here
concurrent requests of one kind wait for the statement in flight and then go
together in the next (:class:`GroupCommit`), so the writes of any number of calls take
at most one connection per kind.

The statements (``*_many`` in ``queries.sql``) take arrays and answer per input row,
and every one of them is safe to run twice (it acts only on rows the owner holds, or
puts a call back under its own id), as a batch whose runner was cancelled runs again.
Items are checked before they join a batch (``StoreArgs``); should a batch still
fail with a :class:`StoreError` that is not an outage, its items are tried one by one,
so that only the caller whose item the database refused gets the error.

Nothing here shields itself from cancellation: the engine bounds these writes
(``CLEANUP_TIMEOUT``), and a caller that gives up stops waiting at once.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime
from typing import Any, TypeVar, final

import attrs

from ..._errors import StoreError, StoreUnavailableError
from ..._model import StoredCall
from .._batch import Failed, GroupCommit
from .._listeners import WAKE_NOW, Listeners
from ._listener import notify_payload
from ._values import utc

K = TypeVar("K")
R = TypeVar("R")

#: How the store runs one named query: ``(method, query name, *args)``.
Call = Callable[..., Awaitable[Any]]


@attrs.frozen
class _Release:
    owner: str
    call_id: int
    due_at: datetime
    refund: bool


@attrs.frozen
class _PutBack:
    calls: tuple[StoredCall, ...]
    owner: str | None


@attrs.frozen
class _DeadLetter:
    call: StoredCall
    error: str
    failed_at: datetime
    owner: str | None


def _one_by_one_on_refusal(
    run_batch: Callable[[Sequence[K]], Awaitable[Sequence[R]]],
) -> Callable[[Sequence[K]], Awaitable[Sequence[R | Failed]]]:
    """``run_batch`` for a :class:`GroupCommit`: when the database refuses a batch, its
    items run one by one, so that one caller's bad item fails only that caller
    (:class:`Failed`)."""

    async def run(items: Sequence[K]) -> Sequence[R | Failed]:
        try:
            return await run_batch(items)
        except StoreUnavailableError:
            raise  # every caller retries (the engine backs off)
        except StoreError:
            if len(items) == 1:
                raise
        answers: list[R | Failed] = []
        for item in items:
            try:
                (answer,) = await run_batch([item])
            except StoreUnavailableError:
                raise
            except StoreError as exc:
                answers.append(Failed(exc))
            else:
                answers.append(answer)
        return answers

    return run


@final
class GroupedWrites:
    """The store's writes after a call; ``call`` runs one named query."""

    def __init__(self, call: Call, channel: str, listeners: Listeners) -> None:
        self._call = call
        self._channel = channel
        self._listeners = listeners
        # (Completions and releases join the round: see GroupCommit.)
        self._completions: GroupCommit[tuple[str, int], bool] = GroupCommit(
            _one_by_one_on_refusal(self._complete_batch), join_round=True
        )
        self._releases: GroupCommit[_Release, bool] = GroupCommit(
            _one_by_one_on_refusal(self._release_batch), join_round=True
        )
        self._put_backs: GroupCommit[_PutBack, tuple[int, list[int]]] = GroupCommit(
            _one_by_one_on_refusal(self._put_back_batch)
        )
        self._dead_letters: GroupCommit[_DeadLetter, int | None] = GroupCommit(
            _one_by_one_on_refusal(self._dead_letter_batch)
        )
        # Cluster-wide tokens freed as calls end (join the round, as completions do).
        self._frees: GroupCommit[tuple[str, tuple[int, ...]], int] = GroupCommit(
            _one_by_one_on_refusal(self._free_batch), join_round=True
        )

    # -- what the store's methods call (items already checked) -----------------------

    async def complete(self, owner: str, call_id: int) -> bool:
        return await self._completions.submit((owner, call_id))

    async def release(self, owner: str, call_id: int, due_at: datetime, refund: bool) -> bool:
        return await self._releases.submit(_Release(owner, call_id, due_at, refund))

    async def put_back(
        self, calls: Sequence[StoredCall], owner: str | None
    ) -> tuple[int, list[int]]:
        """(how many were put back, ids of runs dropped whose dependents must end)."""
        return await self._put_backs.submit(_PutBack(tuple(calls), owner))

    async def dead_letter(
        self, call: StoredCall, error: str, failed_at: datetime, owner: str | None
    ) -> int | None:
        return await self._dead_letters.submit(_DeadLetter(call, error, failed_at, owner))

    async def free_tokens(self, owner: str, call_ids: Sequence[int]) -> int:
        """How many tokens were freed (NOTIFY and listeners when any was)."""
        return await self._frees.submit((owner, tuple(call_ids)))

    # -- one statement per batch -------------------------------------------------------

    def _wake(self, due_times: Sequence[datetime]) -> None:
        # The NOTIFY reaches other processes (and this one again: listeners tolerate
        # duplicates); this process's listeners learn it at once.
        if due_times:
            self._listeners.notify(min(utc(t) for t in due_times))

    async def _complete_batch(self, items: Sequence[tuple[str, int]]) -> list[bool]:
        by_owner: dict[str, list[int]] = {}
        for owner, call_id in items:
            by_owner.setdefault(owner, []).append(call_id)
        deleted: set[tuple[str, int]] = set()
        for owner, ids in by_owner.items():  # in practice one owner: the scheduler's
            rows = await self._call("fetch", "complete", owner, sorted(set(ids)))
            deleted.update((owner, row[0]) for row in rows)
        results = []
        for item in items:
            # A call completed twice in one batch: the first one deleted the row.
            results.append(item in deleted)
            deleted.discard(item)
        return results

    async def _release_batch(self, items: Sequence[_Release]) -> list[bool]:
        earliest = min(utc(i.due_at) for i in items)
        rows = await self._call(
            "fetch",
            "release_many",
            [i.call_id for i in items],
            [i.owner for i in items],
            [i.due_at for i in items],
            [int(i.refund) for i in items],
            self._channel,
            notify_payload(earliest),
        )
        released = {row[0] - 1 for row in rows}  # positions are 1-based
        self._wake([items[k].due_at for k in released])
        return [k in released for k in range(len(items))]

    async def _put_back_batch(self, items: Sequence[_PutBack]) -> list[tuple[int, list[int]]]:
        rows = [(k, call, item.owner) for k, item in enumerate(items) for call in item.calls]
        if not rows:
            return [(0, []) for _ in items]
        earliest = min(utc(call.due_at) for _, call, _ in rows)
        done = await self._call(
            "fetch",
            "put_back_many",
            [c.id for _, c, _ in rows],
            [c.name for _, c, _ in rows],
            [c.payload for _, c, _ in rows],
            [c.due_at for _, c, _ in rows],
            [c.identifier for _, c, _ in rows],
            [c.scheduled_at for _, c, _ in rows],
            [c.attempts for _, c, _ in rows],
            [owner for _, _, owner in rows],
            self._channel,
            notify_payload(earliest),
            [c.recurring_key for _, c, _ in rows],
            [c.tick_at for _, c, _ in rows],
            [c.priority for _, c, _ in rows],
            [c.dependents for _, c, _ in rows],
        )
        counts = [0 for _ in items]
        dropped: list[list[int]] = [[] for _ in items]
        for position, call_id in done:
            if position is not None:
                counts[rows[position - 1][0]] += 1
            else:
                dropped[next(k for k, call, _ in rows if call.id == call_id)].append(call_id)
        self._wake([rows[position - 1][1].due_at for position, _ in done if position is not None])
        return list(zip(counts, dropped, strict=True))

    async def _free_batch(self, items: Sequence[tuple[str, tuple[int, ...]]]) -> list[int]:
        rows = [(k, owner, call_id) for k, (owner, ids) in enumerate(items) for call_id in ids]
        if not rows:
            return [0 for _ in items]
        done = await self._call(
            "fetch",
            "free_tokens",
            [owner for _, owner, _ in rows],
            [call_id for _, _, call_id in rows],
            self._channel,
            notify_payload(WAKE_NOW),
        )
        freed = [0 for _ in items]
        for (position,) in done:
            freed[rows[position - 1][0]] += 1
        if done:
            self._listeners.notify(WAKE_NOW)
        return freed

    async def _dead_letter_batch(self, items: Sequence[_DeadLetter]) -> list[int | None]:
        rows = await self._call(
            "fetch",
            "dead_letter_many",
            [i.call.id for i in items],
            [i.call.name for i in items],
            [i.call.payload for i in items],
            [i.call.due_at for i in items],
            [i.call.identifier for i in items],
            [i.call.scheduled_at for i in items],
            [i.failed_at for i in items],
            [i.error for i in items],  # (StoreArgs escaped any NUL: error_text)
            [i.call.attempts for i in items],
            [i.owner for i in items],
        )
        ids: list[int | None] = [None for _ in items]
        for position, new_id in rows:
            ids[position - 1] = new_id
        return ids

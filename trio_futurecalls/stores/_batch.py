"""Group commit: concurrent requests of the same kind share one store round trip."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

import trio

from .._errors import StoreError

K = TypeVar("K")
R = TypeVar("R")


class Failed:
    """A result of ``run_batch`` for one item that failed on its own (the others in the
    batch did not): its caller gets ``error``."""

    __slots__ = ("error",)

    def __init__(self, error: StoreError) -> None:
        self.error = error


class _Slot(Generic[K, R]):
    __slots__ = ("done", "error", "gone", "item", "result", "wakeup")

    def __init__(self, item: K) -> None:
        self.item = item
        self.done = False
        self.gone = False  # its caller stopped waiting
        self.result: R | Failed | None = None
        self.error: BaseException | None = None
        self.wakeup = trio.Event()


class GroupCommit(Generic[K, R]):
    """Coalesce concurrent ``submit`` calls into batches for ``run_batch``.

    The first caller runs a batch of everything queued so far; callers arriving
    meanwhile wait and are served by the next batch, run by the first of them. With
    one caller at a time it costs nothing extra; with many (calls finishing together)
    it turns N transactions, each with its own fsync, into a few. ``run_batch`` answers
    one result per item, in order; a :class:`Failed` result fails only its caller,
    an exception fails everyone in the batch.

    ``join_round``: the first caller lets the other tasks of the current scheduling
    round run (one checkpoint) before it takes the batch, so that calls finishing
    together join it rather than wait a whole round trip for the next one. On
    PostgreSQL (completions and releases) that took the at-least-once drain from 4,989
    to 5,886 calls/s (medians of three alternated runs of ``python -m benchmarks
    --store postgres --workload drain``); on SQLite, whose writes wait for a thread
    anyway, it measured 2-4% lower, so it is off there.
    """

    def __init__(
        self,
        run_batch: Callable[[Sequence[K]], Awaitable[Sequence[R | Failed]]],
        *,
        join_round: bool = False,
    ) -> None:
        self._run_batch = run_batch
        self._join_round = join_round
        self._queue: list[_Slot[K, R]] = []
        self._busy = False

    async def submit(self, item: K) -> R:
        slot: _Slot[K, R] = _Slot(item)
        self._queue.append(slot)
        while not slot.done:
            if self._busy:
                try:
                    await slot.wakeup.wait()
                except BaseException:
                    # Leaving (cancelled): give up our place, and if we were the one
                    # woken to run the next batch, pass that on.
                    slot.gone = True
                    if slot in self._queue:
                        self._queue.remove(slot)
                    if not self._busy and self._queue:
                        self._queue[0].wakeup.set()
                    raise
                slot.wakeup = trio.Event()
                continue
            self._busy = True
            if self._join_round:
                try:
                    await trio.lowlevel.checkpoint()
                except BaseException:
                    # Cancelled before anything was written: leave, and hand the
                    # next batch to whoever queued meanwhile.
                    self._busy = False
                    slot.gone = True
                    self._queue.remove(slot)
                    if self._queue:
                        self._queue[0].wakeup.set()
                    raise
            batch, self._queue = self._queue, []
            try:
                results = await self._run_batch([s.item for s in batch])
                for s, result in zip(batch, results, strict=True):
                    s.result = result
            except Exception as exc:
                error = exc if isinstance(exc, StoreError) else StoreError(repr(exc))
                for s in batch:
                    s.error = error
            except BaseException:
                # This caller was cancelled (its own deadline ran out, say) in the
                # middle. The others in the batch still want their items written,
                # within deadlines of their own: they go back to the front of the
                # queue, and the first of them runs the next batch. (The interrupted
                # statement may have committed: batched writes must be safe to repeat.)
                self._queue[:0] = [s for s in batch if s is not slot and not s.gone]
                batch = [slot]
                raise
            finally:
                self._busy = False
                for s in batch:
                    s.done = True
                    s.wakeup.set()
                if self._queue:
                    # Whoever queued during this batch takes the next one.
                    self._queue[0].wakeup.set()
        if slot.error is not None:
            raise slot.error
        if isinstance(slot.result, Failed):
            raise slot.result.error
        return slot.result  # type: ignore[return-value]

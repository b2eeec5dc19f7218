"""Review of the executors: engine logic that needs no real thread or process
(memory store, autojump clock)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

import pytest
import trio
from trio.testing import MockClock

from trio_futurecalls import (
    Delivery,
    Executor,
    FixedBackoff,
    FutureCall,
    InvalidArgumentError,
    MemoryStore,
    ProcessCallError,
    open_scheduler,
)


async def test_no_retry_on_process_call_error_is_honoured(
    autojump_clock: MockClock, clock: Callable[[], datetime]
) -> None:
    """A class that lists ProcessCallError in ``no_retry_on`` (do not retry when the
    worker process died) is not retried when ``to_process`` raises it."""
    attempts: list[int] = []

    class Render(FutureCall):
        name = "render"
        delivery = Delivery.AT_LEAST_ONCE
        max_attempts = 3
        retry_backoff = FixedBackoff(1)
        no_retry_on = (ProcessCallError,)

        async def invoke(self, session: Any, payload: Any) -> None:
            attempts.append(self.info.attempt)
            # What to_process raises when the worker process died under the call.
            raise ProcessCallError("BrokenWorkerError", "the worker process died", False)

    store = MemoryStore()
    async with open_scheduler(store, [Render], clock=clock) as s:
        await s.schedule(Render, None)
        await trio.sleep(60)
    assert attempts == [1]
    dead = await store.dead_letters()
    assert [d.attempts for d in dead] == [1]


async def test_a_task_class_may_inherit_a_helper_named_run(
    autojump_clock: MockClock, clock: Callable[[], datetime]
) -> None:
    """``run`` is a common method name: an abstract base class (no invoke, no name)
    with a helper called ``run``, as code written before executors existed has,
    still defines and runs."""
    done: list[int] = []

    class Base(FutureCall):
        def run(self, n: int) -> int:  # type: ignore[override]
            return n * 2

    class Doubles(Base):
        name = "doubles"

        async def invoke(self, session: Any, payload: Any) -> None:
            done.append(self.run(payload))

    async with open_scheduler(MemoryStore(), [Doubles], clock=clock) as s:
        await s.schedule(Doubles, 21)
        await trio.sleep(1)
    assert done == [42]


def test_an_inherited_async_run_is_refused() -> None:
    """A THREAD or PROCESS class whose run comes from a mixin as ``async def`` is
    refused when defined, like an async run of its own. (A PROCESS one would
    otherwise "succeed" doing nothing: the worker calls run and drops the
    coroutine; see tests/processes/test_executors_review.py.)"""

    class AsyncRunMixin:
        async def run(self, payload: Any) -> None:
            raise AssertionError("never awaited")

    with pytest.raises(InvalidArgumentError, match="plain function"):

        class Inherits(AsyncRunMixin, FutureCall):  # type: ignore[misc]
            name = "inherits"
            executor = Executor.THREAD

"""Unique keys through the scheduler's API, on the memory store, with the autojump clock."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any, ClassVar

import pytest
import trio
from trio.testing import MockClock

from trio_futurecalls import (
    Delivery,
    DuplicateCallError,
    FixedBackoff,
    FutureCall,
    InvalidArgumentError,
    MemoryStore,
    open_scheduler,
    schedule_call,
)


class Welcome(FutureCall):
    name = "welcome"
    delivery = Delivery.AT_LEAST_ONCE
    max_attempts = 2
    retry_backoff = FixedBackoff(10)
    ran: ClassVar[list[tuple[Any, float]]] = []

    async def invoke(self, session: Any, payload: Any) -> None:
        Welcome.ran.append((payload, trio.current_time()))
        if payload == "fail once" and self.info.attempt == 1:
            raise RuntimeError("first attempt fails")


async def test_schedule_with_unique_keys(
    autojump_clock: MockClock, clock: Callable[[], datetime]
) -> None:
    Welcome.ran = []
    store = MemoryStore()
    async with open_scheduler(store, [Welcome], clock=clock) as s:
        first = await s.schedule(Welcome, "a", delay=60, unique_key="user:7")
        assert await s.schedule(Welcome, "b", delay=5, unique_key="user:7") == first
        assert await schedule_call(store, Welcome, "c", unique_key="user:7", clock=clock) == first
        with pytest.raises(DuplicateCallError, match=f"call {first} is pending"):
            await s.schedule(Welcome, "d", unique_key="user:7", on_conflict="error")
        assert (
            await s.schedule(
                Welcome, "fail once", delay=30, unique_key="user:7", on_conflict="replace"
            )
            == first
        )
        (pending,) = await s.pending(Welcome)
        assert (pending.payload, pending.unique_key) == ('"fail once"', "user:7")
        # It starts at 30 s and fails; the key was freed when it started, and the
        # retry (10 s later) does not take it back.
        await trio.sleep(31)
        assert [p for p, _ in Welcome.ran] == ["fail once"]
        second = await s.schedule(
            Welcome, "next", delay=100, unique_key="user:7", on_conflict="error"
        )
        assert second != first
        await trio.sleep(10)
        assert [p for p, _ in Welcome.ran] == ["fail once", "fail once"]
        assert [(c.id, c.unique_key) for c in await s.pending(Welcome)] == [(second, "user:7")]
        # schedule_many: (class, payload, when, identifier, unique_key[, on_conflict]).
        ids = await s.schedule_many(
            [
                (Welcome, "x", 500, None, "batch"),
                (Welcome, "y", 500, "id", "batch", "replace"),
                (Welcome, "z", 500, None, "user:7"),
            ]
        )
        assert ids[0] == ids[1] != ids[2] == second
        with pytest.raises(DuplicateCallError):
            await s.schedule_many(
                [(Welcome, "w", 0, None, "new"), (Welcome, "v", 0, None, "batch", "error")]
            )
        assert {c.unique_key for c in await s.pending(Welcome)} == {"user:7", "batch"}
        await s.shutdown(grace_period=0)


@pytest.mark.parametrize(
    "keywords",
    [
        {"unique_key": ""},
        {"unique_key": 5},
        {"on_conflict": "skip"},
        {"unique_key": "k", "on_conflict": 1},
    ],
)
async def test_bad_keys_are_refused_at_the_call_site(
    autojump_clock: MockClock, clock: Callable[[], datetime], keywords: dict[str, Any]
) -> None:
    store = MemoryStore()
    async with open_scheduler(store, [Welcome], clock=clock, execute=False) as s:
        with pytest.raises(InvalidArgumentError):
            await s.schedule(Welcome, "a", **keywords)
        with pytest.raises(InvalidArgumentError):
            await schedule_call(store, Welcome, "a", clock=clock, **keywords)
        with pytest.raises(InvalidArgumentError, match="each request must be"):
            await s.schedule_many([(Welcome, "a", 0, None, "k", "error", "extra")])  # type: ignore[list-item]
        assert await s.pending() == []

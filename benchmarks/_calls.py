"""The call classes the workloads run: they count themselves, and may sleep or time."""

from __future__ import annotations

import time
from typing import Any

import attrs
import trio

from trio_futurecalls import FutureCall

#: The name every benchmark call is stored under.
NOOP_NAME = "bench-noop"


@attrs.define(eq=False)
class Counter:
    """Counts finished calls; ``done`` is set when ``target`` calls have run."""

    target: int
    count: int = 0
    done: trio.Event = attrs.field(factory=trio.Event)
    #: (start - due) in seconds, per call, when the class records lateness.
    lateness: list[float] = attrs.field(factory=list)

    def hit(self) -> None:
        self.count += 1
        if self.count >= self.target:
            self.done.set()


def counting_call(
    counter: Counter,
    *,
    max_concurrent: int | None,
    sleep: float = 0.0,
    record_lateness: bool = False,
) -> type[FutureCall]:
    """A call class named :data:`NOOP_NAME` that counts itself on ``counter``."""
    limit = max_concurrent

    class Counting(FutureCall):
        name = NOOP_NAME
        max_concurrent = limit

        async def invoke(self, session: Any, payload: Any) -> None:
            if record_lateness:
                counter.lateness.append(time.time() - self.info.due_at.timestamp())
            if sleep:
                await trio.sleep(sleep)
            counter.hit()

    return Counting


class Placeholder(FutureCall):
    """Registered by processes that only schedule calls named :data:`NOOP_NAME`."""

    name = NOOP_NAME
    max_concurrent = None

    async def invoke(self, session: Any, payload: Any) -> None:
        raise AssertionError("the placeholder class only schedules")

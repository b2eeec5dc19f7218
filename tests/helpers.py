"""Call classes and a recorder shared by the engine tests."""

from __future__ import annotations

from collections import Counter
from datetime import datetime
from typing import Any, cast

import attrs
import trio

from trio_futurecalls import Delivery, FutureCall, NewCall

#: Both delivery modes, for tests that must hold in each.
BOTH = [Delivery.AT_MOST_ONCE, Delivery.AT_LEAST_ONCE]


def row(name: str, payload: str, due: datetime, attempts: int = 0) -> NewCall:
    """A row as another program (or a hostile one) might store it."""
    return NewCall(name=name, payload=payload, due_at=due, scheduled_at=due, attempts=attempts)


@attrs.define
class Recorder:
    """Watches calls: concurrency per class and in total, start/finish times, sessions."""

    running: Counter[str] = attrs.field(factory=Counter)
    peak: Counter[str] = attrs.field(factory=Counter)
    total_running: int = 0
    total_peak: int = 0
    started: list[tuple[str, Any, float]] = attrs.field(factory=list)
    finished: list[tuple[str, Any, float]] = attrs.field(factory=list)
    sessions: list[Any] = attrs.field(factory=list)

    def tags(self, which: str = "started") -> list[Any]:
        rows = self.started if which == "started" else self.finished
        return [tag for _, tag, _ in rows]

    def start_time(self, tag: Any) -> float:
        return next(t for _, got, t in self.started if got == tag)

    def finish_time(self, tag: Any) -> float:
        return next(t for _, got, t in self.finished if got == tag)


def make_call(name: str, recorder: Recorder, *, max_concurrent: int | None = 1) -> type[FutureCall]:
    """A call class whose payload is ``{"tag": ..., "sleep": s, "fail": bool}``."""

    async def invoke(self: FutureCall, session: Any, payload: dict[str, Any]) -> None:
        for other in recorder.sessions:
            if other is session:
                raise AssertionError("a session was shared between calls")
        recorder.sessions.append(session)
        recorder.running[name] += 1
        recorder.total_running += 1
        recorder.peak[name] = max(recorder.peak[name], recorder.running[name])
        recorder.total_peak = max(recorder.total_peak, recorder.total_running)
        recorder.started.append((name, payload.get("tag"), trio.current_time()))
        try:
            await trio.sleep(payload.get("sleep", 0))
            if payload.get("fail"):
                raise RuntimeError(f"call {payload.get('tag')} failed on purpose")
            recorder.finished.append((name, payload.get("tag"), trio.current_time()))
        finally:
            recorder.running[name] -= 1
            recorder.total_running -= 1

    cls = type(
        f"Call_{name.replace('-', '_')}",
        (FutureCall,),
        {"name": name, "max_concurrent": max_concurrent, "invoke": invoke},
    )
    return cast(type[FutureCall], cls)

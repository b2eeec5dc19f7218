"""Review of dependencies through the engine (issue 12): the API's edge cases."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

import trio
from helpers import Recorder, make_call
from trio.testing import MockClock

from trio_futurecalls import CallRequest, MemoryStore, open_scheduler, schedule_call


async def test_an_empty_after_list_is_no_after(
    autojump_clock: MockClock, clock: Callable[[], datetime]
) -> None:
    """``after=()`` with a unique key is fine; ``after=[]`` or ``set()`` (an empty
    collection, as code that builds the list passes) was refused as "unique keys and
    dependencies cannot be used together"."""
    rec = Recorder()
    a = make_call("a", rec)
    async with open_scheduler(MemoryStore(), [a], clock=clock) as s:
        first = await s.schedule(a, {"tag": "x"}, unique_key="k1", after=(), delay=60)
        second = await s.schedule(a, {"tag": "x"}, unique_key="k2", after=[], delay=60)
        third = await s.schedule(a, {"tag": "x"}, unique_key="k3", after=set(), delay=60)
        (fourth,) = await s.schedule_many(
            [CallRequest(call_class=a, payload={"tag": "x"}, unique_key="k4", after=[], delay=60)]
        )
        assert await s.schedule(a, {"tag": "y"}, unique_key="k2", after=[], delay=60) == second
        assert [c.unique_key for c in await s.pending()] == ["k1", "k2", "k3", "k4"]
        assert len({first, second, third, fourth}) == 4


async def test_moving_unknown_names_moves_their_waiting_calls_too(
    autojump_clock: MockClock, clock: Callable[[], datetime]
) -> None:
    """``dead_letter_due`` moves a name's waiting calls along with its due ones; but
    ``move_unknown_to_dead_letters`` picks names by ``QueueLength.due``, which no longer
    counts waiting calls: a name whose calls all wait was left alone, the same calls
    beside one due call were moved."""
    rec = Recorder()
    a = make_call("a", rec)
    ghost = make_call("ghost", rec)
    store = MemoryStore()
    root = await schedule_call(store, a, {"tag": "a"}, delay=3600, clock=clock)
    waiting = await schedule_call(store, ghost, {"tag": "g"}, after=[root], clock=clock)
    async with open_scheduler(store, [a], clock=clock) as s:
        await trio.sleep(1)
        assert [c.id for c in await s.unknown_calls()] == [waiting]
        assert await s.move_unknown_to_dead_letters() == 1
        assert [d.call_id for d in await store.dead_letters()] == [waiting]

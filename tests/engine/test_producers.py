"""Producers: scheduling through a store alone, by class or by name, with no scheduler.

A producer process (a web app, a script) calls ``schedule_call`` / ``schedule_many`` /
``schedule_chain`` on a store; a worker elsewhere runs the calls. By name, the producer
need not import the classes: the payload is plain JSON and the worker's class decodes it.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any, ClassVar

import attrs
import pytest
import trio
from trio.testing import MockClock

from trio_futurecalls import (
    CallRequest,
    DuplicateCallError,
    FutureCall,
    InvalidArgumentError,
    InvalidPayloadError,
    MemoryStore,
    UnregisteredCallError,
    list_pending,
    open_scheduler,
    schedule_call,
    schedule_chain,
    schedule_many,
)


@attrs.frozen
class Email:
    to: str
    subject: str


class SendEmail(FutureCall):
    name = "send-email"
    payload_type = Email
    priority = 7
    max_concurrent = None
    sent: ClassVar[list[tuple[Email, int]]] = []

    async def invoke(self, session: Any, payload: Email) -> None:
        SendEmail.sent.append((payload, self.info.id))


class Note(FutureCall):
    name = "note"
    said: ClassVar[list[Any]] = []

    async def invoke(self, session: Any, payload: Any) -> None:
        Note.said.append(payload)


@pytest.fixture(autouse=True)
def _reset() -> None:
    SendEmail.sent = []
    Note.said = []


async def test_a_producer_schedules_by_name_and_a_worker_decodes_the_payload(
    autojump_clock: MockClock, clock: Callable[[], datetime]
) -> None:
    store = MemoryStore()
    # The producer: no class imported, a plain JSON payload.
    call_id = await schedule_call(
        store, "send-email", {"to": "a@example.com", "subject": "hi"}, delay=5, clock=clock
    )
    (pending,) = await list_pending(store)
    assert (pending.id, pending.name, pending.priority) == (call_id, "send-email", 0)
    assert pending.due_at == clock() + timedelta(seconds=5)
    # The worker: its class decodes the JSON into the attrs payload.
    async with open_scheduler(store, [SendEmail], clock=clock):
        await trio.sleep(6)
    assert SendEmail.sent == [(Email("a@example.com", "hi"), call_id)]


async def test_by_name_takes_every_keyword_of_schedule(
    autojump_clock: MockClock, clock: Callable[[], datetime]
) -> None:
    store = MemoryStore()
    at = clock() + timedelta(hours=1)
    first = await schedule_call(
        store, "note", "a", at=at, identifier="batch", unique_key="k", priority=3, clock=clock
    )
    assert await schedule_call(store, "note", "b", unique_key="k", clock=clock) == first
    with pytest.raises(DuplicateCallError):
        await schedule_call(store, "note", "c", unique_key="k", on_conflict="error", clock=clock)
    then = await schedule_call(store, "note", "after", after=[first], clock=clock)
    (two, one) = await list_pending(store)  # earliest due first
    assert (one.id, one.identifier, one.unique_key, one.priority, one.due_at) == (
        first,
        "batch",
        "k",
        3,
        at,
    )
    assert (two.id, two.waiting_for) == (then, (first,))


async def test_by_name_refuses_what_it_cannot_store(clock: Callable[[], datetime]) -> None:
    store = MemoryStore()
    with pytest.raises(InvalidArgumentError, match="must start with a letter"):
        await schedule_call(store, "no spaces", None, clock=clock)
    with pytest.raises(InvalidArgumentError, match="must not be empty"):
        await schedule_call(store, "", None, clock=clock)
    # By name there is no class to convert an attrs payload: JSON only.
    with pytest.raises(InvalidPayloadError, match="not a plain JSON value"):
        await schedule_call(store, "send-email", Email("a", "b"), clock=clock)
    with pytest.raises(InvalidArgumentError, match="aware"):
        await schedule_call(store, "note", None, at=datetime(2030, 1, 1), clock=clock)
    with pytest.raises(InvalidArgumentError, match="priority"):
        await schedule_call(store, "note", None, priority=10**6, clock=clock)
    with pytest.raises(UnregisteredCallError):
        await schedule_call(store, 42, None, clock=clock)  # type: ignore[arg-type]
    assert await list_pending(store) == []


async def test_schedule_many_through_a_store_mixes_classes_and_names(
    autojump_clock: MockClock, clock: Callable[[], datetime]
) -> None:
    store = MemoryStore()
    ids = await schedule_many(
        store,
        [
            ("note", "by name", 0),
            (Note, "by class", timedelta(seconds=1)),
            CallRequest(call_class="send-email", payload={"to": "x", "subject": "y"}, delay=2),
            CallRequest(call_class=SendEmail, payload=Email("p", "q"), delay=3),
            ("note", "later", clock() + timedelta(seconds=4), "ident"),
        ],
        clock=clock,
    )
    assert len(ids) == 5
    rows = {c.id: c for c in await list_pending(store)}
    # A class's priority applies when scheduled by class; by name it is 0.
    assert [rows[i].priority for i in ids] == [0, 0, 0, 7, 0]
    assert rows[ids[4]].identifier == "ident"
    async with open_scheduler(store, [Note, SendEmail], clock=clock):
        await trio.sleep(5)
    assert Note.said == ["by name", "by class", "later"]
    assert [e for e, _ in SendEmail.sent] == [Email("x", "y"), Email("p", "q")]
    assert await schedule_many(store, [], clock=clock) == []


async def test_schedule_many_through_a_store_validates_the_whole_batch_first(
    clock: Callable[[], datetime],
) -> None:
    store = MemoryStore()
    with pytest.raises(InvalidArgumentError, match="must start with a letter"):
        await schedule_many(store, [("note", 1, 0), ("bad name", 2, 0)], clock=clock)
    with pytest.raises(InvalidArgumentError, match="each request"):
        await schedule_many(store, [("note",)], clock=clock)  # type: ignore[list-item]
    assert await list_pending(store) == []


async def test_schedule_chain_by_name(
    autojump_clock: MockClock, clock: Callable[[], datetime]
) -> None:
    store = MemoryStore()
    ids = await schedule_chain(store, [("note", 1), (Note, 2), ("note", 3)], clock=clock)
    async with open_scheduler(store, [Note], clock=clock):
        await trio.sleep(1)
    assert Note.said == [1, 2, 3]
    assert len(ids) == 3


async def test_the_scheduler_schedules_registered_names_with_their_class(
    autojump_clock: MockClock, clock: Callable[[], datetime]
) -> None:
    store = MemoryStore()
    async with open_scheduler(store, [SendEmail, Note], clock=clock) as scheduler:
        # The registered class applies: its payload type and its priority.
        call_id = await scheduler.schedule("send-email", Email("a", "b"), delay=10)
        (pending,) = await scheduler.pending()
        assert (pending.id, pending.priority) == (call_id, 7)
        with pytest.raises(InvalidPayloadError, match="instance of Email"):
            await scheduler.schedule("send-email", {"to": "a", "subject": "b"})
        with pytest.raises(UnregisteredCallError, match="no class named 'other'"):
            await scheduler.schedule("other", None)
        (note,) = await scheduler.schedule_many([("note", "x", 0)])
        await trio.sleep(11)
    assert Note.said == ["x"]
    assert SendEmail.sent == [(Email("a", "b"), call_id)]
    assert note != call_id

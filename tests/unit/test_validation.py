"""Every kind of bad input gets a clear library exception at the call site."""

from __future__ import annotations

import math
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import attrs
import pytest

from trio_futurecalls import (
    LATEST_TIME,
    MAX_ATTEMPTS,
    MAX_IDENTIFIER_LENGTH,
    MAX_NAME_LENGTH,
    MAX_PAYLOAD_BYTES,
    FutureCall,
    FutureCallsError,
    InvalidArgumentError,
    InvalidPayloadError,
    MemoryStore,
    NewCall,
    QueueLength,
    Scheduler,
    UnregisteredCallError,
    list_pending,
    open_scheduler,
    queue_lengths,
    schedule_call,
)


class Ok(FutureCall):
    name = "ok"

    async def invoke(self, session: Any, payload: Any) -> None:
        pass


class Other(FutureCall):
    name = "other"

    async def invoke(self, session: Any, payload: Any) -> None:
        pass


@attrs.frozen
class Typed:
    n: int


class TypedCall(FutureCall):
    name = "typed"
    payload_type = Typed

    async def invoke(self, session: Any, payload: Typed) -> None:
        pass


@pytest.fixture
async def scheduler() -> AsyncIterator[Scheduler]:
    async with open_scheduler(MemoryStore(), [Ok, TypedCall], execute=False) as s:
        yield s


async def test_naive_datetime_is_rejected(scheduler: Scheduler) -> None:
    with pytest.raises(InvalidArgumentError, match="timezone-aware"):
        await scheduler.schedule(Ok, None, at=datetime(2030, 1, 1))


async def test_aware_datetimes_in_other_zones_are_normalised(scheduler: Scheduler) -> None:
    from datetime import timezone

    zone = timezone(timedelta(hours=5))
    await scheduler.schedule(Ok, None, at=datetime(2030, 1, 1, 5, tzinfo=zone))
    (call,) = await scheduler.pending()
    assert call.due_at == datetime(2030, 1, 1, tzinfo=UTC)


async def test_at_and_delay_together_are_rejected(scheduler: Scheduler) -> None:
    with pytest.raises(InvalidArgumentError, match="not both"):
        await scheduler.schedule(Ok, None, at=datetime.now(UTC), delay=1)


@pytest.mark.parametrize(
    ("delay", "match"),
    [
        (math.nan, "finite"),
        (math.inf, "finite"),
        (-1, "negative"),
        (timedelta(seconds=-1), "negative"),
        (timedelta(days=365 * 200), "longer"),
        (1e12, "longer"),
        ("10", "timedelta or a number"),
        (True, "bool"),
    ],
)
async def test_bad_delays_are_rejected(scheduler: Scheduler, delay: Any, match: str) -> None:
    with pytest.raises(InvalidArgumentError, match=match):
        await scheduler.schedule(Ok, None, delay=delay)


async def test_unregistered_and_non_futurecall_classes_are_rejected(
    scheduler: Scheduler,
) -> None:
    with pytest.raises(UnregisteredCallError, match="not registered"):
        await scheduler.schedule(Other, None)
    with pytest.raises(UnregisteredCallError, match="not a FutureCall"):
        await scheduler.schedule(dict, None)  # type: ignore[arg-type]
    with pytest.raises(UnregisteredCallError, match="not a FutureCall"):
        await scheduler.schedule(FutureCall, None)


@pytest.mark.parametrize(
    "payload",
    [
        {1: "non-str key"},
        (1, 2),
        {"set": {1, 2}},
        math.nan,
        [math.inf],
        datetime.now(UTC),
        object(),
        b"bytes",
    ],
)
async def test_non_json_payloads_are_rejected(scheduler: Scheduler, payload: Any) -> None:
    with pytest.raises(InvalidPayloadError):
        await scheduler.schedule(Ok, payload)


async def test_payload_over_the_size_limit_is_rejected(scheduler: Scheduler) -> None:
    with pytest.raises(InvalidPayloadError, match="limit"):
        await scheduler.schedule(Ok, "x" * MAX_PAYLOAD_BYTES)
    await scheduler.schedule(Ok, "x" * (MAX_PAYLOAD_BYTES - 100))


async def test_payload_must_match_the_declared_type(scheduler: Scheduler) -> None:
    with pytest.raises(InvalidPayloadError, match="instance of Typed"):
        await scheduler.schedule(TypedCall, {"n": 1})
    with pytest.raises(InvalidPayloadError, match="instance of Typed"):
        await scheduler.schedule(TypedCall, None)
    await scheduler.schedule(TypedCall, Typed(1))


@pytest.mark.parametrize(
    ("identifier", "error"),
    [
        ("i" * (MAX_IDENTIFIER_LENGTH + 1), "limit"),
        ("", "empty"),
        (42, "must be a str"),
        ("nul\x00", "NUL"),
    ],
)
async def test_bad_identifiers_are_rejected(
    scheduler: Scheduler, identifier: Any, error: str
) -> None:
    with pytest.raises(InvalidArgumentError, match=error):
        await scheduler.schedule(Ok, None, identifier=identifier)
    with pytest.raises(InvalidArgumentError):
        await scheduler.cancel_identifier(identifier)


async def test_longest_identifier_is_accepted(scheduler: Scheduler) -> None:
    await scheduler.schedule(Ok, None, identifier="i" * MAX_IDENTIFIER_LENGTH)


def test_bad_names_fail_at_class_definition() -> None:
    for bad in ["", "x" * (MAX_NAME_LENGTH + 1), "has space", "1starts-with-digit", "semi;colon"]:
        with pytest.raises(InvalidArgumentError):
            type("Bad", (FutureCall,), {"name": bad})


def test_bad_class_limits_fail_at_class_definition() -> None:
    for bad in [0, -1, 1.5, True]:
        with pytest.raises(InvalidArgumentError, match="max_concurrent"):
            type("Bad", (FutureCall,), {"name": "bad", "max_concurrent": bad})


def test_bad_payload_type_fails_at_class_definition() -> None:
    with pytest.raises(InvalidPayloadError, match="attrs class"):
        type("Bad", (FutureCall,), {"name": "bad", "payload_type": dict})


def test_an_invoke_that_is_not_async_fails_at_class_definition() -> None:
    def invoke(self: object, session: object, payload: object) -> None:
        pass

    with pytest.raises(InvalidArgumentError, match=r"Bad\.invoke must be an `async def`"):
        type("Bad", (FutureCall,), {"name": "bad", "invoke": invoke})
    with pytest.raises(InvalidArgumentError, match="async def"):
        type("Bad", (FutureCall,), {"name": "bad", "invoke": staticmethod(invoke)})

    async def good(self: object, session: object, payload: object) -> None:
        pass

    # Subclasses of a good class, and classes that set no invoke of their own (a
    # THREAD/PROCESS class implements `run` instead), are left alone.
    base = type("Good", (FutureCall,), {"name": "good", "invoke": good})
    type("Sub", (base,), {"name": "sub"})
    type("NoInvoke", (FutureCall,), {"name": "no-invoke"})


async def test_bad_scheduler_arguments() -> None:
    store = MemoryStore()
    for limit in (0, -5, 2.5, "10"):
        with pytest.raises(InvalidArgumentError, match="max_concurrent"):
            async with open_scheduler(store, [Ok], max_concurrent=limit):  # type: ignore[arg-type]
                pass
    with pytest.raises(InvalidArgumentError, match="grace_period"):
        async with open_scheduler(store, [Ok], grace_period=-1):
            pass
    with pytest.raises(InvalidArgumentError, match="Store protocol"):
        async with open_scheduler(object(), [Ok]):  # type: ignore[arg-type]
            pass
    clash = type("Clash", (Ok,), {"name": "ok"})
    with pytest.raises(InvalidArgumentError, match="share the name"):
        async with open_scheduler(store, [Ok, clash]):
            pass
    with pytest.raises(UnregisteredCallError, match="invoke"):
        async with open_scheduler(store, [type("NoInvoke", (FutureCall,), {"name": "x"})]):
            pass


async def test_bad_environment_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    for raw in ("0", "-3", "lots"):
        monkeypatch.setenv("TRIO_FUTURECALLS_MAX_CONCURRENT", raw)
        with pytest.raises(InvalidArgumentError, match="TRIO_FUTURECALLS_MAX_CONCURRENT"):
            async with open_scheduler(MemoryStore(), [Ok]):
                pass


async def test_schedule_through_the_store_alone_validates_too() -> None:
    store = MemoryStore()
    with pytest.raises(InvalidArgumentError, match="timezone-aware"):
        await schedule_call(store, Ok, None, at=datetime(2030, 1, 1))
    with pytest.raises(UnregisteredCallError):
        await schedule_call(store, int, None)  # type: ignore[arg-type]
    call_id = await schedule_call(store, Ok, {"a": [1, 2]}, delay=5, identifier="x")
    assert call_id == 1


async def test_pending_filters_are_validated(scheduler: Scheduler) -> None:
    with pytest.raises(InvalidArgumentError, match="timezone-aware"):
        await scheduler.pending(due_before=datetime(2030, 1, 1))
    with pytest.raises(InvalidArgumentError, match="limit"):
        await scheduler.pending(limit=-1)
    with pytest.raises(InvalidArgumentError, match="call_id"):
        await scheduler.cancel("1")  # type: ignore[arg-type]


def test_every_library_error_is_a_futurecalls_error() -> None:
    assert issubclass(InvalidPayloadError, FutureCallsError)
    assert issubclass(UnregisteredCallError, InvalidArgumentError)
    assert issubclass(InvalidArgumentError, ValueError)


async def test_schedule_many_validates_every_request(scheduler: Scheduler) -> None:
    with pytest.raises(InvalidArgumentError, match="timezone-aware"):
        await scheduler.schedule_many([(Ok, None, 1), (Ok, None, datetime(2030, 1, 1))])
    with pytest.raises(UnregisteredCallError):
        await scheduler.schedule_many([(Ok, None, 1), (Other, None, 1)])
    with pytest.raises(InvalidArgumentError, match="each request"):
        await scheduler.schedule_many([(Ok, None)])  # type: ignore[list-item]
    with pytest.raises(InvalidArgumentError, match="identifier"):
        await scheduler.schedule_many([(Ok, None, 1, "")])
    with pytest.raises(InvalidPayloadError):
        await scheduler.schedule_many([(TypedCall, {"n": 1}, 1)])
    # Nothing was stored by the failed batches.
    assert await scheduler.pending() == []
    ids = await scheduler.schedule_many([(Ok, None, 1, "x"), (TypedCall, Typed(2), 0)])
    assert len(ids) == 2
    assert [c.identifier for c in await scheduler.pending(identifier="x")] == ["x"]


@attrs.frozen
class Derived:
    n: int
    doubled: int = attrs.field(init=False)
    pair: tuple[int, str] = (0, "")

    @doubled.default
    def _double(self) -> int:
        return self.n * 2


class DerivedCall(FutureCall):
    name = "derived"
    payload_type = Derived

    async def invoke(self, session: Any, payload: Derived) -> None:
        pass


async def test_attrs_payload_is_checked_to_decode_back_at_the_call_site() -> None:
    async with open_scheduler(MemoryStore(), [TypedCall, DerivedCall], execute=False) as s:
        # A wrongly typed field would fail every attempt later: refuse it now.
        with pytest.raises(InvalidPayloadError, match="would not decode"):
            await s.schedule(TypedCall, Typed("abc"))  # type: ignore[arg-type]
        # init=False fields are derived, not stored; tuples round-trip.
        await s.schedule(DerivedCall, Derived(3, (1, "x")))
        (call,) = await s.pending(DerivedCall)
        assert call.payload == '{"n":3,"pair":[1,"x"]}'
    from trio_futurecalls._payload import decode_payload

    assert decode_payload(Derived, call.payload) == Derived(3, (1, "x"))


async def test_naive_clock_is_rejected() -> None:
    with pytest.raises(InvalidArgumentError, match="clock"):
        async with open_scheduler(MemoryStore(), [Ok], clock=datetime.now):
            pass
    with pytest.raises(InvalidArgumentError, match="clock"):
        await schedule_call(MemoryStore(), Ok, None, clock=datetime.now)


# -- every public function and method checks its arguments, types included ----------

NAIVE = datetime(2030, 1, 1)


async def test_times_that_overflow_or_leave_the_storable_range_are_rejected(
    scheduler: Scheduler,
) -> None:
    from datetime import timezone

    minus_14 = timezone(-timedelta(hours=14))
    for at in (
        datetime(9999, 12, 31, 23, 59, 59, tzinfo=minus_14),  # overflows on the way to UTC
        datetime.max.replace(tzinfo=UTC),
        datetime.min.replace(tzinfo=UTC),
        LATEST_TIME + timedelta(microseconds=1),
    ):
        with pytest.raises(InvalidArgumentError, match=r"between|range"):
            await scheduler.schedule(Ok, None, at=at)
    await scheduler.schedule(Ok, None, at=LATEST_TIME)
    late = LATEST_TIME - timedelta(hours=1)
    with pytest.raises(InvalidArgumentError, match=r"between|range"):
        await schedule_call(MemoryStore(), Ok, None, delay=7200, clock=lambda: late)


@pytest.mark.parametrize(
    ("payload", "identifier"),
    [("\ud800", None), ({"k\udcff": 1}, None), (None, "user\udcff")],
)
async def test_text_that_is_not_valid_unicode_is_rejected(
    scheduler: Scheduler, payload: Any, identifier: Any
) -> None:
    with pytest.raises(InvalidArgumentError, match="surrogate"):
        await scheduler.schedule(Ok, payload, identifier=identifier)


def test_a_name_with_a_trailing_newline_is_rejected() -> None:
    with pytest.raises(InvalidArgumentError, match="must start with"):
        type("Bad", (FutureCall,), {"name": "ok\n"})


def test_max_attempts_has_an_upper_bound() -> None:
    with pytest.raises(InvalidArgumentError, match="max_attempts"):
        type("Bad", (FutureCall,), {"name": "bad", "max_attempts": MAX_ATTEMPTS + 1})


@pytest.mark.parametrize("call_id", [True, "1", 1.0, 0, -1, 2**63])
async def test_scheduler_cancel_checks_the_id(scheduler: Scheduler, call_id: Any) -> None:
    with pytest.raises(InvalidArgumentError, match="call_id"):
        await scheduler.cancel(call_id)


async def test_admin_functions_check_their_arguments(scheduler: Scheduler) -> None:
    store = scheduler.store
    with pytest.raises(InvalidArgumentError, match="now"):
        await queue_lengths(store, now=NAIVE)
    with pytest.raises(InvalidArgumentError, match="names"):
        await queue_lengths(store, "ok")
    with pytest.raises(InvalidArgumentError, match="names"):
        await queue_lengths(store, [5])  # type: ignore[list-item]
    for limit in (True, 2**63, 1.5, "3"):
        with pytest.raises(InvalidArgumentError, match="limit"):
            await list_pending(store, limit=limit)  # type: ignore[arg-type]
    with pytest.raises(InvalidArgumentError, match="names"):
        await scheduler.move_unknown_to_dead_letters("ghost")
    with pytest.raises(InvalidArgumentError, match="names"):
        await scheduler.move_unknown_to_dead_letters([b"ghost"])  # type: ignore[list-item]
    with pytest.raises(InvalidArgumentError, match="grace_period"):
        await scheduler.shutdown(grace_period="5")  # type: ignore[arg-type]
    assert await queue_lengths(store, ["ok"]) == {"ok": QueueLength(pending=0, due=0)}


async def test_a_dead_letter_keeps_a_claimed_call_whatever_its_count() -> None:
    # A claim counts an attempt: a row at MAX_ATTEMPTS comes out one above it, and
    # keeping it as a dead letter must not fail (the call would be lost).
    store = MemoryStore()
    now = datetime(2030, 1, 1, tzinfo=UTC)
    new = NewCall(name="ok", payload="null", due_at=now, scheduled_at=now, attempts=MAX_ATTEMPTS)
    await store.schedule([new])
    (call,) = (await store.claim(now, {"ok": 1}, 1)).calls
    assert call.attempts == MAX_ATTEMPTS + 1
    assert await store.dead_letter(call, "gave up", now) is not None
    (dead,) = await store.dead_letters()
    assert dead.attempts == MAX_ATTEMPTS


def test_only_the_librarys_own_new_calls_skip_the_stores_checks() -> None:
    from trio_futurecalls._model import CheckedNewCall
    from trio_futurecalls._validate import check_new_call

    now = datetime(2030, 1, 1, tzinfo=UTC)
    fields: dict[str, Any] = {
        "name": "bad name!",
        "payload": "null",
        "due_at": now,
        "scheduled_at": now,
    }
    # A hand-built NewCall is checked, however it was made...
    with pytest.raises(InvalidArgumentError, match="call name"):
        check_new_call(NewCall(**fields))
    # ...one the library built from checked arguments is not checked twice.
    trusted = CheckedNewCall(**{**fields, "name": "ok"})
    assert check_new_call(trusted) is trusted


def test_a_batch_resolves_each_distinct_due_once_and_still_checks_every_request() -> None:
    """schedule_many resolves one due time per distinct ``when`` (by type and value):
    equal delays share it, 1 and 1.0 agree, and a bad one is refused wherever it is."""
    from trio_futurecalls._admin import check_target, new_calls

    now = datetime(2030, 1, 1, tzinfo=UTC)
    at = now + timedelta(days=1)
    batch = new_calls(
        [("job", None, 60.0), ("job", None, 60), ("job", 1, timedelta(seconds=60)), ("job", 2, at)],
        now,
        check_target,
    )
    assert [c.due_at for c in batch] == [now + timedelta(seconds=60)] * 3 + [at]
    assert [c.payload for c in batch] == ["null", "null", "1", "2"]
    bads: list[Any] = [True, -1.0, math.nan, "60", [60], datetime(2030, 1, 1)]
    for bad in bads:
        requests: list[Any] = [("job", None, 60.0), ("job", None, bad)]
        with pytest.raises(InvalidArgumentError):
            new_calls(requests, now, check_target)

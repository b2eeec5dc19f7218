"""schedule_many's plain batch kept as columns (NewCallColumns): the same calls as the
per-request path builds, in the same order, whatever the mix of requests."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import attrs
import pytest

from trio_futurecalls import CallRequest, FutureCall
from trio_futurecalls._admin import check_target, new_call, new_calls
from trio_futurecalls._model import CheckedNewCall, NewCall
from trio_futurecalls._new_call_columns import NewCallColumns
from trio_futurecalls._store_args import StoreArgs

NOW = datetime(2030, 1, 1, tzinfo=UTC)


@attrs.frozen
class Point:
    x: int


class Typed(FutureCall):
    name = "typed"
    payload_type = Point
    priority = 7

    async def invoke(self, session: Any, payload: Point) -> None:
        pass


def one_by_one(requests: list[Any]) -> list[NewCall]:
    """What each request gives on its own (new_call, the path of ``schedule``)."""
    out = []
    for r in requests:
        if isinstance(r, CallRequest):
            out.append(
                new_call(
                    check_target(r.call_class),
                    r.payload,
                    NOW,
                    r.at,
                    r.delay,
                    r.identifier,
                    r.unique_key,
                    r.on_conflict,
                    r.priority,
                    r.after,
                )
            )
            continue
        cls, payload, when, *rest = r
        at, delay = (when, None) if isinstance(when, datetime) else (None, when)
        identifier = rest[0] if rest else None
        out.append(new_call(check_target(cls), payload, NOW, at, delay, identifier, *rest[1:]))
    return out


PLAIN: list[Any] = [
    ("job", {"a": [1, 2]}, 0),
    (Typed, Point(3), timedelta(minutes=5), "id-1"),
    ("job", None, NOW + timedelta(days=2), None),
    CallRequest(call_class=Typed, payload=Point(4), delay=1.5, priority=-3),
    CallRequest(call_class="other", payload="x", at=NOW + timedelta(hours=1), identifier="k"),
    (Typed, Point(5), 60.0, None, None, "ignore"),
]


def test_a_plain_batch_is_kept_as_columns_and_reads_as_the_same_calls() -> None:
    batch = new_calls(PLAIN, NOW, check_target)
    assert type(batch) is NewCallColumns
    expected = one_by_one(PLAIN)
    assert len(batch) == len(expected) == 6
    assert list(batch) == expected
    assert [batch[k] for k in range(6)] == expected
    assert list(batch[1:3]) == expected[1:3]
    assert batch[-1] == expected[-1]
    assert all(type(c) is CheckedNewCall for c in batch)
    assert batch == expected
    assert batch.earliest() == NOW
    assert batch.priorities == (0, 7, 0, -3, 0, 7)
    assert batch.identifiers == (None, "id-1", None, None, "k", None)
    assert batch.scheduled_at == NOW
    # The store-level check takes it as it is: every row was checked when built.
    assert StoreArgs.schedule(batch) is batch


@pytest.mark.parametrize(
    "odd",
    [
        ("job", None, 0, None, "key-1"),
        ("job", None, 0, None, None, "replace"),
        CallRequest(call_class="job", unique_key="key-2", on_conflict="error"),
        CallRequest(call_class="job", after=[41, 42]),
        CallRequest(call_class="job", on_conflict="replace"),
    ],
)
@pytest.mark.parametrize("position", [0, 3, 6])
def test_a_batch_with_one_request_that_is_not_plain_is_a_list_in_order(
    odd: Any, position: int
) -> None:
    requests = [*PLAIN[:position], odd, *PLAIN[position:]]
    batch = new_calls(requests, NOW, check_target)
    assert type(batch) is list
    assert batch == one_by_one(requests)


def test_the_columns_cannot_change() -> None:
    batch = new_calls(PLAIN[:2], NOW, check_target)
    assert isinstance(batch, NewCallColumns)
    with pytest.raises(AttributeError, match="immutable"):
        batch.names = ("changed", "too")
    assert isinstance(batch.names, tuple)
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        batch[0].name = "changed"  # type: ignore[misc]
    with pytest.raises(TypeError):
        hash(batch)
    assert repr(batch).startswith("NewCallColumns([CheckedNewCall(name='job'")


def test_columns_of_different_lengths_are_refused() -> None:
    with pytest.raises(ValueError, match="equally long"):
        NewCallColumns(
            names=["a", "b"],
            payloads=["null"],
            due_ats=[NOW, NOW],
            identifiers=[None, None],
            priorities=[0, 0],
            scheduled_at=NOW,
        )


def test_a_bad_request_after_plain_ones_is_still_refused() -> None:
    from trio_futurecalls import InvalidArgumentError

    with pytest.raises(InvalidArgumentError, match="identifier"):
        new_calls([*PLAIN, ("job", None, 0, "")], NOW, check_target)
    with pytest.raises(InvalidArgumentError):
        new_calls([*PLAIN, (Typed, {"x": "not a point"}, 0)], NOW, check_target)


def test_a_tuple_after_a_call_request_of_the_same_class() -> None:
    """Before the columns, the tuple form looked up defaults only tuples recorded:
    a CallRequest then a tuple of the same class raised KeyError."""
    requests: list[Any] = [CallRequest(call_class=Typed, payload=Point(1)), (Typed, Point(2), 0)]
    batch = new_calls(requests, NOW, check_target)
    assert [(c.name, c.payload, c.priority) for c in batch] == [
        ("typed", '{"x":1}', 7),
        ("typed", '{"x":2}', 7),
    ]

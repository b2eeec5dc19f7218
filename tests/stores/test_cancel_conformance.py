"""Cancel requests on every store: leased rows go with the request (their dependents
become dead letters), requests are listed until they expire, acks are kept per worker.

Rows another program wrote are put straight into each store's table, so that the
store under test has no say in what they hold. The ``store`` fixture
(tests/conftest.py) runs each test once per adapter.
"""

from __future__ import annotations

import logging
import sqlite3
from contextlib import closing
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from trio_futurecalls import InvalidArgumentError, Lease, NewCall, PendingQuery, Store
from trio_futurecalls._cancel_model import CancelRequest
from trio_futurecalls.stores._listeners import CANCEL_REQUESTED
from trio_futurecalls.stores.memory import MemoryStore
from trio_futurecalls.stores.sqlite import SQLiteStore
from trio_futurecalls.stores.sqlite._connection import to_micros

T0 = datetime(2030, 1, 1, tzinfo=UTC)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def new(name: str = "a", due: float = 0.0, **more: Any) -> NewCall:
    return NewCall(name=name, payload="null", due_at=at(due), scheduled_at=T0, **more)


def lease(*names: str, owner: str = "w1", until: float = 600) -> Lease:
    return Lease(owner=owner, expires_at=at(until), names=frozenset(names))


async def test_a_leased_row_goes_with_the_request_and_its_dependents_end(store: Store) -> None:
    (first,) = await store.schedule([new("a", identifier="job")])
    (second,) = await store.schedule([new("b", after=(first,))])
    claim = await store.claim(at(10), {"a": 5}, 5, lease("a"))
    assert [c.id for c in claim.calls] == [first]
    woken: list[datetime] = []
    store.add_listener(woken.append)
    request, leased = await store.request_cancel(first, None, at(11), at(71))
    assert leased == 1
    assert request.call_id == first
    assert request.identifier is None
    assert request.requested_at == at(11)
    assert request.expires_at == at(71)
    assert CANCEL_REQUESTED in woken
    # Gone for good: not pending, not claimable after its lease, not completable.
    assert await store.pending(PendingQuery(now=at(10_000))) == []
    assert (await store.claim(at(10_000), {"a": 5, "b": 5}, 5)).calls == []
    assert await store.complete("w1", first) is False
    (dead,) = await store.dead_letters()
    assert dead.call_id == second
    assert "cancelled" in dead.error


async def test_an_at_most_once_call_leaves_only_the_request(store: Store) -> None:
    (call_id,) = await store.schedule([new("a")])
    (other,) = await store.schedule([new("a", due=1000)])
    claim = await store.claim(at(10), {"a": 5}, 5)
    assert [c.id for c in claim.calls] == [call_id]
    request, leased = await store.request_cancel(call_id, None, at(11), at(71))
    assert leased == 0
    assert await store.cancel_requests(at(12)) == [request]
    # A pending call is not touched by a request (that is Store.cancel).
    assert [c.id for c in await store.pending(PendingQuery())] == [other]


async def test_an_identifier_request_takes_every_leased_row_with_it(store: Store) -> None:
    ids = await store.schedule([new("a", identifier="job"), new("a", identifier="job")])
    await store.schedule([new("a", identifier="other")])
    (pending,) = await store.schedule([new("a", due=1000, identifier="job")])
    claim = await store.claim(at(10), {"a": 3}, 3, lease("a"))
    assert len(claim.calls) == 3
    request, leased = await store.request_cancel(None, "job", at(11), at(71))
    assert leased == 2
    assert request.identifier == "job"
    assert request.call_id is None
    rest = await store.pending(PendingQuery(now=at(10_000)))
    assert sorted(c.id for c in rest) != sorted(ids)
    assert pending in [c.id for c in rest]
    assert not set(ids) & {c.id for c in rest}


async def test_requests_expire_and_take_their_acks_along(store: Store) -> None:
    r1, _ = await store.request_cancel(5, None, at(0), at(10))
    r2, _ = await store.request_cancel(None, "x", at(1), at(100))
    assert r2.id > r1.id
    assert await store.cancel_requests(at(5)) == [r1, r2]
    await store.ack_cancel(r1.id, "w1", 0)
    await store.ack_cancel(r1.id, "w2", 1)
    await store.ack_cancel(r1.id, "w1", 2)  # a second ack replaces the first
    assert await store.cancel_acks(r1.id) == {"w1": 2, "w2": 1}
    assert await store.cancel_acks(r2.id) == {}
    assert await store.cancel_requests(at(10)) == [r2]
    assert await store.cancel_acks(r1.id) == {}
    await store.ack_cancel(r1.id, "w1", 1)  # the request is gone: dropped
    assert await store.cancel_acks(r1.id) == {}


async def test_bad_arguments_are_refused(store: Store) -> None:
    bad_requests: list[tuple[Any, ...]] = [
        (None, None, at(0), at(1)),
        (1, "x", at(0), at(1)),
        (0, None, at(0), at(1)),
        (True, None, at(0), at(1)),
        (None, "", at(0), at(1)),
        (None, "x" * 256, at(0), at(1)),
        (1, None, datetime(2030, 1, 1), at(1)),
        (1, None, at(1), at(1)),
    ]
    for args in bad_requests:
        with pytest.raises(InvalidArgumentError):
            await store.request_cancel(*args)
    with pytest.raises(InvalidArgumentError):
        await store.cancel_requests(datetime(2030, 1, 1))
    for args in [(0, "w", 0), (1, "", 0), (1, "w", -1), (1, "w", True), (1, "w", 2**31)]:
        with pytest.raises(InvalidArgumentError):
            await store.ack_cancel(*args)
    with pytest.raises(InvalidArgumentError):
        await store.cancel_acks(0)


async def _hostile_requests(store: Store) -> None:
    """Rows no valid request is: both targets or none, odd types, bad times."""
    if isinstance(store, MemoryStore):
        cancels = store._cancels
        for key, request in [
            (
                901,
                CancelRequest(
                    id=901, call_id=None, identifier=None, requested_at=at(0), expires_at=at(100)
                ),
            ),
            (
                902,
                CancelRequest(
                    id=902, call_id=1, identifier="x", requested_at=at(0), expires_at=at(100)
                ),
            ),
            (
                903,
                CancelRequest(
                    id=903, call_id=-4, identifier=None, requested_at=at(0), expires_at=at(100)
                ),
            ),
            (
                904,
                CancelRequest(
                    id=905, call_id=1, identifier=None, requested_at=at(0), expires_at=at(100)
                ),
            ),
            (
                906,
                CancelRequest(
                    id=906,
                    call_id=1,
                    identifier=None,
                    requested_at=at(0),
                    expires_at="soon",  # type: ignore[arg-type]
                ),
            ),
        ]:
            cancels.requests[key] = request
        return
    if isinstance(store, SQLiteStore):
        t, e = to_micros(at(0)), to_micros(at(100))
        rows: list[tuple[Any, ...]] = [
            (901, None, None, t, e),
            (902, 1, "x", t, e),
            (903, "one", None, t, e),
            (904, None, b"\xff", t, e),
            (905, 1, None, 1.5, e),
            (906, 1, None, t, "tomorrow"),
            (907, 1, None, t, 2**62),
            (908, None, "a\x00b", t, e),
        ]
        with closing(sqlite3.connect(store.path)) as conn:
            conn.execute("PRAGMA ignore_check_constraints = ON")
            with conn:
                conn.executemany(
                    "INSERT INTO futurecalls_cancel_requests "
                    "(id, call_id, identifier, requested_at, expires_at) VALUES (?, ?, ?, ?, ?)",
                    rows,
                )
                conn.execute(
                    "INSERT INTO futurecalls_cancel_acks (request_id, worker_id, found) "
                    "VALUES (906, 'w', 'many')"
                )
        return
    from pg_support import admin_fetch

    from trio_futurecalls.stores.postgres import PostgresStore

    assert isinstance(store, PostgresStore)
    # The CHECKs keep every invalid row out: an expired row with an ack, put there by
    # hand, must go (with its ack) when the requests are read.
    schema = store.schema
    await admin_fetch(
        f'INSERT INTO "{schema}".cancel_requests '
        "(id, call_id, identifier, requested_at, expires_at) VALUES (901, 3, NULL, $1, $2)",
        at(0),
        at(0.5),
    )
    await admin_fetch(
        f"INSERT INTO \"{schema}\".cancel_acks (request_id, worker_id, found) VALUES (901, 'w', 2)"
    )


async def test_rows_that_are_no_valid_request_are_ignored_with_a_warning(
    store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    good, _ = await store.request_cancel(7, None, at(0), at(100))
    await _hostile_requests(store)
    with caplog.at_level(logging.WARNING, logger="trio_futurecalls.store.cancels"):
        assert await store.cancel_requests(at(1)) == [good]
    assert all(len(r.getMessage()) < 1000 for r in caplog.records)
    # Still readable afterwards; acks still work.
    assert await store.cancel_requests(at(2)) == [good]
    await store.ack_cancel(good.id, "w1", 1)
    assert await store.cancel_acks(good.id) == {"w1": 1}

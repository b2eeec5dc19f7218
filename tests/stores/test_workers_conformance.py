"""The workers registry on every store: register, heartbeat, expiry, deregister.

Rows another program wrote are put straight into each store's table (SQL on a
connection of the test's own; the memory store's dict), so that the store under test
has no say in what they hold.
"""

from __future__ import annotations

import logging
import sqlite3
from contextlib import closing
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from trio_futurecalls import InvalidArgumentError, Store, WorkerInfo
from trio_futurecalls.stores._cluster_tokens import Token
from trio_futurecalls.stores.memory import MemoryStore
from trio_futurecalls.stores.sqlite import SQLiteStore
from trio_futurecalls.stores.sqlite._connection import to_micros

T0 = datetime(2030, 1, 1, tzinfo=UTC)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def worker(
    worker_id: str = "w1",
    *,
    started: float = 0,
    expires: float = 30,
    running: int = 0,
    limits: dict[str, Any] | None = None,
) -> WorkerInfo:
    return WorkerInfo(
        id=worker_id,
        host="host-a",
        pid=1234,
        started_at=at(started),
        heartbeat_at=at(started),
        expires_at=at(expires),
        running=running,
        limits={"max_concurrent": 10} if limits is None else limits,
    )


# -- raw access to each store's tables ------------------------------------------------


def _schema(store: Store) -> str:
    from trio_futurecalls.stores.postgres import PostgresStore

    assert isinstance(store, PostgresStore)
    return store.schema


async def raw_tokens(
    store: Store, rows: list[tuple[str, str, int, int | None, str | None]]
) -> None:
    """Put concurrency token rows (kind, name, slot, call_id, owner) in the store."""
    if isinstance(store, MemoryStore):
        for kind, name, slot, call_id, owner in rows:
            store._cluster._tokens.setdefault((kind, name), []).append(Token(slot, call_id, owner))
    elif isinstance(store, SQLiteStore):
        with closing(sqlite3.connect(store.path)) as conn, conn:
            conn.executemany(
                "INSERT INTO futurecalls_cluster_tokens (kind, name, slot, call_id, owner) "
                "VALUES (?, ?, ?, ?, ?)",
                rows,
            )
    else:
        from pg_support import admin_fetch

        for row in rows:
            await admin_fetch(
                f'INSERT INTO "{_schema(store)}".cluster_tokens (kind, name, slot, call_id, owner) '
                "VALUES ($1, $2, $3, $4, $5)",
                *row,
            )


async def read_tokens(store: Store) -> dict[tuple[str, str, int], tuple[int | None, str | None]]:
    if isinstance(store, MemoryStore):
        return {
            (*key, t.slot): (t.call_id, t.owner)
            for key, tokens in store._cluster._tokens.items()
            for t in tokens
        }
    if isinstance(store, SQLiteStore):
        with closing(sqlite3.connect(store.path)) as conn:
            rows = conn.execute(
                "SELECT kind, name, slot, call_id, owner FROM futurecalls_cluster_tokens"
            ).fetchall()
    else:
        from pg_support import admin_fetch

        rows = await admin_fetch(
            f'SELECT kind, name, slot, call_id, owner FROM "{_schema(store)}".cluster_tokens'
        )
    return {(r[0], r[1], r[2]): (r[3], r[4]) for r in rows}


async def raw_worker_ids(store: Store) -> set[str]:
    """Every row of the workers table, live or not."""
    if isinstance(store, MemoryStore):
        return set(store._workers.rows)
    if isinstance(store, SQLiteStore):
        with closing(sqlite3.connect(store.path)) as conn:
            return {r[0] for r in conn.execute("SELECT id FROM futurecalls_workers")}
    from pg_support import admin_fetch

    return {r[0] for r in await admin_fetch(f'SELECT id FROM "{_schema(store)}".workers')}


# -- the tests ------------------------------------------------------------------------


async def test_a_registered_worker_is_listed_with_every_field(store: Store) -> None:
    limits = {
        "max_concurrent": None,
        "classes": {"mail.send": {"max_concurrent": 5, "delivery": "at_least_once"}},
    }
    registered = worker(running=3, limits=limits)
    await store.register_worker(registered)
    (listed,) = await store.workers(at(1))
    assert listed == registered
    assert listed.started_at.tzinfo is not None
    assert listed.expires_at.utcoffset() == timedelta(0)


async def test_registering_again_replaces_the_row(store: Store) -> None:
    await store.register_worker(worker(expires=5))
    again = worker(started=10, expires=40, running=2, limits={})
    await store.register_worker(again)
    assert await store.workers(at(20)) == [again]


async def test_times_in_other_zones_come_back_in_utc(store: Store) -> None:
    plus2 = timezone_plus(2)
    w = worker()
    await store.register_worker(
        WorkerInfo(
            id=w.id,
            host=w.host,
            pid=w.pid,
            started_at=w.started_at.astimezone(plus2),
            heartbeat_at=w.heartbeat_at.astimezone(plus2),
            expires_at=w.expires_at.astimezone(plus2),
            limits=w.limits,
        )
    )
    (listed,) = await store.workers(at(1))
    assert listed == w
    assert listed.started_at.tzinfo is UTC


def timezone_plus(hours: int) -> Any:
    from datetime import timezone

    return timezone(timedelta(hours=hours))


async def test_a_heartbeat_renews_a_live_row(store: Store) -> None:
    await store.register_worker(worker(expires=30))
    assert await store.heartbeat("w1", at(10), at(40), 7) is True
    (listed,) = await store.workers(at(35))
    assert (listed.heartbeat_at, listed.expires_at, listed.running) == (at(10), at(40), 7)
    assert listed.started_at == at(0)


async def test_a_heartbeat_of_an_unknown_worker_is_false(store: Store) -> None:
    assert await store.heartbeat("nobody", at(10), at(40), 0) is False
    assert await store.workers(at(10)) == []


async def test_an_expired_row_is_not_revived_by_its_heartbeat(store: Store) -> None:
    await store.register_worker(worker(expires=30))
    # Exactly at its expiry it is expired ("expires_at > now" is alive).
    assert await store.heartbeat("w1", at(30), at(60), 0) is False
    assert await store.workers(at(1)) == []
    assert await store.heartbeat("w1", at(31), at(61), 0) is False
    # Its worker registers again.
    await store.register_worker(worker(started=0, expires=61))
    assert [w.id for w in await store.workers(at(31))] == ["w1"]


async def test_expired_rows_vanish_and_another_heartbeat_deletes_them(store: Store) -> None:
    await store.register_worker(worker("old", expires=10))
    await store.register_worker(worker("new", started=1, expires=100))
    # Not listed once expired, though the row is still there...
    assert [w.id for w in await store.workers(at(20))] == ["new"]
    assert [w.id for w in await store.workers(at(5))] == ["old", "new"]
    assert await raw_worker_ids(store) == {"old", "new"}
    # ...until any worker's heartbeat deletes it.
    assert await store.heartbeat("new", at(20), at(120), 0) is True
    assert await raw_worker_ids(store) == {"new"}
    assert [w.id for w in await store.workers(at(5))] == ["new"]


async def test_workers_are_ordered_by_start_then_id(store: Store) -> None:
    for worker_id, started in [("c", 5), ("b", 1), ("a", 5), ("d", 0)]:
        await store.register_worker(worker(worker_id, started=started, expires=100))
    assert [w.id for w in await store.workers(at(50))] == ["d", "b", "a", "c"]


async def test_deregister_deletes_the_row_frees_its_tokens_and_wakes(store: Store) -> None:
    await store.register_worker(worker("gone", expires=100))
    await store.register_worker(worker("stays", expires=100))
    await raw_tokens(
        store,
        [
            ("concurrency", "a", 0, 11, "gone"),
            ("concurrency", "a", 1, 12, "stays"),
            ("concurrency", "*", 0, 11, "gone"),
            ("concurrency", "a", 2, None, None),
        ],
    )
    woken: list[datetime] = []
    remove = store.add_listener(woken.append)
    try:
        await store.deregister_worker("gone")
    finally:
        remove()
    assert [w.id for w in await store.workers(at(1))] == ["stays"]
    assert await read_tokens(store) == {
        ("concurrency", "a", 0): (None, None),
        ("concurrency", "a", 1): (12, "stays"),
        ("concurrency", "*", 0): (None, None),
        ("concurrency", "a", 2): (None, None),
    }
    assert woken, "listeners are told that slots were freed"
    assert min(woken) <= at(0)  # "look now": earlier than anything due


async def test_deregister_of_an_unknown_worker_does_nothing(store: Store) -> None:
    await store.register_worker(worker("stays", expires=100))
    await store.deregister_worker("nobody")
    assert [w.id for w in await store.workers(at(1))] == ["stays"]


@pytest.mark.parametrize(
    "bad",
    [
        {"id": ""},
        {"id": "x" * 1001},
        {"id": "a\x00b"},
        {"host": "h" * 256},
        {"pid": -1},
        {"pid": True},
        {"pid": 2**31},
        {"running": -1},
        {"started_at": datetime(2030, 1, 1)},
        {"expires_at": datetime(1, 1, 1, tzinfo=UTC)},
        {"limits": [1, 2]},
        {"limits": {"x": float("nan")}},
        {"limits": {"x": object()}},
    ],
)
async def test_a_bad_worker_is_refused_before_anything_is_stored(
    store: Store, bad: dict[str, Any]
) -> None:
    fields = {
        "id": "w1",
        "host": "h",
        "pid": 1,
        "started_at": T0,
        "heartbeat_at": T0,
        "expires_at": at(30),
        "running": 0,
        "limits": {},
        **bad,
    }
    with pytest.raises(InvalidArgumentError):
        await store.register_worker(WorkerInfo(**fields))
    assert await store.workers(T0) == []


async def test_bad_arguments_of_the_other_methods_are_refused(store: Store) -> None:
    with pytest.raises(InvalidArgumentError):
        await store.register_worker("w1")  # type: ignore[arg-type]
    with pytest.raises(InvalidArgumentError):
        await store.heartbeat("w1", datetime(2030, 1, 1), at(30), 0)
    with pytest.raises(InvalidArgumentError):
        await store.heartbeat("w1", T0, at(30), -1)
    with pytest.raises(InvalidArgumentError):
        await store.heartbeat("", T0, at(30), 0)
    with pytest.raises(InvalidArgumentError):
        await store.deregister_worker(None)  # type: ignore[arg-type]
    with pytest.raises(InvalidArgumentError):
        await store.workers(datetime(2030, 1, 1))


# -- rows another program wrote ---------------------------------------------------------

DEEP = "[" * 100_000 + "]" * 100_000


async def _hostile_rows(store: Store) -> None:
    """Rows that are no valid worker, all live at at(1)."""
    if isinstance(store, MemoryStore):
        good = worker("zz-good", expires=100)
        store._workers.rows.update(
            {
                "naive": WorkerInfo(
                    id="naive",
                    host="h",
                    pid=1,
                    started_at=datetime(2030, 1, 1),
                    heartbeat_at=datetime(2030, 1, 1),
                    expires_at=datetime(2031, 1, 1),
                ),
                "listy": WorkerInfo(**{**_fields(good), "id": "listy", "limits": [1]}),
                "pid": WorkerInfo(**{**_fields(good), "id": "pid", "pid": "12"}),
                "elsewhere": WorkerInfo(**{**_fields(good), "id": "other-id"}),
            }
        )
        return
    if isinstance(store, SQLiteStore):
        start, expires = to_micros(at(0)), to_micros(at(100))
        rows: list[tuple[Any, ...]] = [
            ("pid-text", "h", "abc", start, start, expires, 0, "{}"),
            ("not-json", "h", 1, start, start, expires, 0, "not json"),
            ("json-list", "h", 1, start, start, expires, 0, "[1, 2]"),
            ("deep", "h", 1, start, start, expires, 0, DEEP),
            ("limits-blob", "h", 1, start, start, expires, 0, b"{}"),
            (b"blob-id", "h", 1, start, start, expires, 0, "{}"),
            ("host-blob", b"\xff\xfe", 1, start, start, expires, 0, "{}"),
            ("negative", "h", 1, start, start, expires, -3, "{}"),
            ("real-start", "h", 1, 1.5, start, expires, 0, "{}"),
            ("huge-start", "h", 1, 2**62, start, expires, 0, "{}"),
            ("text-expiry", "h", 1, start, start, "tomorrow", 0, "{}"),
        ]
        with closing(sqlite3.connect(store.path)) as conn:
            conn.execute("PRAGMA ignore_check_constraints = ON")
            with conn:
                conn.executemany(
                    "INSERT INTO futurecalls_workers (id, host, pid, started_at, heartbeat_at, "
                    "expires_at, running, limits) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    rows,
                )
                # Text whose bytes are not UTF-8 (Python cannot bind it as text).
                conn.execute(
                    "INSERT INTO futurecalls_workers (id, host, pid, started_at, heartbeat_at, "
                    "expires_at, running, limits) "
                    "VALUES (CAST(X'FFFE' AS TEXT), 'h', 1, ?, ?, ?, 0, '{}')",
                    (start, start, expires),
                )
        return
    from pg_support import admin_fetch

    for worker_id, pid, limits in [
        ("not-json", 1, "not json"),
        ("json-list", 1, "[1, 2]"),
        ("json-null", 1, "null"),
        ("deep", 1, DEEP),
        ("negative-pid", -5, "{}"),
        ("nan", 1, '{"x": NaN}'),
    ]:
        await admin_fetch(
            f'INSERT INTO "{_schema(store)}".workers (id, host, pid, started_at, heartbeat_at, '
            "expires_at, running, limits) VALUES ($1, 'h', $2, $3, $3, $4, 0, $5)",
            worker_id,
            pid,
            at(0),
            at(100),
            limits,
        )


def _fields(w: WorkerInfo) -> dict[str, Any]:
    return {
        "id": w.id,
        "host": w.host,
        "pid": w.pid,
        "started_at": w.started_at,
        "heartbeat_at": w.heartbeat_at,
        "expires_at": w.expires_at,
        "running": w.running,
        "limits": w.limits,
    }


async def test_rows_that_are_no_valid_worker_are_left_out_with_a_warning(
    store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    good = worker("zz-good", expires=100)
    await store.register_worker(good)
    await _hostile_rows(store)
    with caplog.at_level(logging.WARNING, logger="trio_futurecalls.store.workers"):
        assert await store.workers(at(1)) == [good]
    assert any("not a valid worker" in r.getMessage() for r in caplog.records)
    assert all(len(r.getMessage()) < 1000 for r in caplog.records)
    # A heartbeat among them works; the registry goes on.
    assert await store.heartbeat("zz-good", at(2), at(100), 1) is True
    await store.deregister_worker("zz-good")
    assert await store.workers(at(3)) == []

"""Tests of the PostgreSQL store against a real server (no mocks).

Every test gets its own randomly named schema (``pg_support.open_test_postgres_store``).
These are real-time tests: they talk to a server, run subprocesses and a TCP proxy.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import pytest
import trio
import trio.testing
import trio_asyncio
from pg_support import (
    admin_fetch,
    drop_schema,
    locked_row,
    new,
    now,
    open_test_postgres_store,
    pg_dsn,
    random_schema,
    recording_claims,
    require_postgres,
    store_behind_proxy,
    stored_call,
    until,
)
from pg_worker import WORKER_LIMITS, Wake

from trio_futurecalls import (
    MAX_PAYLOAD_BYTES,
    FutureCall,
    InvalidArgumentError,
    InvalidPayloadError,
    PendingQuery,
    StoreClosedError,
    StoreError,
    StoreUnavailableError,
    open_scheduler,
)
from trio_futurecalls.stores._sql import migrations
from trio_futurecalls.stores.postgres import (
    PostgresSession,
    PostgresStore,
    open_postgres_store,
    recommended_pool_size,
)
from trio_futurecalls.stores.postgres._errors import bridge, lost
from trio_futurecalls.stores.postgres._pool import Connections, ServerRoom

TESTS = Path(__file__).parent
WORKER = str(TESTS / "pg_worker.py")
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
ALL_VERSIONS = [(m.version, m.name) for m in migrations("postgres")]


async def worker(*args: str, limit_s: float = 60) -> Any:
    """Run tests/postgres/pg_worker.py in a subprocess; return its JSON output."""
    with trio.fail_after(limit_s):
        proc = await trio.run_process(
            [sys.executable, WORKER, *args], capture_stdout=True, capture_stderr=True, check=False
        )
    if proc.returncode != 0:
        raise AssertionError(f"worker {args} failed:\n{proc.stderr.decode()}")
    return json.loads(proc.stdout.decode().strip().splitlines()[-1])


@pytest.fixture(autouse=True)
def _needs_postgres() -> None:
    require_postgres()


# -- configuration and validation ---------------------------------------------------


@pytest.mark.parametrize(
    "schema",
    [
        'bad"quote',
        "semi;colon",
        "Upper",
        "",
        "with space",
        "dot.ted",
        "1digit",
        "pg_temp",
        "x" * 60,
        # PostgreSQL's own schemas.
        "information_schema",
        "pg_catalog",
        "pg_toast",
        "pg_temp_3",
        "pg_anything",
    ],
)
async def test_bad_schema_names_are_rejected_before_connecting(schema: str) -> None:
    # Port 1: nothing listens there, so reaching the network would fail differently.
    with pytest.raises(InvalidArgumentError):
        async with open_postgres_store("postgresql://nobody@127.0.0.1:1/none", schema=schema):
            pass


async def test_non_str_schema_and_bad_options_are_rejected() -> None:
    dsn = "postgresql://nobody@127.0.0.1:1/none"
    bad: list[dict[str, Any]] = [
        {"schema": 42},
        {"max_pool_size": 0},
        {"min_pool_size": 5, "max_pool_size": 2},
        {"recheck_interval": 0},
        {"connect_timeout": -1},
        {"command_timeout": 0},
    ]
    for options in bad:
        with pytest.raises(InvalidArgumentError):
            async with open_postgres_store(dsn, **options):
                pass


async def test_unreachable_server_at_start_is_store_unavailable() -> None:
    with trio.fail_after(10), pytest.raises(StoreUnavailableError):
        async with open_postgres_store(
            "postgresql://nobody@127.0.0.1:1/none", schema="futurecalls", connect_timeout=2
        ):
            pass


def test_recommended_pool_size() -> None:
    assert recommended_pool_size(1) == 3
    assert recommended_pool_size(10) == 12
    assert recommended_pool_size(None) == 3


async def test_check_pool_size_warns(caplog: pytest.LogCaptureFixture) -> None:
    async with open_test_postgres_store(max_pool_size=10, min_pool_size=0) as store:
        # A server with room to spare (the shared test server's room depends on what
        # else runs on it): only the pool's own size matters here.
        store.server_room = ServerRoom(max_connections=1000, reserved=3, others=0)
        caplog.set_level(logging.WARNING, logger="trio_futurecalls.store.postgres")
        assert store.check_pool_size(8)
        assert not caplog.records
        assert not store.check_pool_size(9)
        assert not store.check_pool_size(None)
        assert len(caplog.records) == 2
        assert "max_pool_size=10 is too small for max_concurrent=9" in caplog.records[0].message


async def test_tiny_pool_warns_at_start(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="trio_futurecalls.store.postgres")
    async with open_test_postgres_store(max_pool_size=2, min_pool_size=0):
        pass
    assert any("below the minimum useful size" in r.message for r in caplog.records)


async def test_payload_and_name_limits_are_enforced() -> None:
    async with open_test_postgres_store() as store:
        with pytest.raises(InvalidPayloadError):
            await store.schedule([new(payload='"' + "x" * MAX_PAYLOAD_BYTES + '"')])
        with pytest.raises(InvalidArgumentError):
            await store.schedule([new(name="n" * 201)])
        # The same through the engine.

        class Big(FutureCall):
            name = "pg.big"

            async def invoke(self, session: Any, payload: Any) -> None:
                pass

        async with open_scheduler(store, [Big], execute=False) as scheduler:
            with pytest.raises(InvalidPayloadError):
                await scheduler.schedule(Big, "x" * MAX_PAYLOAD_BYTES)
        # A payload just under the limit fits (the CHECK counts bytes, not characters).
        fits = '"' + "\u00e9" * ((MAX_PAYLOAD_BYTES - 2) // 2) + '"'
        (call_id,) = await store.schedule([new(payload=fits)])
        (call,) = await store.pending(PendingQuery())
        assert call.id == call_id
        assert call.payload == fits
        # The table's CHECK is the backstop behind the Python checks.
        with pytest.raises(StoreError, match="calls_payload_size"):
            await store._call(
                "fetch",
                "insert_calls",
                ["a"],
                ["x" * (MAX_PAYLOAD_BYTES + 1)],
                [now()],
                [None],
                [now()],
                store.channel,
                "0",
                [0],
                [None],
                [None],
                [0],
            )


# -- migrations ---------------------------------------------------------------------


async def _versions(schema: str) -> list[tuple[int, str]]:
    rows = await admin_fetch(f'SELECT version, name FROM "{schema}".schema_version ORDER BY 1')
    return [(r[0], r[1]) for r in rows]


async def test_migrations_are_idempotent() -> None:
    async with open_test_postgres_store() as store:
        (call_id,) = await store.schedule([new()])
        schema = store.schema
        # Open the same schema again (it migrates again): nothing changes, data stays.
        async with open_postgres_store(pg_dsn(), schema=schema, min_pool_size=0) as again:
            assert [c.id for c in await again.pending(PendingQuery())] == [call_id]
        assert await _versions(schema) == ALL_VERSIONS


async def test_concurrent_migrations_in_one_process() -> None:
    schema = random_schema()
    try:
        async with trio.open_nursery() as nursery:
            for _ in range(4):
                nursery.start_soon(_open_and_close, schema)
        assert await _versions(schema) == ALL_VERSIONS
    finally:
        await drop_schema(schema)


async def _open_and_close(schema: str) -> None:
    async with open_postgres_store(pg_dsn(), schema=schema, min_pool_size=0) as store:
        await store.pending_counts(now())


async def test_concurrent_migrations_in_separate_processes() -> None:
    schema = random_schema()
    try:
        async with trio.open_nursery() as nursery:
            for _ in range(3):
                nursery.start_soon(worker, "migrate", pg_dsn(), schema)
        assert await _versions(schema) == ALL_VERSIONS
    finally:
        await drop_schema(schema)


async def test_migrations_produce_the_expected_schema() -> None:
    async with open_test_postgres_store() as store:
        rows = await admin_fetch(
            "SELECT table_name, column_name, data_type, is_nullable, is_identity "
            "FROM information_schema.columns WHERE table_schema = $1 "
            "ORDER BY table_name, ordinal_position",
            store.schema,
        )
        columns = {(r[0], r[1]): (r[2], r[3], r[4]) for r in rows}
        tz = "timestamp with time zone"
        assert columns == {
            ("calls", "id"): ("bigint", "NO", "YES"),
            ("calls", "name"): ("text", "NO", "NO"),
            ("calls", "payload"): ("text", "NO", "NO"),
            ("calls", "due_at"): (tz, "NO", "NO"),
            ("calls", "identifier"): ("text", "YES", "NO"),
            ("calls", "scheduled_at"): (tz, "NO", "NO"),
            ("calls", "attempts"): ("integer", "NO", "NO"),
            ("calls", "lease_owner"): ("text", "YES", "NO"),
            ("calls", "recurring_key"): ("text", "YES", "NO"),
            ("calls", "tick_at"): (tz, "YES", "NO"),
            ("calls", "unique_key"): ("text", "YES", "NO"),
            ("calls", "priority"): ("integer", "NO", "NO"),
            ("calls", "waiting"): ("integer", "NO", "NO"),
            ("calls", "dependents"): ("boolean", "NO", "NO"),
            ("call_dependencies", "prerequisite_id"): ("bigint", "NO", "NO"),
            ("call_dependencies", "call_id"): ("bigint", "NO", "NO"),
            ("started_prerequisites", "call_id"): ("bigint", "NO", "NO"),
            ("started_prerequisites", "name"): ("text", "NO", "NO"),
            ("started_prerequisites", "started_at"): (tz, "NO", "NO"),
            ("started_prerequisites", "owner"): ("text", "YES", "NO"),
            ("started_prerequisites", "expires_at"): (tz, "YES", "NO"),
            ("dead_letters", "id"): ("bigint", "NO", "YES"),
            ("dead_letters", "call_id"): ("bigint", "NO", "NO"),
            ("dead_letters", "name"): ("text", "NO", "NO"),
            ("dead_letters", "payload"): ("text", "NO", "NO"),
            ("dead_letters", "due_at"): (tz, "NO", "NO"),
            ("dead_letters", "identifier"): ("text", "YES", "NO"),
            ("dead_letters", "scheduled_at"): (tz, "NO", "NO"),
            ("dead_letters", "failed_at"): (tz, "NO", "NO"),
            ("dead_letters", "error"): ("text", "NO", "NO"),
            ("dead_letters", "attempts"): ("integer", "NO", "NO"),
            ("recurring", "key"): ("text", "NO", "NO"),
            ("recurring", "name"): ("text", "NO", "NO"),
            ("recurring", "payload"): ("text", "NO", "NO"),
            ("recurring", "identifier"): ("text", "YES", "NO"),
            ("recurring", "cron"): ("text", "YES", "NO"),
            ("recurring", "every"): ("double precision", "YES", "NO"),
            ("recurring", "timezone"): ("text", "NO", "NO"),
            ("recurring", "start_at"): (tz, "YES", "NO"),
            ("recurring", "end_at"): (tz, "YES", "NO"),
            ("recurring", "misfire"): ("text", "NO", "NO"),
            ("recurring", "overlap"): ("text", "NO", "NO"),
            ("recurring", "anchor"): (tz, "NO", "NO"),
            ("recurring", "next_tick"): (tz, "YES", "NO"),
            ("recurring", "last_tick"): (tz, "YES", "NO"),
            ("recurring", "last_call_id"): ("bigint", "YES", "NO"),
            ("recurring", "runs"): ("bigint", "NO", "NO"),
            ("recurring", "skipped_overlap"): ("bigint", "NO", "NO"),
            ("recurring", "skipped_misfire"): ("bigint", "NO", "NO"),
            ("recurring", "created_at"): (tz, "NO", "NO"),
            ("recurring", "updated_at"): (tz, "NO", "NO"),
            ("workers", "id"): ("text", "NO", "NO"),
            ("workers", "host"): ("text", "NO", "NO"),
            ("workers", "pid"): ("integer", "NO", "NO"),
            ("workers", "started_at"): (tz, "NO", "NO"),
            ("workers", "heartbeat_at"): (tz, "NO", "NO"),
            ("workers", "expires_at"): (tz, "NO", "NO"),
            ("workers", "running"): ("integer", "NO", "NO"),
            ("workers", "limits"): ("text", "NO", "NO"),
            ("cluster_limits", "kind"): ("text", "NO", "NO"),
            ("cluster_limits", "name"): ("text", "NO", "NO"),
            ("cluster_limits", "tokens"): ("integer", "NO", "NO"),
            ("cluster_limits", "per_us"): ("bigint", "YES", "NO"),
            ("cluster_limits", "set_at"): (tz, "NO", "NO"),
            ("cluster_limits", "set_by"): ("text", "YES", "NO"),
            ("cluster_tokens", "kind"): ("text", "NO", "NO"),
            ("cluster_tokens", "name"): ("text", "NO", "NO"),
            ("cluster_tokens", "slot"): ("integer", "NO", "NO"),
            ("cluster_tokens", "call_id"): ("bigint", "YES", "NO"),
            ("cluster_tokens", "owner"): ("text", "YES", "NO"),
            ("cluster_tokens", "used_until"): (tz, "YES", "NO"),
            ("cluster_tokens", "holder_expires_at"): (tz, "YES", "NO"),
            ("paused", "name"): ("text", "NO", "NO"),
            ("paused", "paused_at"): (tz, "NO", "NO"),
            ("cancel_requests", "id"): ("bigint", "NO", "NO"),
            ("cancel_requests", "call_id"): ("bigint", "YES", "NO"),
            ("cancel_requests", "identifier"): ("text", "YES", "NO"),
            ("cancel_requests", "requested_at"): (tz, "NO", "NO"),
            ("cancel_requests", "expires_at"): (tz, "NO", "NO"),
            ("cancel_acks", "request_id"): ("bigint", "NO", "NO"),
            ("cancel_acks", "worker_id"): ("text", "NO", "NO"),
            ("cancel_acks", "found"): ("integer", "NO", "NO"),
            ("schema_version", "version"): ("integer", "NO", "NO"),
            ("schema_version", "name"): ("text", "NO", "NO"),
            ("schema_version", "applied_at"): (tz, "NO", "NO"),
        }
        indexes = await admin_fetch(
            "SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = $1", store.schema
        )
        defs = {r[0]: r[1].split(" USING ")[1] for r in indexes}
        assert defs == {
            "calls_pkey": "btree (id)",
            "calls_name_due_id_idx": "btree (name, due_at, id)",
            "calls_ready_name_priority_due_id_idx": (
                "btree (name, priority, due_at, id) WHERE (waiting = 0)"
            ),
            "call_dependencies_pkey": "btree (prerequisite_id, call_id)",
            "call_dependencies_call_id_idx": "btree (call_id)",
            "started_prerequisites_pkey": "btree (call_id)",
            "workers_pkey": "btree (id)",
            "cluster_limits_pkey": "btree (kind, name)",
            "cluster_tokens_pkey": "btree (kind, name, slot)",
            "cluster_tokens_owner_idx": "btree (owner, call_id) WHERE (owner IS NOT NULL)",
            "paused_pkey": "btree (name)",
            "cancel_requests_pkey": "btree (id)",
            "cancel_acks_pkey": "btree (request_id, worker_id)",
            "calls_due_id_idx": "btree (due_at, id)",
            "calls_identifier_idx": "btree (identifier) WHERE (identifier IS NOT NULL)",
            "calls_recurring_key_idx": "btree (recurring_key) WHERE (recurring_key IS NOT NULL)",
            "recurring_pkey": "btree (key)",
            "recurring_next_tick_idx": "btree (next_tick) WHERE (next_tick IS NOT NULL)",
            "calls_name_unique_key_idx": (
                "btree (name, unique_key) WHERE (unique_key IS NOT NULL)"
            ),
            "dead_letters_pkey": "btree (id)",
            "dead_letters_failed_id_idx": "btree (failed_at, id)",
            "schema_version_pkey": "btree (version)",
        }
        checks = await admin_fetch(
            "SELECT conname FROM pg_constraint c JOIN pg_namespace n ON n.oid = c.connamespace "
            "WHERE n.nspname = $1 AND c.contype = 'c' ORDER BY 1",
            store.schema,
        )
        assert [r[0] for r in checks] == [
            "calls_attempts",
            "calls_due_at_range",
            "calls_identifier_length",
            "calls_name_length",
            "calls_payload_size",
            "calls_priority_range",
            "calls_recurring_key_length",
            "calls_scheduled_at_range",
            "calls_tick_at_range",
            "calls_unique_key_length",
            "calls_waiting_range",
            "cancel_acks_found",
            "cancel_acks_worker_length",
            "cancel_requests_call_id",
            "cancel_requests_expires_range",
            "cancel_requests_identifier_length",
            "cancel_requests_one_target",
            "cancel_requests_requested_range",
            "cluster_limits_kind",
            "cluster_limits_name_length",
            "cluster_limits_per",
            "cluster_limits_set_by_length",
            "cluster_limits_set_range",
            "cluster_limits_tokens",
            "cluster_tokens_holder_range",
            "cluster_tokens_owner_length",
            "cluster_tokens_slot",
            "cluster_tokens_used_range",
            "dead_letters_attempts",
            "dead_letters_due_at_range",
            "dead_letters_failed_at_range",
            "dead_letters_scheduled_at_range",
            "paused_at_range",
            "paused_name_length",
            "recurring_anchor_range",
            "recurring_created_range",
            "recurring_cron_length",
            "recurring_cron_or_every",
            "recurring_end_range",
            "recurring_every_range",
            "recurring_identifier_length",
            "recurring_key_length",
            "recurring_last_call_id",
            "recurring_last_tick_range",
            "recurring_misfire",
            "recurring_name_length",
            "recurring_next_tick_range",
            "recurring_overlap",
            "recurring_payload_size",
            "recurring_runs",
            "recurring_skipped_misfire",
            "recurring_skipped_overlap",
            "recurring_start_range",
            "recurring_timezone_length",
            "recurring_updated_range",
            "started_prerequisites_expires_range",
            "started_prerequisites_owner_length",
            "workers_expires_range",
            "workers_heartbeat_range",
            "workers_host_length",
            "workers_id_length",
            "workers_limits_size",
            "workers_running_range",
            "workers_started_range",
        ]


# -- claims and scheduling ----------------------------------------------------------


async def test_claim_respects_slots_limit_and_order() -> None:
    async with open_test_postgres_store() as store:
        t = now()
        at = [t - timedelta(seconds=s) for s in range(10, 0, -1)]  # at[0] is the earliest
        ids = await store.schedule(
            [
                new("a", at[0]),  # 0
                new("b", at[1]),  # 1
                new("a", at[2]),  # 2
                new("a", at[3]),  # 3
                new("c", at[4]),  # 4
                new("b", at[5]),  # 5
                new("a", at[5]),  # 6 (same due time as 5: the lower id first)
                new("a", t + timedelta(hours=1)),  # 7: not due
            ]
        )
        # a: at most 2, b: at most 1, c: not asked for; 4 in total at most.
        got = (await store.claim(t, {"a": 2, "b": 1}, 4)).calls
        assert [c.id for c in got] == [ids[0], ids[1], ids[2]]
        # Limit across names, earliest first.
        got = (await store.claim(t, {"a": 5, "b": 5, "c": 5}, 2)).calls
        assert [c.id for c in got] == [ids[3], ids[4]]
        got = (await store.claim(t, {"a": 5, "b": 5}, 10)).calls
        assert [c.id for c in got] == [ids[5], ids[6]]
        assert (await store.claim(t, {"a": 5}, 10)).calls == []
        assert [c.id for c in await store.pending(PendingQuery())] == [ids[7]]
        assert (await store.claim(t, {"a": 0}, 10)).calls == []
        assert (await store.claim(t + timedelta(hours=2), {"a": 1}, 0)).calls == []


async def test_claim_skips_rows_locked_by_another_transaction() -> None:
    async with open_test_postgres_store() as store:
        t = now() - timedelta(seconds=1)
        first, second = await store.schedule([new("a", t), new("a", t)])
        async with locked_row(store.schema, first):
            with trio.fail_after(5):  # SKIP LOCKED: does not wait for the lock
                got = (await store.claim(now(), {"a": 10}, 10)).calls
        assert [c.id for c in got] == [second]
        got = (await store.claim(now(), {"a": 10}, 10)).calls
        assert [c.id for c in got] == [first]


async def test_concurrent_claims_from_two_stores_never_share_a_row() -> None:
    async with open_test_postgres_store() as store:
        t = now() - timedelta(seconds=1)
        ids = await store.schedule([new(("a", "b", "c")[i % 3], t) for i in range(600)])
        async with open_postgres_store(pg_dsn(), schema=store.schema, min_pool_size=0) as other:
            claimed: list[list[int]] = []

            async def claimer(s: PostgresStore) -> None:
                mine: list[int] = []
                claimed.append(mine)
                while True:
                    got = (await s.claim(now(), {"a": 7, "b": 5, "c": 3}, 11)).calls
                    if not got:
                        return
                    assert len(got) <= 11
                    mine.extend(c.id for c in got)

            async with trio.open_nursery() as nursery:
                for s in (store, other, store, other, store, other):
                    nursery.start_soon(claimer, s)
        everything = [i for mine in claimed for i in mine]
        assert sorted(everything) == sorted(ids)  # each row exactly once
        assert sum(1 for mine in claimed if mine) >= 2  # really concurrent


async def test_claim_is_not_lost_to_cancellation() -> None:
    async with open_test_postgres_store() as store:
        ids = await store.schedule([new("a", now() - timedelta(seconds=1)) for _ in range(3)])
        with trio.CancelScope() as scope:
            scope.cancel()
            got = (await store.claim(now(), {"a": 10}, 10)).calls  # shielded: completes
            assert [c.id for c in got] == ids
        assert await store.pending(PendingQuery()) == []


async def test_schedule_many_is_one_round_trip_in_order() -> None:
    async with open_test_postgres_store() as store:
        round_trips = 0
        real_call = store._call

        async def counting(*args: Any) -> Any:
            nonlocal round_trips
            round_trips += 1
            return await real_call(*args)

        store._call = counting  # type: ignore[method-assign,assignment]
        t = now()
        batch = [
            new("a", t + timedelta(seconds=(i * 7919) % 1000), payload=str(i)) for i in range(1000)
        ]
        # Another store on the same schema hears only the NOTIFY (no local wake-up).
        async with open_postgres_store(pg_dsn(), schema=store.schema, min_pool_size=0) as other:
            heard: list[datetime] = []
            other.add_listener(heard.append)
            assert await other.wait_listening()  # (LISTEN opens with the first listener)
            ids = await store.schedule(batch)
            assert round_trips == 1
            assert len(ids) == 1000
            assert ids == sorted(ids)
            store._call = real_call  # type: ignore[method-assign]
            by_id = {c.id: c.payload for c in await store.pending(PendingQuery())}
            assert [by_id[i] for i in ids] == [str(i) for i in range(1000)]
            # One NOTIFY for the batch, carrying its earliest due time.
            await until(lambda: bool(heard), 5)
            await trio.sleep(0.2)
            assert heard == [min(c.due_at for c in batch)]


# -- wake-ups -----------------------------------------------------------------------


async def test_notify_from_another_process_wakes_the_scheduler() -> None:
    ran = trio.Event()

    class WakeHere(FutureCall):
        name = Wake.name

        async def invoke(self, session: Any, payload: Any) -> None:
            ran.set()

    async with (
        open_test_postgres_store(recheck_interval=60.0) as store,
        open_scheduler(store, [WakeHere], max_concurrent=2) as scheduler,
    ):
        await trio.sleep(0.3)  # the dispatcher is asleep, until the recheck (60 s)
        assert scheduler.running() == []
        await worker("schedule", pg_dsn(), store.schema, Wake.name, "1")
        start = trio.current_time()
        with trio.fail_after(30):  # far below the 60 s recheck: only NOTIFY explains it
            await ran.wait()
        assert trio.current_time() - start < 30


async def test_listener_reconnects_after_its_backend_is_terminated() -> None:
    heard: list[datetime] = []
    schema = random_schema()
    async with open_test_postgres_store(
        schema=schema, application_name=f"fc-{schema}", recheck_interval=60.0
    ) as store:
        assert store.listener_connects == 0  # (LISTEN opens with the first listener)
        store.add_listener(heard.append)
        assert await store.wait_listening()
        assert store.listener_connects == 1
        (old_pid,) = await _listener_pids(store)
        await admin_fetch("SELECT pg_terminate_backend($1)", old_pid)
        await until(lambda: EPOCH in heard, 15)
        assert store.listener_connects == 2
        (new_pid,) = await _listener_pids(store)
        assert new_pid != old_pid
        # And it hears NOTIFYs again (here, sent by another connection).
        heard.clear()
        due = datetime(2030, 1, 1, tzinfo=UTC)
        micros = (due - EPOCH) // timedelta(microseconds=1)
        await admin_fetch("SELECT pg_notify($1, $2)", store.channel, str(micros))
        await until(lambda: due in heard, 10)


async def _listener_pids(store: PostgresStore) -> list[int]:
    rows = await admin_fetch(
        "SELECT pid FROM pg_stat_activity WHERE application_name = $1",
        store.listener_application_name,
    )
    return [r[0] for r in rows]


# -- outage and recovery ------------------------------------------------------------


async def _eventually(fn: Callable[[], Awaitable[Any]], seconds: float) -> Any:
    with trio.fail_after(seconds):
        while True:
            try:
                return await fn()
            except StoreUnavailableError:
                await trio.sleep(0.1)


async def test_outage_raises_unavailable_promptly_and_recovers() -> None:
    ran: list[int] = []

    class Job(FutureCall):
        name = "pg.job"

        async def invoke(self, session: PostgresSession, payload: Any) -> None:
            assert await session.fetchval("SELECT $1::int", payload) == payload
            ran.append(payload)

    heard: list[datetime] = []
    async with (
        store_behind_proxy(
            connect_timeout=1.0,
            command_timeout=2.0,
            recheck_interval=60.0,
            min_pool_size=1,
        ) as (store, proxy),
        open_scheduler(store, [Job], max_concurrent=3, grace_period=5) as scheduler,
    ):
        store.add_listener(heard.append)
        await scheduler.schedule(Job, 1)
        await until(lambda: ran == [1], 10)

        # Connections reset: every method fails fast with StoreUnavailableError.
        proxy.cut("reset")
        for method in (
            lambda: store.pending(PendingQuery()),
            lambda: store.schedule([new("pg.job")]),
            lambda: store.claim(now(), {"pg.job": 1}, 1),
            lambda: store.pending_counts(now()),
        ):
            with trio.fail_after(5), pytest.raises(StoreUnavailableError):
                await method()
        # Packets vanish: bounded by connect_timeout.
        proxy.cut("hang")
        start = trio.current_time()
        with pytest.raises(StoreUnavailableError):
            await store.pending(PendingQuery())
        assert trio.current_time() - start < 5

        # Back up: the store recovers on its own, the listener reconnects and
        # announces it, and the dispatcher runs new calls again.
        proxy.cut("forward")
        heard.clear()
        await _eventually(lambda: store.pending(PendingQuery()), 15)
        await until(lambda: EPOCH in heard, 15)
        await _eventually(lambda: scheduler.schedule(Job, 2), 10)
        await until(lambda: ran == [1, 2], 40)


# -- sessions -----------------------------------------------------------------------


async def test_sessions_take_one_connection_lazily_and_release_it() -> None:
    seen: dict[str, Any] = {}
    release = trio.Event()

    class UsesDb(FutureCall):
        name = "pg.uses"
        max_concurrent = 5

        async def invoke(self, session: PostgresSession, payload: Any) -> None:
            if payload == "idle":
                seen["idle"] = session.acquired
                return
            if payload == "tx-fails":
                async with session.transaction():
                    await session.execute(f"INSERT INTO {seen['t']} (v) VALUES ($1)", "nope")
                    raise RuntimeError("boom")
            if payload == "bad-sql":
                try:
                    await session.execute("SELEC nonsense")
                except StoreError as exc:
                    seen["bad-sql"] = type(exc.__cause__).__name__
                    raise
            if payload == "hold":
                await session.execute("SELECT 1")
                seen["hold"] = session.acquired
                await release.wait()
                return
            async with session.transaction():
                await session.execute(f"INSERT INTO {seen['t']} (v) VALUES ($1)", payload)
                conn = await session.connection()
                assert conn is await session.connection()
            seen.setdefault("rows", []).extend(await session.fetch(f"SELECT v FROM {seen['t']}"))

    async with open_test_postgres_store(max_pool_size=6) as store:
        await admin_fetch(f'CREATE TABLE "{store.schema}".t (v text)')
        seen["t"] = f'"{store.schema}".t'
        async with open_scheduler(store, [UsesDb], max_concurrent=4, grace_period=0.5) as scheduler:
            for payload in ("idle", "tx-fails", "bad-sql", "kept"):
                await scheduler.schedule(UsesDb, payload)
            await scheduler.schedule(UsesDb, "hold")
            await until(
                lambda: "hold" in seen and scheduler.statistics().classes["pg.uses"].finished >= 4,
                10,
            )
            # Only the held call's session holds a connection. (Not connections_in_use():
            # that counts the store's own statements too, and as the last calls ended
            # their freed slots woke the dispatcher, whose claim may be in flight.)
            assert store.session_connections == 1
            assert store.open_sessions == 1
            # Shutdown cancels the held call after the grace period; its connection
            # goes back to the pool anyway.
        assert store.session_connections == 0
        assert store.connections_in_use() == 0
        assert seen["idle"] is False
        assert seen["hold"] is True
        assert seen["bad-sql"] == "PostgresSyntaxError"
        rows = await admin_fetch(f'SELECT v FROM "{store.schema}".t')
        assert [r[0] for r in rows] == ["kept"]
        stats = scheduler.statistics().classes["pg.uses"]
        assert (stats.succeeded, stats.failed, stats.cancelled) == (2, 2, 1)


async def test_store_closed_errors() -> None:
    async with open_test_postgres_store() as store:
        pass
    with pytest.raises(StoreClosedError):
        await store.pending(PendingQuery())


# -- many processes -----------------------------------------------------------------


async def test_three_worker_processes_run_every_call_exactly_once() -> None:
    total = 3000
    max_concurrent = 5
    async with open_test_postgres_store() as store:
        await admin_fetch(f'CREATE TABLE "{store.schema}".runs (call_id bigint, worker int)')
        names = list(WORKER_LIMITS)
        t = now() - timedelta(seconds=1)
        ids = await store.schedule([new(names[i % len(names)], t) for i in range(total)])
        reports: list[dict[str, Any]] = []

        async def one(k: int) -> None:
            reports.append(
                await worker("run", pg_dsn(), store.schema, str(k), str(max_concurrent), limit_s=90)
            )

        async with trio.open_nursery() as nursery:
            for k in range(3):
                nursery.start_soon(one, k)

        rows = await admin_fetch(
            f'SELECT call_id, count(*) FROM "{store.schema}".runs GROUP BY call_id'
        )
        counts = {r[0]: r[1] for r in rows}
        assert set(counts) == set(ids)
        assert set(counts.values()) == {1}  # exactly once
        assert await store.pending(PendingQuery()) == []
        assert sum(r["ran"] for r in reports) == total
        for report in reports:
            assert report["failed"] == 0
            assert report["total_peak"] <= max_concurrent
            for name, peak in report["peak"].items():
                limit = WORKER_LIMITS[name]
                assert limit is None or peak <= limit, (name, peak, limit)
        # Work really was shared.
        assert sum(1 for r in reports if r["ran"] > 0) >= 2


# -- leases across processes ----------------------------------------------------------


async def test_expired_lease_is_taken_over_by_another_store() -> None:
    from trio_futurecalls._model import Lease

    async with open_test_postgres_store() as store:
        (call_id,) = await store.schedule([new("a", now() - timedelta(seconds=1))])
        async with open_postgres_store(pg_dsn(), schema=store.schema, min_pool_size=0) as other:
            short = Lease(
                owner="w1", expires_at=now() + timedelta(seconds=0.3), names=frozenset("a")
            )
            (first,) = (await store.claim(now(), {"a": 1}, 1, short)).calls
            assert (first.id, first.attempts) == (call_id, 1)
            assert await store.pending(PendingQuery()) == []  # leased: running, not pending
            assert (await other.claim(now(), {"a": 1}, 1)).calls == []  # still leased
            await trio.sleep(0.4)
            long = Lease(owner="w2", expires_at=now() + timedelta(minutes=5), names=frozenset("a"))
            (second,) = (await other.claim(now(), {"a": 1}, 1, long)).calls
            assert (second.id, second.attempts) == (call_id, 2)
            # The first owner lost it: it can neither renew nor complete it.
            assert await store.renew("w1", [call_id], now() + timedelta(minutes=1)) == set()
            assert await store.complete("w1", call_id) is False
            assert await other.renew("w2", [call_id], now() + timedelta(minutes=9)) == {call_id}
            assert await other.complete("w2", call_id) is True
        assert await store.pending_counts(now()) == {}


# -- hot paths: connection reuse, grouped completions ------------------------------------


async def _last_query(pid: int) -> str:
    rows = await admin_fetch("SELECT query FROM pg_stat_activity WHERE pid = $1", pid)
    return str(rows[0][0])


async def test_session_connections_are_reset_and_store_connections_are_not() -> None:
    # One connection: the store's statements and both sessions share it in turn, and
    # pg_stat_activity shows the last statement each left on it.
    name = f"fc-reset-{random_schema()}"
    async with open_test_postgres_store(
        max_pool_size=1, min_pool_size=1, application_name=name
    ) as store:
        async with store.open_session(stored_call()) as session:
            pid = await session.fetchval("SELECT pg_backend_pid()")
            await session.execute("SET application_name = 'dirty'")
            await session.execute("SELECT pg_advisory_lock(4242)")
        # Released: what the session did is undone before anyone else gets it.
        assert "pg_advisory_unlock_all" in await _last_query(pid)
        # The store's own statements leave nothing behind: no reset round trip after them.
        assert await store.pending(PendingQuery()) == []
        last = await _last_query(pid)
        assert ".calls" in last
        assert "pg_advisory_unlock_all" not in last
        assert await store.pending_counts(now()) == {}
        assert "pg_advisory_unlock_all" not in await _last_query(pid)
        async with store.open_session(stored_call(2)) as session:
            assert await session.fetchval("SELECT pg_backend_pid()") == pid
            assert await session.fetchval("SHOW application_name") == name
            locks = await session.fetchval(
                "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' "
                "AND pid = pg_backend_pid()"
            )
            assert locks == 0
        assert store.connections_in_use() == 0


async def test_sessions_never_wait_for_the_stores_idle_connection() -> None:
    async with open_test_postgres_store(max_pool_size=2, acquire_timeout=2.0) as store:
        await store.pending(PendingQuery())  # the store keeps a connection for its next one
        assert store.connections_in_use() == 0  # idle: not counted
        pids: list[int] = []
        both = trio.Event()

        async def hold(call_id: int) -> None:
            async with store.open_session(stored_call(call_id)) as session:
                pids.append(await session.fetchval("SELECT pg_backend_pid()"))
                if len(pids) == 2:
                    both.set()
                await both.wait()

        with trio.fail_after(5):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(hold, 1)
                nursery.start_soon(hold, 2)
        assert len(set(pids)) == 2  # two sessions at once on a pool of two
        # The store's statements work again afterwards (taking a connection back).
        assert await store.pending(PendingQuery()) == []
        assert store.connections_in_use() == 0


async def test_store_statement_cancelled_mid_query_leaves_a_usable_store() -> None:
    async with open_test_postgres_store(max_pool_size=3) as store:
        (first,) = await store.schedule([new("a", now() + timedelta(hours=1))])
        await store.pending(PendingQuery())
        async with locked_row(store.schema, first):
            # cancel() waits for the row lock; the caller gives up.
            with trio.move_on_after(0.3) as scope:
                await store.cancel(first)
            assert scope.cancelled_caught
        # The statement was cancelled on the server and its connection handed back to
        # the pool: the next statements run normally.
        with trio.fail_after(10):
            assert [c.id for c in await store.pending(PendingQuery())] == [first]
            assert await store.cancel(first) is True
        assert store.connections_in_use() == 0


async def test_concurrent_completions_share_one_delete() -> None:
    from trio_futurecalls._model import Lease

    async with open_test_postgres_store() as store:
        t = now() - timedelta(seconds=1)
        ids = await store.schedule([new("a", t) for _ in range(6)])
        mine = Lease(owner="w1", expires_at=now() + timedelta(minutes=5), names=frozenset("a"))
        assert len((await store.claim(now(), {"a": 6}, 6, mine)).calls) == 6
        # Another worker owns the last one now (as after an expired lease).
        await admin_fetch(
            f'UPDATE "{store.schema}".calls SET lease_owner = $1 WHERE id = $2', "w2", ids[5]
        )
        statements: list[str] = []
        run = store._connections.run

        async def counting_run(
            method: str, sql: str, args: Any, deadline: trio.CancelScope | None = None
        ) -> Any:
            statements.append(sql)
            return await run(method, sql, args, deadline)

        store._connections.run = counting_run  # type: ignore[method-assign]
        results: dict[tuple[str, int], bool] = {}

        async def complete(owner: str, call_id: int) -> None:
            results[owner, call_id] = await store.complete(owner, call_id)

        async with trio.open_nursery() as nursery:
            for call_id in ids:
                nursery.start_soon(complete, "w1", call_id)
            nursery.start_soon(complete, "w3", ids[0])  # not the owner
        assert results == {
            **{("w1", i): True for i in ids[:5]},
            ("w1", ids[5]): False,
            ("w3", ids[0]): False,
        }
        # The first completion ran alone; everything that arrived meanwhile went in
        # the next batch: one DELETE per owner.
        assert 2 <= len(statements) <= 3
        assert [r[0] for r in await admin_fetch(f'SELECT id FROM "{store.schema}".calls')] == [
            ids[5]
        ]
        # One call completed three times at once (some in one batch): one deleted it.
        twice: list[bool] = []

        async def complete_last() -> None:
            twice.append(await store.complete("w2", ids[5]))

        async with trio.open_nursery() as nursery:
            for _ in range(3):
                nursery.start_soon(complete_last)
        assert sorted(twice) == [False, False, True]
        assert await admin_fetch(f'SELECT id FROM "{store.schema}".calls') == []


async def test_claim_uses_the_statement_of_its_delivery_mode() -> None:
    from trio_futurecalls._model import Lease

    async with open_test_postgres_store() as store:
        t = now() - timedelta(seconds=1)
        ids = await store.schedule([new(name, t) for name in ("a", "b", "a", "b")])
        used = recording_claims(store)
        lease_a = Lease(owner="w1", expires_at=now() + timedelta(minutes=5), names=frozenset("a"))
        # Only "b" asked for, and "b" is not leased: plain delete.
        (b1,) = (await store.claim(now(), {"b": 1}, 1, lease_a)).calls
        # Only "a": lease only.
        (a1,) = (await store.claim(now(), {"a": 1}, 1, lease_a)).calls
        # Both: the combined statement.
        got = (await store.claim(now(), {"a": 1, "b": 1}, 2, lease_a)).calls
        assert used == ["claim_delete_plain", "claim_lease_plain", "claim"]
        assert [b1.id, a1.id] == [ids[1], ids[0]]
        assert [c.id for c in got] == [ids[2], ids[3]]
        assert [c.attempts for c in (b1, a1, *got)] == [1, 1, 1, 1]
        leased = await admin_fetch(
            f'SELECT id FROM "{store.schema}".calls WHERE lease_owner = $1 ORDER BY id', "w1"
        )
        assert [r[0] for r in leased] == [ids[0], ids[2]]


async def test_session_state_that_reset_all_misses_does_not_leak() -> None:
    role = random_schema().replace("test_fc_", "test_fc_role_")
    await admin_fetch(f'CREATE ROLE "{role}"')
    try:
        async with open_test_postgres_store(max_pool_size=1, min_pool_size=1) as store:
            async with store.open_session(stored_call()) as session:
                await session.execute(f'SET ROLE "{role}"')
                await session.execute("CREATE TEMP TABLE scratch (x int)")
            # The store's own statements still run as the store's user...
            assert await store.pending(PendingQuery()) == []
            async with store.open_session(stored_call(2)) as session:
                # ...and the next call's session starts clean.
                assert await session.fetchval("SELECT current_user") == "postgres"
                assert await session.fetchval("SELECT to_regclass('pg_temp.scratch')") is None
    finally:
        await admin_fetch(f'DROP ROLE IF EXISTS "{role}"')


async def test_call_leaving_a_transaction_open_does_not_break_the_store(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async with open_test_postgres_store(max_pool_size=2) as store:
        async with store.open_session(stored_call()) as session:
            await session.execute("BEGIN")
            await session.execute("SELECT 1")
        # Cancelled in the middle of a transaction block, too.
        with trio.move_on_after(0.05):
            async with store.open_session(stored_call(2)) as session, session.transaction():
                await session.execute("SELECT pg_sleep(5)")
        assert await store.pending(PendingQuery()) == []
        async with store.open_session(stored_call(3)) as session:
            assert await session.fetchval("SELECT 1") == 1


async def test_interface_errors_are_outages_only_once_the_connection_is_gone() -> None:
    async with open_test_postgres_store() as store:
        async with store.open_session(stored_call()) as session:
            # Misuse (a missing argument) raises asyncpg's InterfaceError on a healthy
            # connection: an error, not an outage.
            with pytest.raises(StoreError) as misuse:
                await session.fetchval("SELECT $1::int")
            assert type(misuse.value) is StoreError
            assert type(misuse.value.__cause__) is asyncpg.exceptions.InterfaceError
            # The same type from a connection the server closed (this session's own
            # backend) is an outage.
            pid = await session.fetchval("SELECT pg_backend_pid()")
            conn = await session.connection()
            await admin_fetch("SELECT pg_terminate_backend($1)", pid)
            await until(lambda: lost(conn), 10)
            with pytest.raises(StoreUnavailableError) as outage:
                await session.fetchval("SELECT 1")
            assert type(outage.value.__cause__) is asyncpg.exceptions.InterfaceError
        assert await store.pending(PendingQuery()) == []


async def test_statements_on_a_closed_pool_are_an_outage() -> None:
    async with trio_asyncio.open_loop() as loop:
        pool = await bridge(
            loop,
            "create pool",
            asyncpg.create_pool,
            pg_dsn(),
            min_size=1,
            max_size=1,
            server_settings={"application_name": f"fc-{random_schema()}"},
        )
        connections = Connections(pool, acquire_timeout=5.0)
        await bridge(loop, "close", pool.close)
        with pytest.raises(StoreUnavailableError) as outage:
            await bridge(loop, "pending", connections.run, "fetchval", "SELECT 1", [])
        assert type(outage.value.__cause__) is asyncpg.exceptions.InterfaceError


async def test_store_recovers_when_its_kept_connection_died_while_idle() -> None:
    schema = random_schema()
    name = f"fc-{schema}"  # only this store's pool connections (not its listener's)
    async with open_test_postgres_store(
        schema=schema, application_name=name, max_pool_size=3
    ) as store:
        await store.pending(PendingQuery())  # the store now keeps a connection
        killed = await admin_fetch(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1",
            name,
        )
        assert killed
        assert all(row[0] for row in killed)
        await trio.sleep(0.2)
        # The next statement takes a fresh connection instead of failing.
        assert await store.pending(PendingQuery()) == []


@pytest.mark.parametrize(
    "dsn",
    [
        "postgresql://postgres@127.0.0.1:notaport/test",
        "postgresql://postgres@127.0.0.1:70000/test",
    ],
)
async def test_malformed_dsn_is_a_clear_error(dsn: str) -> None:
    require_postgres()
    with pytest.raises(InvalidArgumentError, match="DSN"):
        async with open_postgres_store(dsn, schema=random_schema()):
            pass


async def test_exception_group_from_the_block_passes_through_unchanged() -> None:
    group = ExceptionGroup("mine", [ValueError("one")])
    with pytest.raises(ExceptionGroup) as info:
        async with open_test_postgres_store():
            raise group
    assert info.value is group

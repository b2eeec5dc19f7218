"""Review of issue 15: the dashboard over rows another program wrote, and its host check."""

from __future__ import annotations

import sqlite3
from contextlib import closing
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import trio

from trio_futurecalls import MemoryStore, NewCall, Store, StoredCall, open_sqlite_store
from trio_futurecalls.dashboard import dashboard_app, serve_dashboard
from trio_futurecalls.stores.sqlite._connection import to_micros

NOW = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)


async def test_an_unreadable_dead_letter_does_not_take_the_overview_down(tmp_path: Path) -> None:
    # One dead-letter row whose error is not UTF-8 (no CHECK can see that): the
    # dead-letter pages say so, but the overview (and its live fragment) still show
    # the queues, with the dead letters' count marked unknown.
    path = tmp_path / "calls.sqlite3"
    async with open_sqlite_store(path) as store:
        await store.schedule([NewCall(name="mail", payload="{}", due_at=NOW, scheduled_at=NOW)])
    with closing(sqlite3.connect(path, isolation_level=None)) as conn:
        at = to_micros(NOW)
        conn.execute(
            "INSERT INTO futurecalls_dead_letters (call_id, name, payload, due_at,"
            " scheduled_at, failed_at, error, attempts)"
            " VALUES (5, 'bad', '{}', ?, ?, ?, CAST(x'ff' AS TEXT), 0)",
            (at, at, at),
        )
    async with open_sqlite_store(path) as store:
        app = dashboard_app(store, clock=lambda: NOW)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as c:
            for page in ["/", "/overview/fragment"]:
                r = await c.get(page)
                assert r.status_code == 200, (page, r.text)
                assert 'data-class="mail"' in r.text
                assert 'id="total-dead">?<' in r.text
            r = await c.get("/dead-letters")
            assert r.status_code == 503
            assert "purge_dead_letters([1])" in r.text


async def test_a_dashboard_bound_to_another_loopback_address_answers_its_own_host() -> None:
    # 127.0.0.2 is a loopback address (so the host check is on): a browser sent to
    # http://127.0.0.2:port/ names that host, and must not be refused as a stranger.
    store = MemoryStore()
    async with trio.open_nursery() as nursery:
        port = await nursery.start(partial(serve_dashboard, store, host="127.0.0.2", port=0))
        async with httpx.AsyncClient(base_url=f"http://127.0.0.2:{port}") as c:
            page = await c.get("/")
            rebound = await c.get("/", headers={"host": f"attacker.example:{port}"})
        nursery.cancel_scope.cancel()
    assert page.status_code == 200, page.text
    assert rebound.status_code == 421


async def test_the_sign_in_form_reads_no_more_than_a_form() -> None:
    # /login answers before any token is checked: a huge body sent to it must not be
    # read into memory in full (actions stop at MAX_FORM_BYTES; so must sign-in).
    app = dashboard_app(MemoryStore(), token="right-token-123")
    chunk = b"x" * 65_536
    sent = 0
    replies: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        nonlocal sent
        sent += len(chunk)
        return {"type": "http.request", "body": chunk, "more_body": sent < 64 * 2**20}

    async def send(message: dict[str, Any]) -> None:
        replies.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/login",
        "raw_path": b"/login",
        "query_string": b"",
        "root_path": "",
        "headers": [
            (b"host", b"127.0.0.1:8470"),
            (b"origin", b"http://127.0.0.1:8470"),
            (b"content-type", b"application/x-www-form-urlencoded"),
        ],
        "client": ("127.0.0.1", 5000),
        "server": ("127.0.0.1", 8470),
    }
    await app(scope, receive, send)  # type: ignore[arg-type]
    assert sent <= 1 * 2**20, f"read {sent} bytes of a sign-in form"
    assert replies[0]["status"] in (403, 413)


async def test_a_payload_nested_past_the_recursion_limit_is_shown_as_stored(store: Store) -> None:
    # Text within every store's limits (200 KB) that another program wrote: valid JSON
    # nested 100 000 deep. Decoding it to indent it recurses too deep: the page shows
    # it as stored (as for text that is not JSON), never a 500.
    now = datetime.now(UTC).replace(microsecond=0)
    deep = "[" * 100_000 + "]" * 100_000
    (call_id,) = await store.schedule(
        [NewCall(name="deep", payload=deep, due_at=now, scheduled_at=now)]
    )
    stored = StoredCall(
        id=call_id + 1000,
        name="deep",
        payload=deep,
        due_at=now,
        identifier=None,
        scheduled_at=now,
        attempts=1,
    )
    letter = await store.dead_letter(stored, "RecursionError", now)
    assert letter is not None
    app = dashboard_app(store, clock=lambda: now)
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as c:
        for path in [f"/calls/{call_id}", f"/dead-letters/{letter}", f"/calls/{stored.id}"]:
            r = await c.get(path)
            assert r.status_code == 200, (path, r.status_code)
            assert "[[[[" in r.text

"""Every dashboard route, in process through httpx's ASGI transport, over a populated
memory store: what each page shows, and what it refuses (bad filters, unknown ids,
actions without a CSRF token or when read-only, hostile text in the store)."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from dashboard_data import HOSTILE_ERROR, HOSTILE_IDENTIFIER, HOSTILE_PAYLOAD, populate

from trio_futurecalls import InvalidArgumentError, MemoryStore, NewCall, StoreUnavailableError
from trio_futurecalls.dashboard import dashboard_app

NOW = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)
BASE = "http://127.0.0.1:8470"
ORIGIN = {"origin": BASE}
PAGES = ["/", "/overview/fragment", "/calls", "/dead-letters", "/recurring", "/workers"]


def client(app: Any) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=BASE)


@pytest.fixture
def store() -> MemoryStore:
    return MemoryStore()


@pytest.fixture
async def ids(store: MemoryStore) -> dict[str, int]:
    return await populate(store, NOW)


def app_of(store: MemoryStore, **options: Any) -> Any:
    return dashboard_app(store, clock=lambda: NOW, **options)


def cell(html: str, row: str, field: str) -> str:
    """The text of a data-field cell in the overview row of class ``row``."""
    block = html.split(f'<tr data-class="{row}">', 1)[1].split("</tr>", 1)[0]
    match = re.search(rf'data-field="{field}">(.*?)</td>', block, re.S)
    assert match, (row, field)
    return re.sub(r"<[^>]+>", "", match.group(1)).strip()


def csrf_of(html: str) -> str:
    match = re.search(r'name="csrf" value="([^"]+)"', html)
    assert match
    return match.group(1)


async def test_overview_shows_the_store_per_class(store: MemoryStore, ids: dict[str, int]) -> None:
    async with client(app_of(store)) as c:
        r = await c.get("/")
    assert r.status_code == 200
    html = r.text
    assert cell(html, "send-email", "pending") == "3"
    assert cell(html, "send-email", "due") == "1"
    assert cell(html, "report", "pending") == "2"
    assert cell(html, "report", "waiting") == "1"
    # Over a bare store, outcomes are not known here: a dash, not a made-up 0.
    assert cell(html, "send-email", "succeeded") == "—"
    assert 'id="total-running">2<' in html  # what the worker last reported
    assert 'id="total-dead">2<' in html
    assert "4 · cluster 5" in html  # the worker's limit and the cluster-wide one
    assert re.search(r'data-class="report">.*?paused', html, re.S)
    assert 'data-refresh="/overview/fragment"' in html
    assert "read-only" in html


async def test_every_page_answers(store: MemoryStore, ids: dict[str, int]) -> None:
    async with client(app_of(store)) as c:
        for path in [
            *PAGES,
            f"/calls/{ids['overdue']}",
            f"/calls/{ids['overdue']}?name=send-email",
            f"/dead-letters/{ids['dead']}",
            "/static/dashboard.js",
            "/static/dashboard.css",
        ]:
            r = await c.get(path)
            assert r.status_code == 200, path
            assert r.headers["x-frame-options"] == "DENY"
            assert "script-src 'self'" in r.headers["content-security-policy"]
            assert "<script>" not in r.text or path.endswith(".js")


async def test_fragment_is_the_table_alone(store: MemoryStore, ids: dict[str, int]) -> None:
    async with client(app_of(store)) as c:
        r = await c.get("/overview/fragment")
    assert "<html" not in r.text
    assert cell(r.text, "send-email", "pending") == "3"


async def test_times_are_relative_with_the_exact_time_on_hover(
    store: MemoryStore, ids: dict[str, int]
) -> None:
    async with client(app_of(store)) as c:
        r = await c.get("/calls?name=send-email")
    assert 'title="2030-01-01 09:00:00 UTC">3 h overdue</time>' in r.text
    assert 'title="2030-01-01 12:05:00 UTC">in 5 min</time>' in r.text
    assert ">in 2 h</time>" in r.text


async def test_hostile_text_is_escaped_everywhere(store: MemoryStore, ids: dict[str, int]) -> None:
    paths = [
        *PAGES,
        f"/calls/{ids['hostile']}",
        f"/dead-letters/{ids['dead']}",
        "/calls?identifier=" + httpx.QueryParams({"x": HOSTILE_IDENTIFIER})["x"],
    ]
    async with client(app_of(store, allow_actions=True)) as c:
        for path in paths:
            r = await c.get(path)
            assert "<script>alert" not in r.text, path
            assert "<img src=x" not in r.text, path
            assert "hunter2secret" not in r.text, path
        call = (await c.get(f"/calls/{ids['hostile']}")).text
        dead = (await c.get(f"/dead-letters/{ids['dead']}")).text
    assert "&lt;script&gt;alert(\\&#34;payload\\&#34;)&lt;/script&gt;" in call or (
        "&lt;script&gt;alert(&#34;payload&#34;)&lt;/script&gt;" in call
    )
    assert "&lt;img src=x onerror=alert(1)&gt;" in call
    # The full traceback on the dead letter's page (password hidden), the last line in
    # the list.
    assert "Traceback (most recent call last):" in dead
    assert "postgresql://app:***@db/prod" in dead
    assert HOSTILE_PAYLOAD not in dead
    assert HOSTILE_ERROR not in dead
    async with client(app_of(store)) as c:
        listing = (await c.get("/dead-letters")).text
    assert "RuntimeError: &lt;script&gt;alert(&#39;error&#39;)&lt;/script&gt;" in listing
    assert "Traceback" not in listing


async def test_store_password_never_shows(store: MemoryStore, ids: dict[str, int]) -> None:
    url = "postgresql://app:s3cr3t-pw@db.example/prod"
    async with client(app_of(store, store_label=url)) as c:
        for path in PAGES:
            r = await c.get(path)
            assert "s3cr3t-pw" not in r.text
        assert "postgresql://app:***@db.example/prod" in (await c.get("/")).text


async def test_pending_filters(store: MemoryStore, ids: dict[str, int]) -> None:
    async with client(app_of(store)) as c:
        by_identifier = (await c.get("/calls?identifier=user-2")).text
        window = (
            await c.get("/calls?due_after=2030-01-01T11:00&due_before=2030-01-01T13:00:00%2B00:00")
        ).text
        nothing = (await c.get("/calls?name=nobody")).text
    assert by_identifier.count('<td class="n"><a href="/calls/') == 1
    assert "user-2" in by_identifier
    # Due in the window: the report due 30 s ago, the send-email in 5 min, the waiting one.
    assert window.count('<td class="n"><a href="/calls/') == 3
    assert "No pending call matches." in nothing


async def test_pages_of_pending_calls(store: MemoryStore) -> None:
    await store.schedule(
        [
            NewCall(
                name="bulk", payload="null", due_at=NOW + timedelta(seconds=i), scheduled_at=NOW
            )
            for i in range(120)
        ]
    )
    async with client(app_of(store)) as c:
        first = (await c.get("/calls")).text
        third = (await c.get("/calls?name=bulk&page=3")).text
    assert first.count('<td class="n"><a href="/calls/') == 50
    assert 'href="?page=2" rel="next"' in first
    assert third.count('<td class="n"><a href="/calls/') == 20
    assert 'rel="next"' not in third
    assert 'href="?name=bulk&amp;page=2" rel="prev"' in third


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("name=not%20a%20name!", "call name"),
        ("due_after=yesterday", "due_after: not a time"),
        ("due_before=2030-13-01", "due_before: not a time"),
        ("page=0", "page must be from 1 to 200"),
        ("page=-1", "page must be a whole number"),
        ("page=abc", "page must be a whole number"),
        ("page=99999999999999999999999", "page must be a whole number"),
        ("page=201", "narrow the filters"),
        ("due_after=0001-01-01T00:00%2B14:00", "out of range"),
        ("due_before=9999-12-31T23:59:59-14:00", "out of range"),
        ("identifier=" + "x" * 5000, "identifier"),
    ],
)
async def test_bad_filters_are_400(
    store: MemoryStore, ids: dict[str, int], query: str, message: str
) -> None:
    async with client(app_of(store)) as c:
        r = await c.get(f"/calls?{query}")
    assert r.status_code == 400
    assert message in r.text


@pytest.mark.parametrize(
    "path",
    [
        "/calls/424242",
        "/calls/0",
        "/calls/99999999999999999999999999",
        "/dead-letters/424242",
        "/dead-letters/99999999999999999999999999",
        "/calls/abc",
        "/nowhere",
    ],
)
async def test_unknown_ids_are_404(store: MemoryStore, ids: dict[str, int], path: str) -> None:
    async with client(app_of(store)) as c:
        r = await c.get(path)
    assert r.status_code == 404
    assert "<html" in r.text


async def test_read_only_refuses_every_action(store: MemoryStore, ids: dict[str, int]) -> None:
    async with client(app_of(store)) as c:
        page = (await c.get("/dead-letters")).text
        assert "Requeue" not in page
        assert "Purge" not in page
        for action in (f"/dead-letters/{ids['dead']}/requeue", "/dead-letters/purge"):
            r = await c.post(action, data={"csrf": "x", "confirm": "all"}, headers=ORIGIN)
            assert r.status_code == 403
            assert "read-only" in r.text
    assert len(await store.dead_letters()) == 2


async def test_get_never_acts(store: MemoryStore, ids: dict[str, int]) -> None:
    async with client(app_of(store, allow_actions=True)) as c:
        r = await c.get(f"/dead-letters/{ids['dead']}/requeue")
        assert r.status_code == 405
        r = await c.request("DELETE", f"/dead-letters/{ids['dead']}")
        assert r.status_code == 405
    assert len(await store.dead_letters()) == 2


async def test_actions_need_the_csrf_token_and_same_origin(
    store: MemoryStore, ids: dict[str, int]
) -> None:
    path = f"/dead-letters/{ids['dead']}/requeue"
    async with client(app_of(store, allow_actions=True)) as c:
        token = csrf_of((await c.get("/dead-letters")).text)
        refused = [
            await c.post(path, headers=ORIGIN),
            await c.post(path, data={"csrf": "wrong"}, headers=ORIGIN),
            await c.post(path, data={"csrf": token}),  # no Origin nor Referer
            await c.post(path, data={"csrf": token}, headers={"origin": "http://evil.example"}),
            await c.post(path, data={"csrf": token}, headers={"origin": "null"}),
            await c.post(path, data={"csrf": token}, headers={"referer": "http://evil.example/x"}),
        ]
        assert [r.status_code for r in refused] == [403] * 6
        assert "CSRF" in refused[0].text
        assert len(await store.dead_letters()) == 2
        r = await c.post(path, data={"csrf": token}, headers={"referer": f"{BASE}/dead-letters"})
    assert r.status_code == 303
    new_id = int(r.headers["location"].rsplit("=", 1)[1])
    assert [d.id for d in await store.dead_letters()] == [ids["dead_other"]]
    assert new_id in {c.id for c in await store.pending(_query())}


def _query() -> Any:
    from trio_futurecalls import PendingQuery

    return PendingQuery(now=NOW)


async def test_requeue_and_purge_from_the_pages(store: MemoryStore, ids: dict[str, int]) -> None:
    async with client(app_of(store, allow_actions=True)) as c:
        token = csrf_of((await c.get(f"/dead-letters/{ids['dead']}")).text)
        r = await c.post(
            f"/dead-letters/{ids['dead']}/requeue",
            data={"csrf": token},
            headers=ORIGIN,
            follow_redirects=True,
        )
        assert r.status_code == 200
        assert "Requeued as call" in r.text
        again = await c.post(
            f"/dead-letters/{ids['dead']}/requeue", data={"csrf": token}, headers=ORIGIN
        )
        assert again.status_code == 404
        r = await c.post(
            f"/dead-letters/{ids['dead_other']}/purge",
            data={"csrf": token},
            headers=ORIGIN,
            follow_redirects=True,
        )
        assert "Purged 1 dead letter(s)." in r.text
        assert await store.dead_letters() == []
        refused = await c.post("/dead-letters/purge", data={"csrf": token}, headers=ORIGIN)
        assert refused.status_code == 400


async def test_purge_all(store: MemoryStore, ids: dict[str, int]) -> None:
    async with client(app_of(store, allow_actions=True)) as c:
        token = csrf_of((await c.get("/dead-letters")).text)
        r = await c.post(
            "/dead-letters/purge", data={"csrf": token, "confirm": "all"}, headers=ORIGIN
        )
    assert r.status_code == 303
    assert r.headers["location"] == "/dead-letters?purged=2"
    assert await store.dead_letters() == []


async def test_a_huge_form_is_refused(store: MemoryStore, ids: dict[str, int]) -> None:
    async with client(app_of(store, allow_actions=True)) as c:
        r = await c.post("/dead-letters/purge", content=b"x" * 100_000, headers=ORIGIN)
    assert r.status_code == 413


async def test_bearer_token_guards_every_route(store: MemoryStore, ids: dict[str, int]) -> None:
    token = "correct-horse-battery"
    async with client(app_of(store, token=token, allow_actions=True)) as c:
        r = await c.get("/")
        assert r.status_code == 303
        assert r.headers["location"] == "/login"
        assert (await c.get("/overview/fragment")).status_code == 303
        r = await c.post(f"/dead-letters/{ids['dead']}/requeue", headers=ORIGIN)
        assert r.status_code == 401
        assert (await c.get("/", headers={"authorization": "Bearer wrong"})).status_code == 303
        ok = await c.get("/", headers={"authorization": f"Bearer {token}"})
        assert ok.status_code == 200
        # A script with the bearer header needs no CSRF token (a browser cannot send it).
        r = await c.post(
            f"/dead-letters/{ids['dead']}/requeue", headers={"authorization": f"Bearer {token}"}
        )
        assert r.status_code == 303
        # A browser signs in once: the cookie holds no token.
        assert (await c.get("/login")).status_code == 200
        bad = await c.post("/login", data={"token": "nope"}, headers=ORIGIN)
        assert bad.status_code == 403
        r = await c.post("/login", data={"token": token}, headers=ORIGIN)
        assert r.status_code == 303
        assert token not in r.headers["set-cookie"]
        assert "httponly" in r.headers["set-cookie"].lower()
        assert "samesite=strict" in r.headers["set-cookie"].lower()
        assert (await c.get("/")).status_code == 200


async def test_loopback_dashboard_refuses_other_hosts(
    store: MemoryStore, ids: dict[str, int]
) -> None:
    app = app_of(store, allowed_hosts={"127.0.0.1", "localhost"})
    async with client(app) as c:
        assert (await c.get("/", headers={"host": "localhost:8470"})).status_code == 200
        assert (await c.get("/", headers={"host": "rebound.example:8470"})).status_code == 421


async def test_store_failure_is_a_503_page() -> None:
    class Down(MemoryStore):
        async def pending_counts(self, due_by: datetime) -> Any:
            raise StoreUnavailableError("database is down")

    async with client(app_of(Down())) as c:
        r = await c.get("/")
    assert r.status_code == 503
    assert "database is down" in r.text


def test_bad_options_are_refused() -> None:
    store = MemoryStore()
    with pytest.raises(InvalidArgumentError, match="Store or a Scheduler"):
        dashboard_app(object())  # type: ignore[arg-type]
    with pytest.raises(InvalidArgumentError, match="token"):
        dashboard_app(store, token="short")
    with pytest.raises(InvalidArgumentError, match="allow_actions"):
        dashboard_app(store, allow_actions="yes")  # type: ignore[arg-type]
    with pytest.raises(InvalidArgumentError, match="refresh_seconds"):
        dashboard_app(store, refresh_seconds=0)
    with pytest.raises(InvalidArgumentError, match="allowed_hosts"):
        dashboard_app(store, allowed_hosts="localhost")

"""The dashboard over every store (memory, SQLite, PostgreSQL when reachable): each
page reads what the store protocol offers, whatever the adapter."""

from __future__ import annotations

import re
from datetime import UTC, datetime

import httpx
from dashboard_data import populate

from trio_futurecalls import Store
from trio_futurecalls.dashboard import dashboard_app

NOW = datetime.now(UTC).replace(microsecond=0)


async def test_every_page_over_every_store(store: Store) -> None:
    ids = await populate(store, NOW)
    app = dashboard_app(store, clock=lambda: NOW)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as c:
        pages = {
            path: await c.get(path)
            for path in [
                "/",
                "/calls",
                f"/calls/{ids['overdue']}",
                f"/calls/{ids['waiting']}?name=report",
                "/dead-letters",
                f"/dead-letters/{ids['dead']}",
                "/recurring",
                "/workers",
            ]
        }
    for path, page in pages.items():
        assert page.status_code == 200, (path, page.text)
    overview = pages["/"].text
    row = overview.split('<tr data-class="send-email">', 1)[1].split("</tr>", 1)[0]
    assert re.search(r'data-field="pending">3<', row)
    assert re.search(r'data-field="due">1<', row)
    assert 'id="total-dead">2<' in overview
    assert "nightly-report" in pages["/recurring"].text
    assert "host-a:4242:abcd" in pages["/workers"].text
    assert "waiting for" in pages[f"/calls/{ids['waiting']}?name=report"].text

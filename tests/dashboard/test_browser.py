"""A real browser: headless Chromium loads a live dashboard (``futurecalls dashboard``
in a subprocess, over a populated SQLite store), checks the numbers it renders, sees
the overview update without a reload, clicks Requeue on a dead letter, and saves
screenshots under ``tests/artifacts/`` (git-ignored).

Every wait is for a condition, bounded by ``trio.fail_after``; no sleep is an assertion.
Skipped when Chromium is missing, except under CI (``.ci/run`` installs it).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest
import trio
from chromium_cdp import chromium_path, open_page
from dashboard_data import populate

from trio_futurecalls import NewCall, PendingQuery, open_sqlite_store

ARTIFACTS = Path(__file__).parents[1] / "artifacts"

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        chromium_path() is None and os.environ.get("CI") != "true",
        reason="needs Debian's chromium (apt-get install -y chromium)",
    ),
]


async def _read_line(process: trio.Process) -> str:
    assert process.stdout is not None
    data = b""
    while not data.endswith(b"\n"):
        chunk = await process.stdout.receive_some(4096)
        assert chunk, "the dashboard exited early"
        data += chunk
    return data.decode()


def _cell(name: str, field: str) -> str:
    return (
        f'(document.querySelector(\'tr[data-class="{name}"] '
        f'[data-field="{field}"]\') || {{}}).textContent'
    )


async def test_browser_overview_and_requeue(tmp_path: Path) -> None:
    path = tmp_path / "calls.sqlite3"
    now = datetime.now(UTC)
    async with open_sqlite_store(path) as store:
        ids = await populate(store, now)
    argv = [
        sys.executable,
        "-m",
        "trio_futurecalls",
        "--store",
        f"sqlite:///{path}",
        "dashboard",
        "--port",
        "0",
        "--allow-actions",
    ]
    dashboard = await trio.lowlevel.open_process(argv, stdout=subprocess.PIPE)
    try:
        with trio.fail_after(30):
            line = await _read_line(dashboard)
        assert "(actions allowed)" in line
        base = line.split()[2].rstrip("/")
        assert base.startswith("http://127.0.0.1:")
        async with open_page(tmp_path / "profile") as page:
            with trio.fail_after(40):
                await page.goto(f"{base}/")
                assert await page.evaluate(_cell("send-email", "pending")) == "3"
                assert await page.evaluate(_cell("send-email", "due")) == "1"
                assert await page.evaluate(_cell("report", "waiting")) == "1"
                assert await page.evaluate("document.getElementById('total-dead').textContent") == (
                    "2"
                )
                hover = await page.evaluate(
                    "document.querySelector('tr[data-class=\"report\"] time').title"
                )
                assert hover.endswith(" UTC")
                # A call scheduled by another process shows without a reload.
                await page.evaluate("window.notReloaded = true")
                async with open_sqlite_store(path) as store:
                    await store.schedule(
                        [NewCall(name="send-email", payload="{}", due_at=now, scheduled_at=now)]
                    )
                await page.wait_for(_cell("send-email", "pending"), "4")
                assert await page.evaluate("window.notReloaded") is True
                await page.screenshot(ARTIFACTS / "dashboard-overview.png")

                await page.goto(f"{base}/dead-letters")
                rows = "document.querySelectorAll('tr[data-dead-letter]').length"
                assert await page.evaluate(rows) == 2
                error = await page.evaluate(
                    f'document.querySelector(\'tr[data-dead-letter="{ids["dead"]}"] '
                    "td.error').textContent"
                )
                assert error == "RuntimeError: <script>alert('error')</script>"
                # The hostile text is text: no element came from it.
                assert await page.evaluate("document.querySelectorAll('main script').length") == 0
                await page.screenshot(ARTIFACTS / "dashboard-dead-letters.png")

                page.forget_events()
                await page.evaluate(
                    f'document.querySelector(\'tr[data-dead-letter="{ids["dead"]}"] '
                    "button.requeue').click()"
                )
                await page.wait_event("Page.loadEventFired")
                done = await page.evaluate("document.getElementById('done').textContent")
                assert done.startswith("Requeued as call ")
                new_id = int(done.removeprefix("Requeued as call ").rstrip("."))
                assert await page.evaluate(rows) == 1
        async with open_sqlite_store(path) as store:
            assert [d.id for d in await store.dead_letters()] == [ids["dead_other"]]
            pending = await store.pending(PendingQuery(now=datetime.now(UTC)))
            assert new_id in {c.id for c in pending}
    finally:
        if dashboard.returncode is None:
            dashboard.send_signal(signal.SIGTERM)
        with trio.move_on_after(10, shield=True):
            await dashboard.wait()
        if dashboard.returncode is None:
            dashboard.kill()
    assert dashboard.returncode == 0

"""The dashboard over a running scheduler (its statistics beside the store's numbers,
its running calls), in process under ``autojump_clock``; and ``serve_dashboard`` on a
real socket, with ``/metrics`` on the same server (real time, quick).

(``/metrics`` is scraped over the socket only: prometheus_client's app reads the request
once, which leaves httpx's in-process request stream unclosed, a warning under
``filterwarnings = error``.)"""

from __future__ import annotations

import re
from functools import partial
from typing import Any

import httpx
import pytest
import trio
import trio.testing

from trio_futurecalls import (
    Adaptive,
    FutureCall,
    InvalidArgumentError,
    MemoryStore,
    open_scheduler,
)
from trio_futurecalls.dashboard import dashboard_app, serve_dashboard
from trio_futurecalls.testing import trio_wall_clock


class Quick(FutureCall):
    name = "quick"
    max_concurrent = 3

    async def invoke(self, session: Any, payload: Any) -> None:
        await trio.sleep(0.2)


class Boom(FutureCall):
    name = "boom"

    async def invoke(self, session: Any, payload: Any) -> None:
        raise RuntimeError("boom")


class Block(FutureCall):
    name = "block"
    max_concurrent = None
    release = trio.Event()

    async def invoke(self, session: Any, payload: Any) -> None:
        await Block.release.wait()


def cell(html: str, row: str, field: str) -> str:
    block = html.split(f'<tr data-class="{row}">', 1)[1].split("</tr>", 1)[0]
    match = re.search(rf'data-field="{field}">(.*?)</td>', block, re.S)
    assert match
    return re.sub(r"<[^>]+>", "", match.group(1)).strip()


async def test_overview_over_a_scheduler(autojump_clock: trio.testing.MockClock) -> None:
    Block.release = trio.Event()
    clock = trio_wall_clock()
    store = MemoryStore()
    async with open_scheduler(store, [Quick, Boom, Block], clock=clock) as scheduler:
        for _ in range(4):
            await scheduler.schedule(Quick, None)
        await scheduler.schedule(Boom, None)
        blocked = await scheduler.schedule(Block, None, identifier="held")
        await scheduler.schedule(Quick, None, delay=3600)
        await trio.sleep(5)
        app = dashboard_app(scheduler)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as c:
            html = (await c.get("/")).text
            workers = (await c.get("/workers")).text
            call = (await c.get(f"/calls/{blocked}")).text
        Block.release.set()
    assert cell(html, "quick", "succeeded") == "4"
    assert cell(html, "quick", "pending") == "1"
    assert cell(html, "boom", "failed") == "1"
    assert cell(html, "block", "running") == "1"
    assert 'id="total-running">1<' in html
    assert "No scheduler runs in this process" not in html
    assert re.search(r'data-class="quick">.*?<td>3</td>', html, re.S)  # its limit
    assert "Running in this process" in call
    assert "held" in call
    assert f'<a href="/calls/{blocked}">{blocked}</a>' in workers


async def test_an_adaptive_limit_shows_the_limit_in_force(
    autojump_clock: trio.testing.MockClock,
) -> None:
    class Tuned(FutureCall):
        name = "tuned"
        max_concurrent = Adaptive(min=2, max=8)

        async def invoke(self, session: Any, payload: Any) -> None:
            pass

    async with open_scheduler(
        MemoryStore(), [Tuned], clock=trio_wall_clock(), max_concurrent=Adaptive(3, 50)
    ) as scheduler:
        transport = httpx.ASGITransport(app=dashboard_app(scheduler))
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as c:
            html = (await c.get("/")).text
    assert re.search(r'data-class="tuned">.*?<td>2 \(adaptive, max 8\)</td>', html, re.S)
    assert "global limit <b>3 (adaptive, max 50)</b>" in html


async def test_serve_dashboard_on_a_socket() -> None:
    store = MemoryStore()
    async with open_scheduler(store, [Quick]) as scheduler, trio.open_nursery() as nursery:
        await scheduler.schedule(Quick, None, delay=60)
        port = await nursery.start(partial(serve_dashboard, scheduler, port=0))
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as c:
            page = await c.get("/")
            metrics = await c.get("/metrics")
            rebound = await c.get("/", headers={"host": f"attacker.example:{port}"})
        with pytest.raises(OSError, match="in use"):
            await nursery.start(partial(serve_dashboard, store, port=port))
        nursery.cancel_scope.cancel()
    assert page.status_code == 200
    assert "Overview" in page.text
    assert metrics.status_code == 200
    assert "futurecalls_store_up 1.0" in metrics.text
    assert 'futurecalls_calls_pending{call_class="quick"} 1.0' in metrics.text
    assert rebound.status_code == 421


async def test_serve_dashboard_checks_its_arguments() -> None:
    store = MemoryStore()
    with pytest.raises(InvalidArgumentError, match="port"):
        await serve_dashboard(store, port=70000)
    with pytest.raises(InvalidArgumentError, match="port"):
        await serve_dashboard(store, port=True)

"""A minimal Chrome DevTools Protocol client for the browser test, over trio-websocket.

Headless Chromium (Debian's ``chromium``) is started with ``--remote-debugging-port=0``;
it writes the port it picked to ``DevToolsActivePort`` in its profile folder. One
websocket to the browser carries every command: a page is attached in "flat" mode, so
its commands carry a ``sessionId``. Events are kept until a test waits for one, so
that an event that arrives before the answer to the command causing it is not lost.

Why not Selenium or Playwright: Playwright downloads its own browser (not possible
here), and Selenium needs chromium-driver beside a matching chromium; the protocol
itself is small and trio-websocket is Trio-native.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import trio
from trio_websocket import WebSocketConnection, open_websocket_url


def chromium_path() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


class Page:
    """One browser tab, driven over the browser's websocket."""

    def __init__(self, ws: WebSocketConnection) -> None:
        self._ws = ws
        self._next_id = 0
        self._events: list[dict[str, Any]] = []
        self.session: str | None = None

    async def _receive(self) -> dict[str, Any]:
        message: dict[str, Any] = json.loads(await self._ws.get_message())
        return message

    async def send(self, method: str, **params: Any) -> dict[str, Any]:
        """Send a command (to the attached page, if any); return its result."""
        self._next_id += 1
        message: dict[str, Any] = {"id": self._next_id, "method": method, "params": params}
        if self.session is not None:
            message["sessionId"] = self.session
        await self._ws.send_message(json.dumps(message))
        while True:
            answer = await self._receive()
            if answer.get("id") == self._next_id:
                if "error" in answer:
                    raise RuntimeError(f"{method}: {answer['error']}")
                result: dict[str, Any] = answer.get("result", {})
                return result
            if "method" in answer:
                self._events.append(answer)

    def forget_events(self) -> None:
        self._events.clear()

    async def wait_event(self, method: str) -> dict[str, Any]:
        """The first event named ``method`` since :meth:`forget_events`."""
        while True:
            for index, event in enumerate(self._events):
                if event["method"] == method:
                    del self._events[index]
                    return event
            self._events.append(await self._receive())

    async def goto(self, url: str) -> None:
        self.forget_events()
        await self.send("Page.navigate", url=url)
        await self.wait_event("Page.loadEventFired")

    async def evaluate(self, expression: str) -> Any:
        result = await self.send("Runtime.evaluate", expression=expression, returnByValue=True)
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression}: {result['exceptionDetails']}")
        return result["result"].get("value")

    async def wait_for(self, expression: str, expected: Any) -> None:
        """Evaluate ``expression`` until it gives ``expected`` (the caller bounds the
        time with ``trio.fail_after``)."""
        while (value := await self.evaluate(expression)) != expected:
            del value
            await trio.sleep(0.05)

    async def screenshot(self, path: Path) -> None:
        result = await self.send("Page.captureScreenshot", format="png")
        await trio.Path(path.parent).mkdir(parents=True, exist_ok=True)
        await trio.Path(path).write_bytes(base64.b64decode(result["data"]))


@asynccontextmanager
async def open_page(profile: Path, width: int = 1280, height: int = 760) -> AsyncIterator[Page]:
    """Start headless Chromium with a fresh ``profile`` folder; yield a blank page."""
    binary = chromium_path()
    assert binary is not None
    argv = [
        binary,
        "--headless",
        "--no-sandbox",  # the tests run as root
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--no-first-run",
        "--no-default-browser-check",
        "--disable-extensions",
        "--hide-scrollbars",
        f"--window-size={width},{height}",
        "--remote-debugging-address=127.0.0.1",
        "--remote-debugging-port=0",
        f"--user-data-dir={profile}",
        "about:blank",
    ]
    env = {**os.environ, "HOME": str(profile)}
    process = await trio.lowlevel.open_process(
        argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env
    )
    try:
        active = trio.Path(profile / "DevToolsActivePort")
        lines: list[str] = []
        with trio.fail_after(30):
            # Chromium writes the file when it listens; there is nothing to wait on but it.
            while len(lines) < 2:
                await trio.sleep(0.05)
                if await active.exists():
                    lines = (await active.read_text()).splitlines()
        port, path = lines[:2]
        async with open_websocket_url(f"ws://127.0.0.1:{port}{path}") as ws:
            page = Page(ws)
            target = await page.send("Target.createTarget", url="about:blank")
            attached = await page.send(
                "Target.attachToTarget", targetId=target["targetId"], flatten=True
            )
            page.session = attached["sessionId"]
            await page.send("Page.enable")
            await page.send("Runtime.enable")
            yield page
            page.session = None
            await page.send("Browser.close")
    finally:
        with trio.move_on_after(10, shield=True):
            await process.wait()
        if process.returncode is None:
            process.kill()
            with trio.CancelScope(shield=True):
                await process.wait()

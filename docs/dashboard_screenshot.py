"""Make docs/dashboard.png, the README's screenshot of the dashboard.

A scheduler over a memory store runs a few classes for a couple of seconds (some calls
fail and become dead letters, one class is paused, some calls are due later); then
the dashboard serves it and headless Chromium (Debian's ``chromium``) takes the
picture. Run from the repo root:  .venv/bin/python docs/dashboard_screenshot.py
"""

from __future__ import annotations

import logging
import random
import shutil
import sys
import tempfile
from functools import partial
from pathlib import Path
from typing import Any

import trio

from trio_futurecalls import FutureCall, MemoryStore, open_scheduler
from trio_futurecalls.dashboard import serve_dashboard

OUT = Path(__file__).parent / "dashboard.png"


class SendEmail(FutureCall):
    name = "send-email"
    max_concurrent = 4

    async def invoke(self, session: Any, payload: Any) -> None:
        await trio.sleep(random.uniform(0.02, 0.2))


class Charge(FutureCall):
    name = "charge-card"
    max_concurrent = 2

    async def invoke(self, session: Any, payload: Any) -> None:
        await trio.sleep(random.uniform(0.05, 0.3))
        if payload["n"] % 7 == 0:
            raise RuntimeError("card declined")


class Report(FutureCall):
    name = "nightly-report"

    async def invoke(self, session: Any, payload: Any) -> None:
        await trio.sleep(30)


class Newsletter(FutureCall):
    name = "newsletter"

    async def invoke(self, session: Any, payload: Any) -> None:
        await trio.sleep(0.01)


async def main() -> None:
    random.seed(7)
    logging.getLogger("trio_futurecalls").setLevel(logging.CRITICAL)  # failures are the point
    store = MemoryStore()
    calls = [SendEmail, Charge, Report, Newsletter]
    async with open_scheduler(store, calls, max_concurrent=20) as scheduler:
        await scheduler.pause(Newsletter)
        for n in range(60):
            await scheduler.schedule(SendEmail, {"to": f"user{n}@example.com"})
        for n in range(30):
            await scheduler.schedule(Charge, {"n": n})
        for n in range(12):
            await scheduler.schedule(SendEmail, {"to": "later"}, delay=300 + 600 * n)
            await scheduler.schedule(Newsletter, {"issue": n})
        await scheduler.schedule(Report, None)
        await scheduler.schedule(Report, None, delay=3600 * 6)
        await trio.sleep(2.5)
        async with trio.open_nursery() as nursery:
            port = await nursery.start(partial(serve_dashboard, scheduler, port=0))
            chromium = shutil.which("chromium")
            assert chromium, "apt-get install -y chromium"
            with tempfile.TemporaryDirectory() as profile:
                argv = [
                    chromium,
                    "--headless",
                    "--no-sandbox",
                    "--disable-gpu",
                    "--hide-scrollbars",
                    f"--user-data-dir={profile}",
                    "--window-size=1200,400",
                    f"--screenshot={OUT}",
                    f"http://127.0.0.1:{port}/",
                ]
                await trio.run_process(argv, capture_stdout=True, capture_stderr=True)
            nursery.cancel_scope.cancel()
        await scheduler.shutdown(grace_period=0)
    print(f"wrote {OUT} ({OUT.stat().st_size} bytes)", file=sys.stderr)


if __name__ == "__main__":
    trio.run(main)

"""A web app that schedules future calls from its request handlers.

Starlette served by Hypercorn's Trio worker; the scheduler runs in the app's lifespan
(started before the first request, shut down gracefully after the last), so a
request handler only stores a call and answers at once. ``POST /signup`` with
``{"email": "...", "delay": 0}`` schedules a welcome email; ``GET /sent`` lists what
was sent by this process.

SIGINT or SIGTERM (Ctrl-C, ``docker stop``) stops Hypercorn from accepting requests,
then the lifespan ends: running calls get the grace period, and calls not yet due
stay in the store for the next start.

Run it with:  python examples/webapp.py --port 8000
Then:         curl -X POST localhost:8000/signup -d '{"email": "ada@example.com"}'
              curl localhost:8000/sent
(needs the ``dashboard`` extra, or ``pip install starlette 'hypercorn[trio]'``.)
"""

from __future__ import annotations

import argparse
import logging
import signal
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import attrs
import trio
from hypercorn.config import Config
from hypercorn.trio import serve
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from trio_futurecalls import FutureCall, Scheduler, open_scheduler, open_store

SENT: list[str] = []


@attrs.frozen
class Welcome:
    email: str


class SendWelcome(FutureCall):
    name = "send-welcome"
    max_concurrent = 5
    payload_type = Welcome

    async def invoke(self, session: Any, payload: Welcome) -> None:
        await trio.sleep(0.05)  # talk to the mail server here
        SENT.append(payload.email)
        logging.getLogger("webapp").info("sent a welcome email to %s", payload.email)


def create_app(store_url: str) -> Starlette:
    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[dict[str, Scheduler]]:
        # The lifespan enters and leaves in one task, so the scheduler's nursery is
        # opened and closed there: structured concurrency holds across requests.
        async with open_store(store_url) as store, open_scheduler(store, [SendWelcome]) as s:
            yield {"scheduler": s}  # each request sees it as request.state.scheduler

    async def signup(request: Request) -> JSONResponse:
        try:
            body = await request.json()
            email, delay = body["email"], float(body.get("delay", 0))
        except (ValueError, KeyError, TypeError):
            return JSONResponse({"error": 'send {"email": "...", "delay": seconds}'}, 400)
        scheduler: Scheduler = request.state.scheduler
        call_id = await scheduler.schedule(SendWelcome, Welcome(email=email), delay=delay)
        return JSONResponse({"call_id": call_id}, status_code=202)

    async def sent(request: Request) -> JSONResponse:
        return JSONResponse(SENT)

    routes = [Route("/signup", signup, methods=["POST"]), Route("/sent", sent)]
    return Starlette(routes=routes, lifespan=lifespan)


async def main(port: int, store_url: str) -> None:
    config = Config()
    config.bind = [f"127.0.0.1:{port}"]
    config.accesslog = None
    config.errorlog = "-"  # Hypercorn's "Running on http://..." line, on stderr

    async def until_signal() -> None:
        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async for _ in signals:
                return

    await serve(create_app(store_url), config, shutdown_trigger=until_signal)  # type: ignore[arg-type]


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--store", default="sqlite:///webapp.sqlite3", help="store URL")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")
    trio.run(main, args.port, args.store)

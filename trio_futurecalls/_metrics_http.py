"""The exporter's HTTP side: the scrape endpoint as an ASGI app, served by Hypercorn.

:func:`scrape_app` wraps ``prometheus_client``'s ASGI app: before each scrape it awaits
the collector's refresh (a store query for the queue lengths), answers 405 for methods
other than GET and HEAD and 404 for paths other than ``/metrics`` and ``/``, sends a
``Content-Length``, and turns a failure into a logged 500 (a bug here must never take
down the program that runs the scheduler).

:func:`serve_asgi` serves an ASGI app with Hypercorn's Trio worker, in the caller's
nursery: no access log, Hypercorn's own messages on the ``trio_futurecalls.metrics``
logger (its start-up banner at DEBUG), and stopped at once when the caller's scope is
cancelled (connections kept alive by clients included). It is not tied to the metrics
app, so other ASGI apps (a dashboard) can be mounted beside it on the same server.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any, Final

import trio
from hypercorn.config import Config, Sockets
from hypercorn.logging import Logger
from hypercorn.trio import serve
from hypercorn.typing import (
    ASGIFramework,
    ASGIReceiveCallable,
    ASGISendCallable,
    ASGISendEvent,
    HTTPResponseStartEvent,
    Scope,
)
from prometheus_client import CollectorRegistry, make_asgi_app

from ._util import raise_unwrapped

__all__ = ["scrape_app", "serve_asgi"]

_log = logging.getLogger("trio_futurecalls.metrics")

_PATHS: Final = ("/metrics", "/")
_METHODS: Final = ("GET", "HEAD")


async def _send_text(send: ASGISendCallable, status: int, message: str) -> None:
    body = message.encode() + b"\n"
    headers = [(b"content-type", b"text/plain; charset=utf-8"), _content_length(body)]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body, "more_body": False})


def _content_length(body: bytes) -> tuple[bytes, bytes]:
    return (b"content-length", str(len(body)).encode("ascii"))


async def _lifespan(receive: ASGIReceiveCallable, send: ASGISendCallable) -> None:
    """Nothing to start or stop, but answering keeps Hypercorn from warning about it."""
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


def scrape_app(
    registry: CollectorRegistry, refresh: Callable[[], Awaitable[object]]
) -> ASGIFramework:
    """An ASGI app serving ``registry`` at ``/metrics`` (and ``/``), after ``refresh()``."""
    metrics = make_asgi_app(registry)

    async def app(scope: Scope, receive: ASGIReceiveCallable, send: ASGISendCallable) -> None:
        if scope["type"] == "lifespan":
            await _lifespan(receive, send)
            return
        if scope["type"] == "websocket":  # closing before accepting: a 403 answer
            await send({"type": "websocket.close", "code": 1000, "reason": None})
            return
        if scope["method"] not in _METHODS:
            await _send_text(send, 405, "use GET")
            return
        if scope["path"] not in _PATHS:
            await _send_text(send, 404, "not found; try /metrics")
            return
        sent = False
        start: list[HTTPResponseStartEvent] = []

        async def send_with_length(message: ASGISendEvent) -> None:
            # prometheus_client sends its body in one piece: hold the start until then.
            nonlocal sent
            if message["type"] == "http.response.start":
                start.append(message)
                return
            if message["type"] == "http.response.body" and start:
                head = start.pop()
                if not message.get("more_body", False):
                    length = _content_length(message["body"])
                    head = {**head, "headers": [*head["headers"], length]}
                sent = True
                await send(head)
            sent = True
            await send(message)

        try:
            await refresh()
            await metrics(scope, receive, send_with_length)
        except Exception:
            _log.exception("metrics: could not answer a scrape")
            if not sent:
                await _send_text(send, 500, "internal error")

    return app


class _QuietLogger(Logger):
    """Hypercorn's logger with its INFO messages ("Running on ...") sent at DEBUG."""

    async def info(self, message: str, *args: Any, **kwargs: Any) -> None:
        await self.debug(message, *args, **kwargs)


class _Config(Config):
    """Hypercorn's configuration, quiet, serving sockets that are already bound.

    The sockets are bound by ``trio.open_tcp_listeners`` (every address of ``host``, the
    same errors as any Trio server) rather than by Hypercorn, which leaks its socket (a
    ``ResourceWarning``) when the bind fails, e.g. for a port in use.
    """

    def __init__(self, sockets: list[socket.socket]) -> None:
        super().__init__()
        self._bound = sockets
        self.accesslog = None
        self.errorlog = _log  # a Logger: Hypercorn adds no handler of its own
        self.logger_class = _QuietLogger

    def create_sockets(self) -> Sockets:
        return Sockets(secure_sockets=[], insecure_sockets=self._bound, quic_sockets=[])


def _as_is(exc: BaseException) -> BaseException:
    return exc


async def serve_asgi(
    app: ASGIFramework,
    *,
    host: str,
    port: int,
    what: str,
    path: str = "/",
    task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve ``app`` at ``http://host:port`` until cancelled; started with the bound port.

    Logs "serving ``what`` on" the URL (with ``path``) once listening. Errors reach the
    caller unwrapped (an ``OSError`` for a port in use, not a group around it).
    """
    listeners = await trio.open_tcp_listeners(port, host=host)
    # Hypercorn takes standard-library sockets; no checkpoint between these lines.
    sockets = [socket.socket(fileno=listener.socket.detach()) for listener in listeners]
    try:
        bound: int = sockets[0].getsockname()[1]
        # No graceful shutdown: cancelling the caller's scope stops everything at once,
        # and Hypercorn's trigger only has to never fire.
        server = partial(serve, app, _Config(sockets), shutdown_trigger=trio.sleep_forever)
        async with trio.open_nursery() as nursery:
            await nursery.start(server)
            url_host = f"[{host}]" if ":" in host else host
            _log.info("serving %s on http://%s:%d%s", what, url_host, bound, path)
            task_status.started(bound)
    except BaseExceptionGroup as group:
        raise_unwrapped(group, None, _as_is)
    finally:
        for sock in sockets:
            sock.close()

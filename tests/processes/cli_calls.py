"""Call classes for the CLI tests (``futurecalls worker cli_calls:CALLS``).

Payloads are JSON objects naming a directory where the calls leave marker files, so
the test process can see what a worker subprocess did.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import attrs
import trio

from trio_futurecalls import FutureCall


def _mark(payload: dict[str, Any], what: str) -> None:
    marker = Path(payload["dir"]) / f"{payload.get('tag', 'call')}.{what}"
    marker.write_text(what)


class Echo(FutureCall):
    """Leaves ``<tag>.done``."""

    name = "cli-echo"
    max_concurrent = 4

    async def invoke(self, session: Any, payload: dict[str, Any]) -> None:
        _mark(payload, "done")


class Slow(FutureCall):
    """Leaves ``<tag>.started``, sleeps ``seconds``, leaves ``<tag>.finished``.

    When cancelled it leaves ``<tag>.cancelled`` (and lets the cancellation through).
    """

    name = "cli-slow"
    max_concurrent = 2

    async def invoke(self, session: Any, payload: dict[str, Any]) -> None:
        _mark(payload, "started")
        try:
            await trio.sleep(payload["seconds"])
        except trio.Cancelled:
            _mark(payload, "cancelled")
            raise
        _mark(payload, "finished")


@attrs.frozen
class Point:
    x: int
    y: int


class Typed(FutureCall):
    """Takes a ``Point``; other payloads no longer decode (they become dead letters)."""

    name = "cli-typed"
    payload_type = Point

    async def invoke(self, session: Any, payload: Point) -> None:
        pass


class Fail(FutureCall):
    """Always raises."""

    name = "cli-fail"

    async def invoke(self, session: Any, payload: Any) -> None:
        raise RuntimeError("cli-fail always fails")


#: What a call's failure may say: connection strings, with their passwords.
LEAKED = (
    "could not connect to postgresql://app:hunter22@db/prod "
    "(nor with host=db password=hunter33&x dbname=prod)"
)


class Leaky(FutureCall):
    """Fails with a message that holds two connection strings."""

    name = "cli-leaky"

    async def invoke(self, session: Any, payload: Any) -> None:
        raise RuntimeError(LEAKED)


CALLS = [Echo, Slow, Typed, Fail]
LEAKY_CALLS = [Leaky]
NOT_CALLS = ["not a class"]

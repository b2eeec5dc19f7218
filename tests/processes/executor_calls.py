"""PROCESS call classes for the executor tests: importable by module name, as the
worker processes import them (a PROCESS class cannot live inside a test function).

Each writes what it saw to the file its payload names, so the test (another process)
can read it back.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any, ClassVar

import attrs

from trio_futurecalls import Delivery, Executor, FixedBackoff, FutureCall


def _write(path: str, **fields: Any) -> None:
    Path(path).write_text(json.dumps({"pid": os.getpid(), **fields}))


def burn(n: int) -> int:
    """Pure-Python CPU work (also the benchmark's)."""
    total = 0
    for i in range(n):
        total = (total + i * i) % 1_000_003
    return total


def pid_and_sum(a: int, b: int) -> tuple[int, int]:
    """A module-level function for ``to_process``."""
    return os.getpid(), a + b


@attrs.frozen
class Point:
    x: int
    y: int


class Crunch(FutureCall):
    name = "crunch"
    executor = Executor.PROCESS
    max_concurrent = None

    def run(self, payload: dict[str, Any]) -> None:
        _write(payload["out"], result=burn(payload["n"]), attempt=self.info.attempt)


class Sleeper(FutureCall):
    """Writes its pid, then sleeps (the test kills it by timeout or shutdown)."""

    name = "sleeper"
    executor = Executor.PROCESS
    timeout: ClassVar[float | None] = 1.0

    def run(self, payload: dict[str, Any]) -> None:
        _write(payload["out"])
        time.sleep(payload["sleep"])


class Failing(FutureCall):
    name = "failing"
    executor = Executor.PROCESS
    delivery = Delivery.AT_LEAST_ONCE
    max_attempts = 3
    no_retry_on = (KeyError,)
    retry_backoff = FixedBackoff(0.01)

    def run(self, payload: dict[str, Any]) -> None:
        _write(payload["out"] + f".{self.info.attempt}")
        if payload["kind"] == "key":
            raise KeyError("no retry for this one")
        if payload["kind"] == "unpicklable":
            error = ValueError("cannot cross")
            error.handle = lambda: None  # type: ignore[attr-defined]
            raise error
        if payload["kind"] == "exit":
            os._exit(3)  # the worker process dies under the call
        raise ValueError(f"boom {payload['kind']}")


class Typed(FutureCall):
    name = "typed"
    executor = Executor.PROCESS
    payload_type = Point

    def run(self, payload: Point) -> None:
        assert isinstance(payload, Point), payload
        assert self.info.identifier is not None
        _write(self.info.identifier, x=payload.x, y=payload.y, name=self.info.name)


class Napper(Sleeper):
    """A Sleeper without a timeout (stopped by cancel or shutdown only)."""

    name = "napper"
    timeout = None

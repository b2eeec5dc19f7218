"""Waiting and looking in the executor tests: what they wait for happens in threads
and worker processes, which no Trio event reports."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import trio


async def wait_for(condition: Callable[[], bool], limit: float = 30.0) -> None:
    """Poll ``condition`` until true (a hang fails the test after ``limit`` s)."""
    with trio.fail_after(limit):
        while not condition():  # noqa: ASYNC110
            await trio.sleep(0.01)


def read(path: Path) -> dict[str, Any]:
    """The JSON a call wrote to ``path``."""
    result: dict[str, Any] = json.loads(path.read_text())
    return result


def alive(pid: int) -> bool:
    """Not dead nor a zombie (a killed child not yet reaped by its parent)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat")
    return stat.exists() and stat.read_text().split(") ")[1][0] != "Z"

"""PROCESS call classes for the executor review tests (importable by module name:
the worker processes import them)."""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from trio_futurecalls import Executor, FutureCall


class Doze(FutureCall):
    """Writes its pid to the file its payload names, then sleeps. Two may run at
    once (the pool, not the class limit, makes the second wait)."""

    name = "doze"
    executor = Executor.PROCESS
    max_concurrent = 2

    def run(self, payload: dict[str, Any]) -> None:
        Path(payload["out"]).write_text(json.dumps({"pid": os.getpid()}))
        time.sleep(payload["sleep"])


def getpid() -> int:
    """A module-level function for ``to_process``."""
    return os.getpid()


class Exits(FutureCall):
    """Its run calls sys.exit, as a script's code or a command-line library does."""

    name = "exits"
    executor = Executor.PROCESS

    def run(self, payload: Any) -> None:
        sys.exit(payload)

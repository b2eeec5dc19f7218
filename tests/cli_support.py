"""Running ``futurecalls`` in process for the CLI tests: what a run printed, and the
runner behind the ``cli`` fixture (``conftest.py``)."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import attrs
import pytest

from trio_futurecalls.cli import main


@attrs.frozen
class Result:
    rc: int
    out: str
    err: str

    def json(self) -> Any:
        return json.loads(self.out)

    def table(self) -> list[list[str]]:
        """The printed table's lines, cut at runs of two or more spaces."""
        return [re.split(r" {2,}", line) for line in self.out.splitlines()]


def cli_runner(db: Path, capsys: pytest.CaptureFixture[str]) -> Callable[..., Result]:
    """``run(*args, rc=0)``: ``futurecalls --store sqlite:///db *args``, its exit code
    checked against ``rc``."""

    def run(*args: str, rc: int = 0) -> Result:
        try:
            code = main(["--store", f"sqlite:///{db}", *args])
        except SystemExit as exc:  # argparse's own usage errors
            code = exc.code if isinstance(exc.code, int) else -1
        out, err = capsys.readouterr()
        assert code == rc, f"futurecalls {args}: exit {code}\n{err}"
        return Result(code, out, err)

    return run

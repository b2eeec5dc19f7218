"""The examples run as a newcomer runs them, and say what they promise."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

EXAMPLES = Path(__file__).parents[2] / "examples"


def test_recurring_example_runs_each_tick_once() -> None:
    done = subprocess.run(
        [sys.executable, str(EXAMPLES / "recurring.py")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[-1] == "every tick ran once"
    assert sum("every-1s tick" in line for line in lines) >= 4
    assert sum("cron-2s tick" in line for line in lines) >= 2

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


def test_dependencies_example_runs_in_order_and_stops_at_the_failure() -> None:
    done = subprocess.run(
        [sys.executable, str(EXAMPLES / "dependencies.py")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    said = [line.split(maxsplit=1)[1] for line in done.stdout.splitlines() if line.startswith("  ")]
    assert said[:3] == ["extract", "transform", "load"]
    assert sorted(said[3:8]) == [f"part {k}" for k in range(1, 6)]
    assert said[8:10] == ["report", "fetch"]
    assert said[10] == "dead letter: RuntimeError: parse failed"
    assert said[11].startswith("dead letter: prerequisite")
    assert said[11].endswith("failed: RuntimeError: parse failed")
    assert said[12].startswith("dead letter: prerequisite")
    assert "did not run" in said[12]
    assert len(said) == 13


def test_cluster_example_holds_its_limits_and_cancels_a_running_call() -> None:
    done = subprocess.run(
        [sys.executable, str(EXAMPLES / "cluster.py")],
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == "workers: 3"
    assert lines[1].startswith("charge: 10 calls of 0.1 s, at most 2 at once")
    assert lines[2] == "notify: 12 calls, any 6 starts span >= 1 s: True"
    assert lines[3] == "charge paused: 1 pending, none started"
    assert lines[4] == "charge resumed: it ran"
    assert lines[5:] == ["  export: cancelled while running", "cancel export: RUNNING"]


def test_blocking_example_keeps_the_loop_free_and_kills_a_cancelled_process() -> None:
    done = subprocess.run(
        [sys.executable, str(EXAMPLES / "blocking.py")],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    me = int(lines[0].removeprefix("this process is "))
    primes = [line for line in lines if line.startswith("  primes below ")]
    assert len(primes) == 4
    workers = {int(line.rsplit(maxsplit=1)[-1].rstrip(")")) for line in primes}
    assert len(workers) in (1, 2)
    assert me not in workers
    assert "  archived 2026-11.tar in a thread" in lines
    assert "cancel the stuck call: RUNNING (its worker process is killed)" in lines
    assert lines[-3:-1] == ["count-primes: 4 succeeded, 1 cancelled", "archive: 1 succeeded"]
    ran, worst = lines[-1].removeprefix("heartbeat: ").split(" ran, worst lateness ")
    assert ran == "40"
    # Were the CPU work in the event loop, the heartbeats would wait seconds for it.
    assert int(worst.removesuffix(" ms")) < 1500, worst

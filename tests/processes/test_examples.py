"""The examples run as a newcomer runs them, and say what they promise."""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import sys
import time
from contextlib import closing
from pathlib import Path
from typing import Any

import trio

from trio_futurecalls import list_pending, open_sqlite_store

EXAMPLES = Path(__file__).parents[2] / "examples"


def run_example(script: str, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """``python examples/<script> *args``, as a newcomer runs it; it must exit 0."""
    done = subprocess.run(
        [sys.executable, str(EXAMPLES / script), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done


def test_recurring_example_runs_each_tick_once() -> None:
    done = run_example("recurring.py")
    lines = done.stdout.splitlines()
    assert lines[-1] == "every tick ran once"
    assert sum("every-1s tick" in line for line in lines) >= 4
    assert sum("cron-2s tick" in line for line in lines) >= 2


def test_dependencies_example_runs_in_order_and_stops_at_the_failure() -> None:
    done = run_example("dependencies.py")
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
    done = run_example("cluster.py", timeout=90)
    lines = done.stdout.splitlines()
    assert lines[0] == "workers: 3"
    assert lines[1].startswith("charge: 10 calls of 0.1 s, at most 2 at once")
    assert lines[2] == "notify: 12 calls, any 6 starts span >= 1 s: True"
    assert lines[3] == "charge paused: 1 pending, none started"
    assert lines[4] == "charge resumed: it ran"
    assert lines[5:] == ["  export: cancelled while running", "cancel export: RUNNING"]


def test_quickstart_says_where_the_call_due_tomorrow_is(tmp_path: Path) -> None:
    done = run_example("quickstart.py")
    lines = done.stdout.splitlines()
    assert sum(" sent" in line for line in lines) == 6
    assert "send-email: 6 succeeded, 0 failed" in done.stdout
    assert "a temporary file removed on exit" in done.stdout
    # With a path, the file is kept, and with it the call due tomorrow.
    path = tmp_path / "kept.sqlite3"
    done = run_example("quickstart.py", str(path))
    assert f"the call due tomorrow is still stored in {path}" in done.stdout
    assert [name for _, name, _ in _pending(path)] == ["build-report"]


def _pending(path: Path) -> list[tuple[int, str, Any]]:
    """(id, name, payload) of the calls pending in the SQLite store at ``path``."""

    async def read() -> list[tuple[int, str, Any]]:
        async with open_sqlite_store(path) as store:
            return [(c.id, c.name, json.loads(c.payload)) for c in await list_pending(store)]

    return trio.run(read)


def _outbox(path: Path) -> list[int]:
    """Ids of the calls ``examples/worker.py`` sent (the table its calls write)."""
    with closing(sqlite3.connect(path)) as conn:
        try:
            rows = conn.execute("SELECT call_id FROM example_outbox ORDER BY call_id").fetchall()
        except sqlite3.OperationalError:  # no call ran yet: no table
            return []
    return [row[0] for row in rows]


def _produce(url: str, *args: str) -> list[str]:
    done = run_example("producer.py", url, *args)
    return done.stdout.splitlines()


def test_the_producer_schedules_by_name_without_a_scheduler(tmp_path: Path) -> None:
    path = tmp_path / "calls.sqlite3"
    said = _produce(f"sqlite:///{path}", "--count", "3", "--delay", "3600")
    assert said == ["scheduled 3 emails: ids 1..3", "digest: id 4", "welcome: id 5"]
    pending = _pending(path)
    assert [name for _, name, _ in pending] == ["send-email"] * 5
    assert {c_id: payload["to"] for c_id, _, payload in pending} == {
        1: "user0@example.com",
        2: "user1@example.com",
        3: "user2@example.com",
        4: "team@example.com",
        5: "new@example.com",
    }
    # Again: the digest is still pending, so its unique key schedules no second one.
    said = _produce(f"sqlite:///{path}", "--count", "1", "--delay", "3600")
    assert said[1] == "digest: id 4"
    assert len(_pending(path)) == 5 + 2


def test_the_worker_stops_cleanly_on_sigterm_and_loses_no_call(tmp_path: Path) -> None:
    path = tmp_path / "calls.sqlite3"
    url = f"sqlite:///{path}"
    _produce(url, "--count", "20")
    _produce(url, "--count", "3", "--delay", "3600")  # due later: never started here
    scheduled = {c_id for c_id, _, _ in _pending(path)}
    assert len(scheduled) == 22 + 4  # (the second run's digest is the first run's)
    grace = 15.0
    out = tmp_path / "worker.out"
    with out.open("w") as sink:
        worker = subprocess.Popen(
            [sys.executable, str(EXAMPLES / "worker.py"), url, "--grace", str(grace)],
            stdout=sink,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            # Once some calls ran (two run at a time, 0.3 s each), stop it.
            deadline = time.monotonic() + 30
            while not _outbox(path) and time.monotonic() < deadline:
                time.sleep(0.05)
            assert _outbox(path), out.read_text()
            worker.send_signal(signal.SIGTERM)
            # It exits within the grace period, cleanly.
            _, err = worker.communicate(timeout=grace)
        finally:
            if worker.poll() is None:
                worker.kill()
                worker.wait()
    said = out.read_text().splitlines()
    assert worker.returncode == 0, err
    assert "Traceback" not in err, err
    assert said[0].startswith("worker ready")
    assert f"SIGTERM: stopping; running calls get {grace:g} s" in said
    assert said[-1].startswith("stopped cleanly: ")
    # No call lost: each either ran once or is still pending, none both.
    sent = _outbox(path)
    pending = {c_id for c_id, _, _ in _pending(path)}
    assert len(sent) == len(set(sent))
    assert set(sent) | pending == scheduled
    assert not set(sent) & pending
    assert len(pending) >= 3  # the calls due in an hour, at least


def test_blocking_example_keeps_the_loop_free_and_kills_a_cancelled_process() -> None:
    done = run_example("blocking.py", timeout=120)
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

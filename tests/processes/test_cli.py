"""The ``futurecalls`` command line, run as real subprocesses (``python -m trio_futurecalls``).

Every test works in its own ``tmp_path`` (the subprocess's cwd) with an SQLite store
there; ``tests/processes/cli_calls.py`` provides the call classes (the tests directory is put
on ``PYTHONPATH``). The PostgreSQL test follows ``tests/postgres/test_postgres.py``'s rules:
skipped loudly without a server, failed under ``CI=true``.
"""

from __future__ import annotations

import http.server
import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import trio
from cli_support import Result

from trio_futurecalls import open_sqlite_store
from trio_futurecalls.cli import build_parser, main, parse_duration

TESTS = Path(__file__).parent
STORE = "sqlite:///calls.sqlite3"


@pytest.fixture(autouse=True)
def _store(tmp_path: Path) -> None:
    """STORE exists in every test's directory, as after ``futurecalls migrate`` (only
    that, and ``worker --create``, create a store)."""

    async def create() -> None:
        async with open_sqlite_store(tmp_path / "calls.sqlite3"):
            pass

    trio.run(create)


def cli_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("FUTURECALLS_STORE", "PYTHONPATH")}
    env["PYTHONPATH"] = os.pathsep.join([str(TESTS), *filter(None, [os.environ.get("PYTHONPATH")])])
    env.update(extra)
    return env


async def cli(
    cwd: Path, *args: str, env: dict[str, str] | None = None, rc: int | None = 0
) -> Result:
    """Run ``futurecalls ARGS`` in ``cwd``; check the exit code unless ``rc`` is None."""
    with trio.fail_after(30):
        proc = await trio.run_process(
            [sys.executable, "-m", "trio_futurecalls", *args],
            cwd=cwd,
            env=cli_env() if env is None else env,
            capture_stdout=True,
            capture_stderr=True,
            check=False,
        )
    result = Result(proc.returncode, proc.stdout.decode(), proc.stderr.decode())
    if rc is not None:
        assert result.rc == rc, f"futurecalls {args}: exit {result.rc}\n{result.err}"
    return result


def payload(tmp_path: Path, tag: str, **more: Any) -> str:
    return json.dumps({"dir": str(tmp_path), "tag": tag, **more})


async def until(condition: Callable[[], bool], what: str, limit_s: float = 15) -> None:
    """Poll ``condition`` (a file a subprocess writes) in real time."""
    with trio.move_on_after(limit_s):
        for _ in range(100_000):
            if condition():
                return
            await trio.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


# -- parsing, in process ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        *(("30s", 30), ("5m", 300), ("2h", 7200), ("1d", 86400), ("1h30m", 5400)),
        *(("90", 90), ("0.5", 0.5), ("1d2h3m4s", 93784), ("0", 0)),
    ],
)
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration(text).total_seconds() == seconds


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["migrate"],
        ["schedule"],
        ["list"],
        ["cancel"],
        ["stats"],
        ["pause"],
        ["resume"],
        ["dead-letters"],
        ["dead-letters", "list"],
        ["dead-letters", "requeue"],
        ["dead-letters", "purge"],
        ["recurring", "add"],
        ["worker"],
        ["run-once"],
        ["unknown-calls"],
        ["unknown-calls", "list"],
        ["unknown-calls", "dead-letter"],
    ],
)
def test_every_command_has_help(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        build_parser().parse_args([*argv, "--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: futurecalls")
    assert "--store" in out or argv == []


# -- round trips -----------------------------------------------------------------------


async def test_schedule_list_cancel(tmp_path: Path) -> None:
    r = await cli(tmp_path, "--store", STORE, "migrate")
    assert "up to date" in r.out
    first = int((await cli(tmp_path, "--store", STORE, "schedule", "cli-echo", "--in", "0")).out)
    second = int(
        (
            await cli(
                tmp_path,
                "schedule",
                "cli-echo",
                "--payload",
                '{ "b": [1, 2],  "a": "é" }',
                "--at",
                "2030-01-01T09:00:00+02:00",
                "--identifier",
                "user:7",
                "--store",  # global options may follow the command too
                STORE,
            )
        ).out
    )
    third = int(
        (
            await cli(
                tmp_path,
                "--store",
                STORE,
                "schedule",
                "other",
                "--in",
                "1h30m",
                "--identifier",
                "user:7",
                "--priority",
                "7",
            )
        ).out
    )
    assert first < second < third

    listed = (await cli(tmp_path, "--store", STORE, "list", "--json")).json()
    assert [c["id"] for c in listed] == [first, third, second]  # earliest due first
    by_id = {c["id"]: c for c in listed}
    assert by_id[second] == {
        "id": second,
        "name": "cli-echo",
        "identifier": "user:7",
        "unique_key": None,
        "priority": 0,
        "due_at": "2030-01-01T07:00:00+00:00",
        "scheduled_at": by_id[second]["scheduled_at"],
        "waiting_for": [],
        "payload": {"b": [1, 2], "a": "é"},
    }
    assert by_id[first]["payload"] is None
    assert by_id[third]["priority"] == 7

    table = (await cli(tmp_path, "--store", STORE, "list")).out.splitlines()
    assert table[0].split() == [
        "ID",
        "NAME",
        "DUE",
        "DUE",
        "AT",
        "PRIORITY",
        "IDENTIFIER",
        "UNIQUE",
        "KEY",
        "WAITS",
        "FOR",
        "PAYLOAD",
    ]
    assert '{"b":[1,2],"a":"é"}' in table[3]  # stored compactly

    async def ids(*filters: str) -> list[int]:
        return [
            c["id"]
            for c in (await cli(tmp_path, "--store", STORE, "list", "--json", *filters)).json()
        ]

    assert await ids("--name", "cli-echo") == [first, second]
    assert await ids("--identifier", "user:7") == [third, second]
    assert await ids("--due-after", "2029-01-01T00:00:00Z") == [second]
    assert await ids("--due-before", "2029-01-01T00:00:00Z", "--limit", "1") == [first]

    assert (await cli(tmp_path, "--store", STORE, "cancel", "--id", str(first))).out == "pending\n"
    r = await cli(tmp_path, "--store", STORE, "cancel", "--id", str(first), rc=1)
    assert r.out == "not_found\n"
    r = await cli(tmp_path, "--store", STORE, "cancel", "--identifier", "user:7")
    assert r.out == "2\n"
    assert (await cli(tmp_path, "--store", STORE, "list", "--json")).json() == []


async def test_store_urls_and_environment(tmp_path: Path) -> None:
    # Default: futurecalls.sqlite3 in the current directory.
    await cli(tmp_path, "migrate")
    assert (tmp_path / "futurecalls.sqlite3").exists()
    # $FUTURECALLS_STORE, relative path.
    (tmp_path / "sub").mkdir()
    await cli(tmp_path, "migrate", env=cli_env(FUTURECALLS_STORE="sqlite:///sub/env.db"))
    await cli(
        tmp_path,
        "schedule",
        "x",
        "--in",
        "1d",
        env=cli_env(FUTURECALLS_STORE="sqlite:///sub/env.db"),
    )
    assert (tmp_path / "sub" / "env.db").exists()
    # Absolute path (four slashes), from another directory; --store beats the variable.
    absolute = f"sqlite:///{tmp_path / 'sub' / 'env.db'}"
    assert absolute.startswith("sqlite:////")
    r = await cli(
        tmp_path / "sub",
        "--store",
        absolute,
        "stats",
        "--json",
        env=cli_env(FUTURECALLS_STORE="sqlite:///ignored.db"),
    )
    assert r.json() == {
        "x": {"pending": 1, "due": 0, "waiting": 0, "paused": False, "paused_at": None}
    }
    assert not (tmp_path / "sub" / "ignored.db").exists()
    # memory:// is a new, empty store for the one command.
    r = await cli(tmp_path, "--store", "memory://", "run-once", "cli_calls:CALLS")
    assert r.out.startswith("ran 0 call(s)")


async def test_recurring_add_then_cancel(tmp_path: Path) -> None:
    # Two processes share the schedule; the rest is tested in process
    # (tests/cli/test_recurring_cli.py).
    s = ("--store", STORE)
    r = await cli(
        tmp_path, *s, "recurring", "add", "cli-echo", "--key", "k", "--cron", "0 9 * * *", "--json"
    )
    assert (r.json()["status"], r.json()["key"], r.json()["cron"]) == ("added", "k", "0 9 * * *")
    assert (await cli(tmp_path, *s, "recurring", "cancel", "k")).out == "1\n"


async def test_stats_from_store(tmp_path: Path) -> None:
    for name, when in (("a", "0"), ("a", "0"), ("a", "1d"), ("b", "1h")):
        await cli(tmp_path, "--store", STORE, "schedule", name, "--in", when)
    r = await cli(tmp_path, "--store", STORE, "stats", "--json")
    not_paused = {"paused": False, "paused_at": None}
    assert r.json() == {
        "a": {"pending": 3, "due": 2, "waiting": 0, **not_paused},
        "b": {"pending": 1, "due": 0, "waiting": 0, **not_paused},
    }
    table = (await cli(tmp_path, "--store", STORE, "stats")).out.splitlines()
    assert table[0].split() == ["NAME", "PENDING", "DUE", "WAITING", "PAUSED"]
    assert table[1].split() == ["a", "3", "2", "0"]


async def test_dependencies_from_the_command_line(tmp_path: Path) -> None:
    s = ("--store", STORE)
    first = int((await cli(tmp_path, *s, "schedule", "a", "--in", "1h")).out)
    second = int((await cli(tmp_path, *s, "schedule", "a", "--in", "1h")).out)
    args = ("schedule", "b", "--in", "0", "--after", str(first), "--after", str(second))
    joined = int((await cli(tmp_path, *s, *args)).out)
    listed = {c["id"]: c for c in (await cli(tmp_path, *s, "list", "--json")).json()}
    assert listed[joined]["waiting_for"] == [first, second]
    table = (await cli(tmp_path, *s, "list", "--name", "b")).out.splitlines()
    assert f"{first} {second}" in table[1]
    stats = (await cli(tmp_path, *s, "stats", "--json")).json()
    assert stats["b"] == {"pending": 1, "due": 0, "waiting": 1, "paused": False, "paused_at": None}
    # A call the store cannot see: exit 1, with the reason.
    r = await cli(tmp_path, *s, "schedule", "b", "--in", "0", "--after", "999999", rc=1)
    assert "cannot wait for call 999999" in r.err
    # Cancelling a prerequisite ends the call waiting for it; requeue it after another.
    assert (await cli(tmp_path, *s, "cancel", "--id", str(first))).out == "pending\n"
    (dead,) = (await cli(tmp_path, *s, "dead-letters", "list", "--json")).json()
    assert dead["call_id"] == joined
    assert dead["error"] == f"prerequisite {first} failed: it was cancelled"
    requeue = ("dead-letters", "requeue", str(dead["id"]), "--after", str(second))
    again = int((await cli(tmp_path, *s, *requeue)).out)
    listed = {c["id"]: c for c in (await cli(tmp_path, *s, "list", "--json")).json()}
    assert listed[again]["waiting_for"] == [second]


async def test_rows_another_program_wrote_are_listed_as_text(tmp_path: Path) -> None:
    # Payloads no call site would accept: nested deeper than json.loads can follow, or
    # than printing them as JSON could. Listed as their text, not a crash.
    await cli(tmp_path, "--store", STORE, "migrate")
    deep, deeper = "[" * 500 + "]" * 500, "[" * 50_000 + "]" * 50_000
    with sqlite3.connect(tmp_path / "calls.sqlite3") as conn:
        for payload in (deep, deeper):
            conn.execute(
                "INSERT INTO futurecalls_calls (name, payload, due_at, scheduled_at)"
                " VALUES ('cli-echo', ?, 0, 0)",
                (payload,),
            )
            conn.execute(
                "INSERT INTO futurecalls_dead_letters (call_id, name, payload, due_at,"
                " scheduled_at, failed_at, error, attempts) VALUES (1, 'x', ?, 0, 0, 0, 'e', 1)",
                (payload,),
            )
    listed = (await cli(tmp_path, "--store", STORE, "list", "--json")).json()
    assert [c["payload"] for c in listed] == [deep, deeper]
    dead = (await cli(tmp_path, "--store", STORE, "dead-letters", "list", "--json")).json()
    assert [d["payload"] for d in dead] == [deep, deeper]


def test_stats_of_a_hostile_metrics_page(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Whatever answers at --metrics-url: NaN values, labels with a password, a page
    # the parser gives up on.
    pages = iter(
        [
            b'futurecalls_calls_running{call_class="a"} NaN\n'
            b'futurecalls_calls_running{call_class="postgresql://u:hunter5@h/db"} 1\n',
            b"x{ 1\n",
        ]
    )

    class Page(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = next(pages)
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    with http.server.HTTPServer(("127.0.0.1", 0), Page) as server:
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        try:
            url = f"http://127.0.0.1:{server.server_address[1]}/metrics"
            assert main(["stats", "--metrics-url", url]) == 0
            out = capsys.readouterr().out
            assert "NaN" in out
            assert "postgresql://u:***@h/db" in out
            assert "hunter5" not in out
            assert main(["stats", "--metrics-url", url]) == 1
            assert "unparseable" in capsys.readouterr().err
        finally:
            server.shutdown()


async def test_run_once_and_dead_letters(tmp_path: Path) -> None:
    s = ("--store", STORE)
    await cli(
        tmp_path, *s, "schedule", "cli-echo", "--payload", payload(tmp_path, "now"), "--in", "0"
    )
    await cli(
        tmp_path, *s, "schedule", "cli-echo", "--payload", payload(tmp_path, "later"), "--in", "1h"
    )
    await cli(tmp_path, *s, "schedule", "cli-fail", "--in", "0", "--identifier", "f")
    # Payloads that no longer decode end up as dead letters.
    for tag in ("bad1", "bad2"):
        await cli(tmp_path, *s, "schedule", "cli-typed", "--payload", f'"{tag}"', "--in", "0")

    r = await cli(tmp_path, *s, "--log-format", "json", "run-once", "cli_calls:CALLS", rc=1)
    assert r.out.splitlines()[0].startswith("ran 4 call(s): 1 succeeded, 3 failed, 0 cancelled")
    assert "  cli-echo: 1 started, 1 succeeded, 0 failed, 0 cancelled, 0 retried" in r.out
    assert (tmp_path / "now.done").exists()
    assert not (tmp_path / "later.done").exists()
    logs = [json.loads(line) for line in r.err.splitlines()]
    failed = [rec for rec in logs if rec.get("call_name") == "cli-fail"]
    assert failed, r.err
    assert failed[0]["level"] == "ERROR"
    assert failed[0]["call_identifier"] == "f"
    assert isinstance(failed[0]["call_id"], int)
    assert "call_due_at" in failed[0]
    assert "call_attempt" in failed[0]
    assert "RuntimeError: cli-fail always fails" in failed[0]["exc_info"]

    # Nothing due now any more: a clean run.
    r = await cli(tmp_path, *s, "run-once", "cli_calls:Echo")
    assert r.out.splitlines()[0] == (
        "ran 0 call(s): 0 succeeded, 0 failed, 0 cancelled, 0 retried, 0 dead-lettered"
    )

    dead = (await cli(tmp_path, *s, "dead-letters", "list", "--json")).json()
    # Undecodable payloads are dead-lettered (the engine may dead-letter failed calls too).
    typed = [d for d in dead if d["name"] == "cli-typed"]
    assert [d["payload"] for d in typed] == ["bad1", "bad2"]
    assert "does not decode" in typed[0]["error"]
    table = (await cli(tmp_path, *s, "dead-letters", "list")).out.splitlines()
    assert table[0].split()[:3] == ["ID", "CALL", "ID"]
    assert len(table) == 1 + len(dead)

    r = await cli(tmp_path, *s, "dead-letters", "requeue", str(typed[0]["id"]), "--in", "2h")
    requeued = int(r.out)
    pending = (await cli(tmp_path, *s, "list", "--json", "--name", "cli-typed")).json()
    assert [(c["id"], c["payload"]) for c in pending] == [(requeued, "bad1")]
    r = await cli(tmp_path, *s, "dead-letters", "requeue", str(typed[0]["id"]), rc=1)
    assert f"futurecalls: error: no dead letter with id {typed[0]['id']}" in r.err

    r = await cli(tmp_path, *s, "dead-letters", "purge", "--id", str(typed[1]["id"]), "999999")
    assert r.out == "1\n"
    r = await cli(tmp_path, *s, "dead-letters", "purge", "--all")
    assert r.out == f"{len(dead) - 2}\n"
    assert (await cli(tmp_path, *s, "dead-letters", "list", "--json")).json() == []


# -- errors ----------------------------------------------------------------------------

#: A payload nested far deeper than json.loads can follow (it raised RecursionError).
DEEP = "[" * 50_000 + "]" * 50_000

BAD_USAGE = [
    (["--store", "mysql://x/y", "list"], "unsupported store URL 'mysql://x/y'"),
    (["--store", "sqlite:calls.db", "list"], "invalid SQLite store URL"),
    (["--store", "postgresql://u:secret@h/db", "--schema", "Bad-Name", "list"], None),
    (["--store", "postgresql://u@h/db?password=secret", "--schema", "Bad-Name", "list"], None),
    (["--store", "mysql://u:secret@h/db", "list"], "unsupported store URL 'mysql://u:***@h/db'"),
    (["schedule", "a", "--payload", "{not json", "--in", "1"], "--payload is not valid JSON"),
    (["schedule", "a", "--payload", "NaN", "--in", "1"], "--payload is not valid JSON"),
    (["schedule", "a", "--at", "2030-01-01T09:00:00"], "has no timezone"),
    (["schedule", "a", "--at", "next tuesday"], "invalid ISO 8601 time"),
    (["schedule", "a", "--in", "5 minutes"], "invalid duration '5 minutes'"),
    (["schedule", "a", "--in", "-5"], "must be finite and not negative"),
    (["schedule", "a", "--in", "1000000d"], "invalid duration '1000000d'"),
    (["schedule", "bad name", "--in", "1"], "call name 'bad name' must start with"),
    (["schedule", "a", "--in", "1", "--identifier", ""], "identifier must not be empty"),
    (["schedule", "a", "--at", "2030-01-01T00:00:00Z", "--in", "1"], "not allowed with"),
    (["list", "--due-after", "2030-01-01"], "--due-after: time '2030-01-01' has no timezone"),
    (["frobnicate"], "invalid choice: 'frobnicate'"),
    (["cancel", "--id", "x"], "argument --id: expected an id"),
    (["worker", "no_such_module:CALLS"], "cannot import module 'no_such_module'"),
    (["worker", "cli_calls"], "expected MODULE:ATTR"),
    (["worker", "cli_calls:MISSING"], "has no attribute 'MISSING'"),
    (["run-once", "cli_calls:NOT_CALLS"], "'not a class' is not a FutureCall subclass"),
    (["worker", "cli_calls:CALLS", "--max-concurrent", "0"], "expected a positive integer"),
    (["worker", "cli_calls:CALLS", "--grace", "soon"], "invalid duration 'soon'"),
    # Nothing typed on the command line ends in a raw exception (exit 1).
    (["schedule", "a", "--in", "1", "--payload", DEEP], "nested deeper than 100"),
    (["schedule", "a", "--in", "1", "--payload", "[" * 101 + "]" * 101], "deeper than 100"),
    (["schedule", "a", "--in", "1", "--payload", '"\\ud800"'], "lone surrogate"),
    (["schedule", "a", "--in", "1", "--payload", "1e400"], "--payload: payload is inf"),
    (["schedule", "a", "--in", "1", "--payload", "9" * 5000], "--payload is not valid JSON"),
    (["schedule", "a", "--at", "9999-12-31T23:59:59-14:00"], "--at 9999-12-31T23:59:59-14:00"),
    (["schedule", "a", "--at", "9999-12-31T00:00:00Z"], "--at 9999-12-31T00:00:00+00:00 is out"),
    (["schedule", "a", "--at", "0001-01-01T00:00:00Z"], "--at 0001-01-01T00:00:00+00:00 is out"),
    (["schedule", "a", "--in", "1e20"], "invalid duration '1e20': delay of 1e+20 s is longer"),
    (["schedule", "a", "--in", "1", "--identifier", "x\udcff"], "lone surrogate"),
    (["schedule", "a\udcff", "--in", "1"], "call name 'a\\udcff'"),
    (["list", "--due-after", "0001-01-01T00:00:00+01:00"], "--due-after 0001-01-01T00:00:00+01"),
    (["list", "--due-before", "9999-12-31T23:59:59-14:00"], "--due-before 9999-12-31T23:59"),
    (["list", "--limit", str(2**70)], "argument --limit: expected an integer from 0 to"),
    (["cancel", "--id", str(2**70)], "argument --id: expected an id"),
    (["cancel", "--id", "0"], "argument --id: expected an id"),
    (["dead-letters", "list", "--limit", str(2**70)], "argument --limit: expected an integer"),
    (["dead-letters", "requeue", str(2**70)], "argument ID: expected an id"),
    (["dead-letters", "requeue", "1", "--at", "9999-12-31T23:59:59-14:00"], "--at 9999-12-31"),
    (["dead-letters", "requeue", "1", "--in", "1e20"], "invalid duration '1e20'"),
    (["dead-letters", "purge", "--id", "1", str(2**70)], "argument --id: expected an id"),
    (["worker", "cli_calls:CALLS", "--grace", "1e20"], "invalid duration '1e20': delay of"),
    (["worker", "cli_calls:CALLS", "--metrics-port", "0", "--metrics-host", "a" * 64], "host"),
    (["worker", "cli_calls:CALLS", "--metrics-host", "x\udcff"], "argument --metrics-host"),
]


@pytest.mark.parametrize(("args", "message"), BAD_USAGE)
async def test_usage_errors_exit_2(tmp_path: Path, args: list[str], message: str | None) -> None:
    r = await cli(tmp_path, *args, rc=2)
    assert "futurecalls" in r.err
    assert "error:" in r.err
    if message is not None:
        assert message in r.err
    assert "Traceback" not in r.err
    assert "secret" not in r.err
    assert not (tmp_path / "futurecalls.sqlite3").exists()  # nothing opened


async def test_runtime_errors_exit_1(tmp_path: Path) -> None:
    missing = "sqlite:///no/such/dir/calls.sqlite3"
    r = await cli(tmp_path, "--store", missing, "migrate", rc=1)
    assert r.err.startswith("futurecalls: error: SQLite database unavailable"), r.err
    assert "Traceback" not in r.err
    r = await cli(tmp_path, "-v", "--store", missing, "migrate", rc=1)
    assert "Traceback" in r.err
    r = await cli(tmp_path, "--store", missing, "worker", "cli_calls:CALLS", "--create", rc=1)
    assert "futurecalls: error: SQLite database unavailable" in r.err
    # The metrics port is taken: the worker stops at once with a clear message.
    with trio.socket.socket() as taken:
        await taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        r = await cli(
            tmp_path,
            *("--store", STORE),
            "worker",
            "cli_calls:CALLS",
            "--metrics-port",
            str(port),
            rc=1,
        )
    assert f"futurecalls: error: cannot serve metrics on 127.0.0.1:{port}" in r.err
    assert "Traceback" not in r.err
    # A PostgreSQL server that is not there (nothing listens on port 1).
    r = await cli(tmp_path, "--store", "postgresql://u:secret@127.0.0.1:1/db", "migrate", rc=1)
    assert r.err.startswith("futurecalls: error:"), r.err
    assert "Traceback" not in r.err
    assert "secret" not in r.err
    # --metrics-url with nothing listening.
    r = await cli(tmp_path, "stats", "--metrics-url", "http://127.0.0.1:1/metrics", rc=1)
    assert "futurecalls: error: cannot fetch metrics from http://127.0.0.1:1/metrics" in r.err


async def test_a_closed_pipe_ends_quietly(tmp_path: Path) -> None:
    # `futurecalls list | head -1`: the reader goes away before (or while) it writes.
    for _ in range(3):
        await cli(tmp_path, "--store", STORE, "schedule", "cli-echo", "--in", "1h")
    for args in (["list"], ["list", "--json"], ["dead-letters", "list"], ["stats"]):
        read_end, write_end = os.pipe()
        os.close(read_end)
        try:
            with trio.fail_after(30):
                proc = await trio.run_process(
                    [sys.executable, "-m", "trio_futurecalls", "--store", STORE, *args],
                    cwd=tmp_path,
                    env=cli_env(),
                    stdout=write_end,
                    capture_stderr=True,
                    check=False,
                )
        finally:
            os.close(write_end)
        assert proc.returncode == 128 + signal.SIGPIPE, proc.stderr
        assert proc.stderr == b"", proc.stderr  # no traceback, no "Exception ignored"


async def test_an_import_error_in_the_users_module_names_it(tmp_path: Path) -> None:
    for command in ("worker", "run-once"):
        r = await cli(tmp_path, "--store", STORE, command, "cli_broken:CALLS", rc=1)
        (line,) = r.err.splitlines()
        assert line.startswith(
            "futurecalls: error: importing module 'cli_broken' raised RuntimeError: "
            "SMTP_HOST is not set at "
        ), r.err
        assert "cli_broken.py:8 (run with -v for the traceback)" in line
    r = await cli(tmp_path, "-v", "--store", STORE, "worker", "cli_broken:CALLS", rc=1)
    assert "Traceback" in r.err
    assert 'raise RuntimeError("SMTP_HOST is not set")' in r.err


async def test_one_log_line_per_finished_call_unless_switched_off(tmp_path: Path) -> None:
    s = ("--store", STORE)
    echo = int(
        (await cli(tmp_path, *s, "schedule", "cli-echo", "--payload", payload(tmp_path, "a"))).out
    )
    fail = int((await cli(tmp_path, *s, "schedule", "cli-fail")).out)
    r = await cli(tmp_path, *s, "run-once", "cli_calls:CALLS", rc=1)
    assert re.search(
        rf"INFO trio_futurecalls\.call\.end: call cli-echo \(id={echo}\) "
        r"succeeded in \d+\.\d{3} s$",
        r.err,
        re.M,
    ), r.err
    assert f"call cli-fail (id={fail}) failed in " in r.err
    assert "(attempt 1" not in r.err  # the detail is for -v
    await cli(tmp_path, *s, "schedule", "cli-echo", "--payload", payload(tmp_path, "b"))
    r = await cli(tmp_path, *s, "run-once", "cli_calls:CALLS", "--no-call-log")
    assert "trio_futurecalls.call.end" not in r.err
    assert r.out.startswith("ran 1 call(s): 1 succeeded")
    await cli(tmp_path, *s, "schedule", "cli-echo", "--payload", payload(tmp_path, "c"))
    r = await cli(tmp_path, "-v", *s, "run-once", "cli_calls:CALLS")
    assert "succeeded in" in r.err
    assert "(attempt 1, identifier None, due " in r.err


# -- passwords --------------------------------------------------------------------------


async def test_no_password_reaches_messages_logs_or_tracebacks(tmp_path: Path) -> None:
    # A key=value connection string whose password holds an "&".
    dsn = "host=127.0.0.1 password=s3cr&et dbname=d"
    r = await cli(tmp_path, "-v", "--store", dsn, "list", rc=2)
    assert "password=***" in r.err
    assert "s3cr" not in r.err
    assert "&et" not in r.err
    # A mistyped option: argparse quotes what was typed.
    r = await cli(tmp_path, "--sotre", "postgresql://u:hunter44@h/db", "list", rc=2)
    assert "postgresql://u:***@h/db" in r.err
    assert "hunter44" not in r.err
    # A metrics URL with credentials, even in a -v traceback.
    url = "http://user:hunter2x@127.0.0.1:1/metrics"
    for verbose in ([], ["-v"]):
        r = await cli(tmp_path, *verbose, "stats", "--metrics-url", url, rc=1)
        assert "cannot fetch metrics from http://user:***@127.0.0.1:1/metrics" in r.err
        assert "hunter2x" not in r.err
    # A call's failure that names connection strings: logged (with its traceback),
    # kept as a dead letter, listed.
    for log_format in ("text", "json"):
        await cli(tmp_path, "--store", STORE, "schedule", "cli-leaky", "--in", "0")
        r = await cli(
            tmp_path,
            "--store",
            STORE,
            "--log-format",
            log_format,
            "-v",
            "run-once",
            "cli_calls:LEAKY_CALLS",
            rc=1,
        )
        assert "hunter2" not in r.err
        assert "hunter33" not in r.err
        assert "&x" not in r.err
    r = await cli(tmp_path, "--store", STORE, "dead-letters", "list", "--json")
    dead, _ = r.json()
    assert "could not connect to postgresql://app:***@db/prod" in dead["error"]
    assert "host=db password=*** dbname=prod" in dead["error"]
    assert "hunter" not in r.out
    r = await cli(tmp_path, "--store", STORE, "dead-letters", "list")
    assert "hunter" not in r.out


@pytest.mark.parametrize(
    "url", ["file:///etc/passwd", "ftp://127.0.0.1/metrics", "127.0.0.1:9464/metrics", "http://"]
)
async def test_metrics_url_must_be_http(tmp_path: Path, url: str) -> None:
    r = await cli(tmp_path, "stats", "--metrics-url", url, rc=2)
    assert "--metrics-url" in r.err
    assert "http" in r.err
    assert "Traceback" not in r.err


# -- the worker ------------------------------------------------------------------------


class Worker:
    """A ``futurecalls worker`` subprocess with its stderr in a file."""

    def __init__(self, tmp_path: Path, *args: str) -> None:
        self.tmp_path = tmp_path
        self.args = args
        self.log = tmp_path / "worker.log"
        self.proc: trio.Process | None = None

    async def __aenter__(self) -> Worker:
        with self.log.open("wb") as log:
            self.proc = await trio.lowlevel.open_process(
                [sys.executable, "-m", "trio_futurecalls", "--store", STORE, *self.args],
                cwd=self.tmp_path,
                env=cli_env(),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
            )
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.proc is not None
        if self.proc.returncode is None:
            self.proc.kill()
            with trio.CancelScope(shield=True):
                await self.proc.wait()

    def text(self) -> str:
        return self.log.read_text()

    async def wait_log(self, needle: str) -> str:
        await until(lambda: needle in self.text(), f"{needle!r} in the worker log")
        return self.text()

    def signal(self, signum: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(signum)

    async def exit_code(self, within: float) -> int:
        assert self.proc is not None
        with trio.fail_after(within):
            return await self.proc.wait()


async def test_worker_sigterm_shuts_down_gracefully(tmp_path: Path) -> None:
    s = ("--store", STORE)
    await cli(
        tmp_path,
        *s,
        "schedule",
        "cli-slow",
        "--payload",
        payload(tmp_path, "slow", seconds=5.0),
        "--in",
        "0",
    )
    await cli(
        tmp_path, *s, "schedule", "cli-echo", "--payload", payload(tmp_path, "echo"), "--in", "0"
    )
    await cli(
        tmp_path, *s, "schedule", "cli-echo", "--payload", payload(tmp_path, "later"), "--in", "1h"
    )
    async with Worker(
        tmp_path, "worker", "cli_calls:CALLS", "--grace", "20", "--metrics-port", "0"
    ) as w:
        await until((tmp_path / "slow.started").exists, "the slow call to start")
        await until((tmp_path / "echo.done").exists, "the echo call")
        log = await w.wait_log("worker started")
        assert "calls cli-echo, cli-fail, cli-slow" in log
        match = re.search(r"metrics on (http://127\.0\.0\.1:\d+/metrics)", log)
        assert match, log

        r = await cli(tmp_path, "stats", "--metrics-url", match[1], "--json")
        stats = r.json()
        assert stats["cli-echo"]["started"] == 1
        assert stats["cli-echo"]["succeeded"] == 1
        assert stats["cli-echo"]["pending"] == 1
        assert stats["cli-slow"]["running"] == 1
        assert stats["cli-slow"]["limit"] == 2
        assert "avg_run_seconds" in stats["cli-echo"]
        table = (await cli(tmp_path, "stats", "--metrics-url", match[1])).out.splitlines()
        assert table[0].split()[:3] == ["NAME", "STARTED", "OK"]

        # A scraper that keeps its connection open (HTTP keep-alive) must not hold up
        # the exit once the calls are done.
        port = int(match[1].rsplit(":", 1)[1].split("/")[0])
        async with await trio.open_tcp_stream("127.0.0.1", port) as idle:
            await idle.send_all(b"GET /metrics HTTP/1.1\r\nHost: test\r\n\r\n")
            assert (await idle.receive_some(65536)).startswith(b"HTTP/1.1 200")

            assert not (tmp_path / "slow.finished").exists()
            w.signal(signal.SIGTERM)
            await until((tmp_path / "slow.finished").exists, "the slow call to finish")
            assert await w.exit_code(within=3) == 0
    assert (tmp_path / "slow.finished").exists()  # it got its grace period
    assert not (tmp_path / "slow.cancelled").exists()
    log = w.text()
    assert "received SIGTERM: shutting down gracefully" in log
    assert "worker stopped: 2 call(s) started, 2 succeeded" in log
    remaining = (await cli(tmp_path, *s, "list", "--json")).json()
    assert [c["payload"]["tag"] for c in remaining] == ["later"]


async def test_worker_second_signal_cancels_at_once(tmp_path: Path) -> None:
    await cli(
        tmp_path,
        "--store",
        STORE,
        "schedule",
        "cli-slow",
        "--payload",
        payload(tmp_path, "slow", seconds=60),
        "--in",
        "0",
    )
    async with Worker(
        tmp_path,
        *("--log-format", "json", "worker", "cli_calls:CALLS", "--grace", "60"),
        *("--metrics-port", "0"),
    ) as w:
        await until((tmp_path / "slow.started").exists, "the slow call to start")
        w.signal(signal.SIGINT)
        await w.wait_log("shutting down gracefully")
        w.signal(signal.SIGTERM)
        assert await w.exit_code(within=5) == 128 + signal.SIGTERM
    assert (tmp_path / "slow.cancelled").exists()
    assert not (tmp_path / "slow.finished").exists()
    records = [json.loads(line) for line in w.text().splitlines()]
    messages = [rec["message"] for rec in records]
    assert any("cancelling running calls now" in m for m in messages)
    cancelled = [rec for rec in records if rec.get("call_name") == "cli-slow"]
    assert cancelled
    assert "was cancelled" in cancelled[0]["message"]


async def test_worker_no_execute_runs_nothing(tmp_path: Path) -> None:
    await cli(
        tmp_path,
        "--store",
        STORE,
        "schedule",
        "cli-echo",
        "--payload",
        payload(tmp_path, "e"),
        "--in",
        "0",
    )
    async with Worker(tmp_path, "worker", "cli_calls:CALLS", "--no-execute") as w:
        log = await w.wait_log("worker started")
        assert "scheduling only" in log
        await trio.sleep(1.2)  # longer than SQLite's re-check interval
        w.signal(signal.SIGINT)
        assert await w.exit_code(within=10) == 0
    assert not (tmp_path / "e.done").exists()
    assert len((await cli(tmp_path, "--store", STORE, "list", "--json")).json()) == 1


# -- PostgreSQL ------------------------------------------------------------------------


@pytest.mark.postgres
async def test_postgres_store(tmp_path: Path) -> None:
    from pg_support import drop_schema, pg_dsn, random_schema, require_postgres

    require_postgres()
    schema = random_schema()
    pg = ("--store", pg_dsn(), "--schema", schema)
    try:
        r = await cli(tmp_path, *pg, "migrate")
        assert f"schema '{schema}'" in r.out
        call_id = int(
            (
                await cli(
                    tmp_path,
                    *pg,
                    "schedule",
                    "cli-echo",
                    "--payload",
                    '{"a": 1}',
                    "--in",
                    "1h",
                    "--identifier",
                    "pg",
                )
            ).out
        )
        listed = (await cli(tmp_path, *pg, "list", "--json")).json()
        assert [(c["id"], c["name"], c["identifier"], c["payload"]) for c in listed] == [
            (call_id, "cli-echo", "pg", {"a": 1})
        ]
        r = await cli(tmp_path, *pg, "stats", "--json")
        assert r.json() == {
            "cli-echo": {"pending": 1, "due": 0, "waiting": 0, "paused": False, "paused_at": None}
        }
        assert (await cli(tmp_path, *pg, "cancel", "--identifier", "pg")).out == "1\n"
        # postgres:// is accepted as well.
        short = pg_dsn().replace("postgresql://", "postgres://", 1)
        listed = (
            await cli(tmp_path, "--store", short, "--schema", schema, "list", "--json")
        ).json()
        assert listed == []
    finally:
        with trio.CancelScope(shield=True):
            await drop_schema(schema)


@pytest.mark.postgres
async def test_postgres_missing_schema_and_pool_size(tmp_path: Path) -> None:
    from pg_support import admin_fetch, drop_schema, pg_dsn, random_schema, require_postgres

    require_postgres()
    schema = random_schema()
    pg = ("--store", pg_dsn(), "--schema", schema)

    async def schema_exists() -> bool:
        return bool(await admin_fetch("SELECT 1 FROM pg_namespace WHERE nspname = $1", schema))

    try:
        # Commands and a worker without --create: an error, and no schema afterwards.
        for args in (["list"], ["stats"], ["dead-letters", "list"], ["schedule", "cli-echo"]):
            r = await cli(tmp_path, *pg, *args, rc=1)
            assert r.err == (
                f"futurecalls: error: no trio_futurecalls store at schema '{schema}' of "
                f"{pg_dsn()}; run `futurecalls migrate`\n"
            )
        r = await cli(tmp_path, *pg, "run-once", "cli_calls:CALLS", rc=1)
        assert "run `futurecalls migrate` (or pass --create)" in r.err
        assert not await schema_exists()
        # run-once --create creates it; its pool is sized by itself: never too small for
        # its limit. (Whether the server has room for it depends on the other clients
        # of this shared server at that moment: the store may say so.)
        r = await cli(tmp_path, *pg, "run-once", "cli_calls:CALLS", "--create")
        assert await schema_exists()
        assert "is too small for max_concurrent" not in r.err, r.err
        # The worker: max_concurrent + 2 (the default limit lowered if the server has
        # no room for it, and said), or --pool-size; no warning either way.
        # (The pool is checked before the worker says it started: the log up to that
        # line holds any pool advice.)
        for options, pool in (
            (["--max-concurrent", "5"], "7"),
            (["--max-concurrent", "7", "--pool-size", "9"], "9"),
        ):
            async with Worker(tmp_path, "worker", "cli_calls:CALLS", *pg, *options) as w:
                log = await w.wait_log("worker started")
                assert f", pool {pool}, " in log, log
                assert "is too small for max_concurrent" not in log, log
                w.signal(signal.SIGINT)
                assert await w.exit_code(within=15) == 0
        async with Worker(tmp_path, "worker", "cli_calls:CALLS", *pg) as w:
            log = await w.wait_log("worker started")
            assert "is too small for max_concurrent" not in log, log
            match = re.search(r"max_concurrent (\d+), pool (\d+),", log)
            assert match, log
            assert int(match[2]) == int(match[1]) + 2
            if match[1] != "100":
                assert f"max_concurrent {match[1]} (not 100): the PostgreSQL server has room" in log
            w.signal(signal.SIGINT)
            assert await w.exit_code(within=15) == 0
    finally:
        with trio.CancelScope(shield=True):
            await drop_schema(schema)


def test_schedule_with_a_unique_key_in_process(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store = ["--store", f"sqlite:///{tmp_path / 'calls.sqlite3'}"]
    schedule = [*store, "schedule", "cli-echo", "--in", "1h", "--unique-key", "user:7"]
    assert main([*schedule, "--payload", '"first"']) == 0
    first = int(capsys.readouterr().out)
    # ignore (the default) prints the pending call's id; replace changes it.
    assert main([*schedule, "--payload", '"second"']) == 0
    assert int(capsys.readouterr().out) == first
    assert main([*schedule, "--payload", '"third"', "--on-conflict", "replace"]) == 0
    assert int(capsys.readouterr().out) == first
    # error: exit 1 (the store found it, not a usage error), and the message says why.
    assert main([*schedule, "--on-conflict", "error"]) == 1
    assert f"call {first} is pending" in capsys.readouterr().err
    with pytest.raises(SystemExit) as usage:
        main([*schedule, "--on-conflict", "update"])
    assert usage.value.code == 2
    assert main([*schedule[:-1], ""]) == 2  # an empty key
    capsys.readouterr()
    assert main([*store, "list", "--json"]) == 0
    (listed,) = json.loads(capsys.readouterr().out)
    assert (listed["id"], listed["unique_key"], listed["payload"]) == (first, "user:7", "third")

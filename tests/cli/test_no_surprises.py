"""The CLI without surprises, run in process through ``cli.main`` on SQLite files:
commands never create a store, ``schedule`` is due now by default and checks the
name against the workers registry, ``unknown-calls``, and output for people."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import trio

from trio_futurecalls import WorkerInfo, open_sqlite_store
from trio_futurecalls.cli._arguments import NOT_GIVEN
from trio_futurecalls.cli._output import ago, last_line, relative, span
from trio_futurecalls.cli._scrape import _json_value
from trio_futurecalls.cli._store import size_pool


def register(db: Path, *names: str) -> None:
    """A live worker (for an hour) that runs ``names``."""
    now = datetime.now(UTC)
    worker = WorkerInfo(
        id="web-1:42:abc",
        host="web-1",
        pid=42,
        started_at=now,
        heartbeat_at=now,
        expires_at=now + timedelta(hours=1),
        limits={
            "max_concurrent": 10,
            "classes": {n: {"max_concurrent": 1, "delivery": "at_most_once"} for n in names},
        },
    )

    async def run() -> None:
        async with open_sqlite_store(db) as store:
            await store.register_worker(worker)

    trio.run(run)


# -- no command but migrate (and worker/run-once --create) creates a store ---------------

READ_ONLY = [
    ["list"],
    ["stats"],
    ["cancel", "--id", "1"],
    ["cancel", "--identifier", "x"],
    ["schedule", "mail"],
    ["pause", "mail"],
    ["resume", "mail"],
    ["workers"],
    ["limits", "list"],
    ["recurring", "list"],
    ["dead-letters", "list"],
    ["dead-letters", "purge", "--all"],
    ["unknown-calls", "list"],
]


@pytest.mark.parametrize("args", READ_ONLY)
def test_commands_on_a_missing_store_create_nothing(cli: Any, db: Path, args: list[str]) -> None:
    r = cli(*args, rc=1)
    assert (
        r.err
        == f"futurecalls: error: no trio_futurecalls store at {db}; run `futurecalls migrate`\n"
    )
    assert not db.exists()


@pytest.mark.parametrize("args", [["list"], ["schedule", "mail"]])
def test_a_file_that_is_not_a_store_is_left_alone(cli: Any, db: Path, args: list[str]) -> None:
    db.write_bytes(b"")  # e.g. touched by hand, or another program's empty database
    r = cli(*args, rc=1)
    assert "no trio_futurecalls store at" in r.err
    assert db.read_bytes() == b""


CALLS_MODULE = """
from trio_futurecalls import FutureCall


class Mail(FutureCall):
    name = "mail"

    async def invoke(self, session, payload):
        pass


CALLS = [Mail]
"""


@pytest.mark.parametrize("command", ["worker", "run-once"])
def test_a_worker_creates_the_store_only_with_create(
    cli: Any, db: Path, command: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    module = f"calls_{command.replace('-', '_')}_{tmp_path.name}"
    (tmp_path / f"{module}.py").write_text(CALLS_MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    spec = f"{module}:CALLS"
    r = cli(command, spec, rc=1)
    assert "no trio_futurecalls store at" in r.err
    assert "run `futurecalls migrate` (or pass --create)" in r.err
    assert not db.exists()
    if command == "run-once":
        r = cli(command, spec, "--create")
        assert r.out.startswith("ran 0 call(s)")
        assert db.exists()


def test_migrate_creates_and_then_commands_work(cli: Any, db: Path) -> None:
    assert "up to date" in cli("migrate").out
    assert cli("list").out.split() == [
        *("ID", "NAME", "DUE", "DUE", "AT", "PRIORITY", "IDENTIFIER", "UNIQUE", "KEY"),
        *("WAITS", "FOR", "PAYLOAD"),
    ]


# -- schedule: due now by default, and names the workers run ------------------------------


def test_schedule_without_a_time_is_due_now(cli: Any) -> None:
    cli("migrate")
    before = datetime.now(UTC)
    call_id = int(cli("schedule", "mail").out)
    after = datetime.now(UTC)
    (listed,) = json.loads(cli("list", "--json").out)
    assert listed["id"] == call_id
    assert before <= datetime.fromisoformat(listed["due_at"]) <= after


def test_schedule_warns_while_no_worker_is_registered(cli: Any) -> None:
    cli("migrate")
    r = cli("schedule", "anything")
    assert "no worker is registered in this store" in r.err
    assert "'anything'" in r.err
    assert len(json.loads(cli("list", "--json").out)) == 1


def test_schedule_refuses_a_name_no_live_worker_runs(cli: Any, db: Path) -> None:
    cli("migrate")
    register(db, "send-email", "charge-card")
    r = cli("schedule", "send-emial", rc=1)
    assert "no live worker runs calls named 'send-emial'" in r.err
    assert "running: charge-card, send-email" in r.err
    assert "did you mean 'send-email'?" in r.err
    assert "--allow-unknown" in r.err
    assert json.loads(cli("list", "--json").out) == []
    forced = int(cli("schedule", "send-emial", "--allow-unknown").out)
    known = int(cli("schedule", "send-email", "--in", "1h").out)
    assert "no worker" not in cli("schedule", "charge-card").err
    names = {c["id"]: c["name"] for c in json.loads(cli("list", "--json").out)}
    assert names[forced] == "send-emial"
    assert names[known] == "send-email"


def test_recurring_add_checks_the_name_too(cli: Any, db: Path) -> None:
    cli("migrate")
    register(db, "send-digest")
    r = cli("recurring", "add", "send-digets", "--key", "d", "--every", "1h", rc=1)
    assert "did you mean 'send-digest'?" in r.err
    cli("recurring", "add", "send-digets", "--key", "d", "--every", "1h", "--allow-unknown")
    cli("recurring", "add", "send-digest", "--key", "e", "--every", "1h")
    assert cli("recurring", "list").out.count("send-dige") == 2


def test_a_hostile_worker_row_does_not_break_the_check(cli: Any, db: Path) -> None:
    cli("migrate")
    register(db)  # no classes at all
    r = cli("schedule", "mail", rc=1)
    assert "running: none" in r.err


# -- unknown-calls -------------------------------------------------------------------------


def test_unknown_calls_list_and_dead_letter(cli: Any, db: Path) -> None:
    cli("migrate")
    ghost = int(cli("schedule", "ghost").out)
    later = int(cli("schedule", "ghost", "--in", "2h").out)
    known = int(cli("schedule", "mail").out)
    # With no worker registered, the known names must be given.
    r = cli("unknown-calls", "list", rc=1)
    assert "pass --calls MODULE:ATTR" in r.err
    register(db, "mail")
    listed = json.loads(cli("unknown-calls", "list", "--json").out)
    assert [c["id"] for c in listed] == [ghost, later]
    table = cli("unknown-calls", "list").out.splitlines()
    assert table[0].split() == ["ID", "NAME", "DUE", "IDENTIFIER", "PAYLOAD"]
    assert re.split(r" {2,}", table[2])[:3] == [str(later), "ghost", "in 2 h"]
    # Only the due one moves; the known name is not touched.
    assert cli("unknown-calls", "dead-letter", "--name", "other").out == "0\n"
    assert cli("unknown-calls", "dead-letter").out == "1\n"
    (dead,) = json.loads(cli("dead-letters", "list", "--json").out)
    assert dead["call_id"] == ghost
    assert "no FutureCall class named 'ghost'" in dead["error"]
    remaining = {c["id"] for c in json.loads(cli("list", "--json").out)}
    assert remaining == {later, known}


# -- output for people -----------------------------------------------------------------------


def test_relative_times() -> None:
    now = datetime(2030, 1, 1, tzinfo=UTC)
    assert relative(now + timedelta(minutes=5), now) == "in 5 min"
    assert relative(now - timedelta(hours=3), now) == "3 h overdue"
    assert relative(now + timedelta(seconds=0.4), now) == "now"
    assert relative(now + timedelta(days=3, hours=1), now) == "in 3 d"
    assert relative(now + timedelta(hours=47), now) == "in 47 h"
    assert ago(now - timedelta(seconds=42), now) == "42 s ago"
    assert span(299.6) == "5 min"


def test_an_errors_last_line() -> None:
    traceback_text = (
        "Traceback (most recent call last):\n"
        '  File "app.py", line 3, in invoke\n'
        "    raise ValueError(msg)\n"
        "ValueError: the card was declined\n"
        "by the bank\n"
    )
    assert last_line(traceback_text) == "ValueError: the card was declined ..."
    group = (
        "  + Exception Group Traceback (most recent call last):\n"
        "  | ExceptionGroup: two (2 sub-exceptions)\n"
        "  +-+---------------- 1 ----------------\n"
        "    | Traceback (most recent call last):\n"
        "    | KeyError: 'b'\n"
        "    +------------------------------------\n"
    )
    assert last_line(group) == "KeyError: 'b'"
    assert last_line("prerequisite 3 failed: it was cancelled") == (
        "prerequisite 3 failed: it was cancelled"
    )
    assert last_line("x" * 200).endswith("...")
    assert len(last_line("x" * 200)) == 80


def test_dead_letters_list_shows_the_errors_last_line(cli: Any, db: Path) -> None:
    cli("migrate")
    call_id = int(cli("schedule", "ghost").out)
    register(db, "mail")
    cli("unknown-calls", "dead-letter")
    lines = cli("dead-letters", "list").out.splitlines()
    assert re.split(r" {2,}", lines[0]) == ["ID", "CALL ID", "NAME", "FAILED", "ATTEMPTS", "ERROR"]
    row = re.split(r" {2,}", lines[1])
    assert row[1:] == [
        str(call_id),
        "ghost",
        row[3],
        "0",
        "no FutureCall class named 'ghost' is registered",
    ]
    assert row[3].endswith(" ago") or row[3] == "now"


def test_metrics_json_counts_are_integers() -> None:
    assert _json_value("started", 3.0) == 3
    assert isinstance(_json_value("started", 3.0), int)
    assert _json_value("avg_run_seconds", 2.0) == 2.0
    assert isinstance(_json_value("avg_run_seconds", 2.0), float)
    assert _json_value("limit", float("inf")) is None
    assert _json_value("running", float("nan")) is None


# -- the PostgreSQL pool ---------------------------------------------------------------------


def test_pool_sizing() -> None:
    # max_concurrent + 2 when the server has room (or its room is not known).
    assert (size_pool(10, True, 85).pool_size, size_pool(10, True, 85).max_concurrent) == (12, 10)
    assert size_pool(10, False, None).pool_size == 12
    # Capped by the room less a tenth (at least 2) for other clients, and the LISTEN
    # connection: 85 - 8 - 1 = 76. A limit someone chose is kept (the scheduler warns).
    chosen = size_pool(200, True, 85)
    assert (chosen.pool_size, chosen.max_concurrent, chosen.note) == (76, 200, "")
    # The default limit is lowered to fit, and says so (no warning on defaults).
    default = size_pool(100, False, 85)
    assert (default.pool_size, default.max_concurrent) == (76, 74)
    assert "max_concurrent 74 (not 100)" in default.note
    assert "8 left for other clients" in default.note
    roomy = size_pool(100, False, 500)
    assert (roomy.pool_size, roomy.max_concurrent, roomy.note) == (102, NOT_GIVEN, "")
    assert size_pool(100, False, 12).pool_size == 9  # 12 - 2 - 1
    assert size_pool(None, True, 85).pool_size == 3  # unlimited: no safe size

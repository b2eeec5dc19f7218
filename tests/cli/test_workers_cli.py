"""``futurecalls workers``, run in process through ``cli.main`` on an SQLite file.

The rows are registered through the store first, with times an hour or more from now
(the command reads the wall clock), so which rows are live is known in advance.
"""

from __future__ import annotations

import json
import re
import sqlite3
from contextlib import closing
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import trio

from trio_futurecalls import WorkerInfo, open_sqlite_store
from trio_futurecalls.cli import main

NOW = datetime.now(UTC).replace(microsecond=0)


def worker(worker_id: str, started: timedelta, expires: timedelta, **more: object) -> WorkerInfo:
    fields: dict[str, object] = {
        "id": worker_id,
        "host": "web-1",
        "pid": 4242,
        "started_at": NOW + started,
        "heartbeat_at": NOW + started + timedelta(minutes=1),
        "expires_at": NOW + expires,
        "running": 3,
        "limits": {"max_concurrent": 10, "classes": {}},
        **more,
    }
    return WorkerInfo(**fields)  # type: ignore[arg-type]


def register(db: Path, workers: list[WorkerInfo]) -> None:
    async def run() -> None:
        async with open_sqlite_store(db) as store:
            for w in workers:
                await store.register_worker(w)

    trio.run(run)


def run_cli(db: Path, capsys: pytest.CaptureFixture[str], *args: str) -> str:
    code = main(["--store", f"sqlite:///{db}", "workers", *args])
    out, err = capsys.readouterr()
    assert code == 0, err
    return out


def test_workers_lists_live_rows_as_an_aligned_table(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = tmp_path / "calls.sqlite3"
    hour = timedelta(hours=1)
    register(
        db,
        [
            worker("b:2:bbb", -hour, hour),
            worker("a:1:aaa", -2 * hour, hour, host="evil\nhost\x1b[2J", running=0),
            worker("dead:3:ccc", -3 * hour, -hour),  # expired an hour ago
        ],
    )
    out = run_cli(db, capsys)
    lines = out.splitlines()
    assert [re.split(r" {2,}", line) for line in lines] == [
        ["ID", "HOST", "PID", "STARTED", "LAST HEARTBEAT", "RUNNING"],
        [
            "a:1:aaa",
            "evil\\nhost\\x1b[2J",
            "4242",
            (NOW - 2 * hour).isoformat(),
            (NOW - 2 * hour + timedelta(minutes=1)).isoformat(),
            "0",
        ],
        [
            "b:2:bbb",
            "web-1",
            "4242",
            (NOW - hour).isoformat(),
            (NOW - hour + timedelta(minutes=1)).isoformat(),
            "3",
        ],
    ]
    # Aligned: every column starts at the same offset on every line.
    starts = [m.start() for m in re.finditer(r"(?<=  )\S", lines[0])]
    for line in lines[1:]:
        assert [line[s - 2 : s] for s in starts] == ["  "] * len(starts)
    # Read-only: the expired row is still in the table (a heartbeat deletes it).
    with closing(sqlite3.connect(db)) as conn:
        assert conn.execute("SELECT count(*) FROM futurecalls_workers").fetchone() == (3,)


def test_workers_json_has_every_field(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = tmp_path / "calls.sqlite3"
    register(db, [worker("a:1:aaa", -timedelta(hours=1), timedelta(hours=1))])
    (listed,) = json.loads(run_cli(db, capsys, "--json"))
    assert listed == {
        "id": "a:1:aaa",
        "host": "web-1",
        "pid": 4242,
        "started_at": (NOW - timedelta(hours=1)).isoformat(),
        "heartbeat_at": (NOW - timedelta(minutes=59)).isoformat(),
        "expires_at": (NOW + timedelta(hours=1)).isoformat(),
        "running": 3,
        "limits": {"max_concurrent": 10, "classes": {}},
    }


def test_no_workers_prints_the_header_only(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = tmp_path / "calls.sqlite3"
    register(db, [])  # the store exists (no read-only command creates one)
    assert run_cli(db, capsys).splitlines() == ["ID  HOST  PID  STARTED  LAST HEARTBEAT  RUNNING"]
    assert json.loads(run_cli(db, capsys, "--json")) == []

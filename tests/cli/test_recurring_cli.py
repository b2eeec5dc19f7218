"""``futurecalls recurring add|list|cancel``, run in process through ``cli.main``.

Each test uses an SQLite store in its own ``tmp_path`` (absolute URL). Times are
chosen far from now (``--start`` in 2030, or an explicit fire time) so that every
tick the tests check is known in advance.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import trio

from trio_futurecalls import list_pending, open_sqlite_store
from trio_futurecalls.cli import build_parser


@pytest.mark.parametrize(
    "argv", [["recurring"], ["recurring", "add"], ["recurring", "list"], ["recurring", "cancel"]]
)
def test_help(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        build_parser().parse_args([*argv, "--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: futurecalls {' '.join(argv)}")
    assert "--store" in out


def test_add_list_cancel(cli: Any) -> None:
    cli("migrate")  # only migrate (and worker --create) creates a store
    r = cli(
        "recurring",
        "add",
        "report",
        "--key",
        "daily",
        "--cron",
        "0  9 * * *",
        "--timezone",
        "Europe/Paris",
        "--start",
        "2030-01-01T00:00:00Z",
        "--payload",
        '{"to": "ops", "n": [1, 2]}',
        "--identifier",
        "reports",
        "--misfire",
        "skip",
        "--json",
    )
    daily = r.json()
    assert daily == {
        "status": "added",
        "key": "daily",
        "name": "report",
        "expression": "0 9 * * *",  # as the library normalises it
        "cron": "0 9 * * *",
        "every": None,
        "timezone": "Europe/Paris",
        "start": "2030-01-01T00:00:00+00:00",
        "end": None,
        "misfire": "skip",
        "overlap": "allow",
        "identifier": "reports",
        "payload": {"to": "ops", "n": [1, 2]},
        "next_tick": "2030-01-01T08:00:00+00:00",  # 09:00 in Paris (UTC+1 in winter)
        "last_tick": None,
        "last_call_id": None,
        "runs": 0,
        "skipped_overlap": 0,
        "skipped_misfire": 0,
        "created_at": daily["created_at"],
        "updated_at": daily["created_at"],
    }
    r = cli(
        "recurring",
        "add",
        "tick",
        "--key",
        "hourly",
        "--every",
        "1h",
        "--start",
        "2030-06-01T00:00:00+02:00",
    )
    assert r.out.splitlines()[0] == "added:"
    assert r.table()[2] == [
        "hourly",
        "tick",
        "every 3600 s",
        "UTC",
        "2030-05-31T22:00:00+00:00",
        "0",
        "0/0",
    ]
    # A schedule whose end is past has no next tick: "finished".
    cli(
        "recurring",
        "add",
        "tick",
        "--key",
        "old",
        "--every",
        "60",
        "--start",
        "2020-01-01T00:00:00Z",
        "--end",
        "2020-01-02T00:00:00Z",
    )

    table = cli("recurring", "list").table()
    assert table[0] == [
        "KEY",
        "NAME",
        "EXPRESSION",
        "TIMEZONE",
        "NEXT TICK",
        "LAST TICK",
        "RUNS",
        "SKIPPED OVERLAP/MISFIRE",
    ]
    assert [row[0] for row in table[1:]] == ["daily", "hourly", "old"]  # by key
    assert table[1] == [
        "daily",
        "report",
        "0 9 * * *",
        "Europe/Paris",
        "2030-01-01T08:00:00+00:00",
        "0",
        "0/0",
    ]
    assert table[3] == ["old", "tick", "every 60 s", "UTC", "finished", "0", "0/0"]
    listed = cli("recurring", "list", "--json").json()
    assert [s["key"] for s in listed] == ["daily", "hourly", "old"]
    assert listed[0] == {k: v for k, v in daily.items() if k != "status"}
    assert listed[1]["every"] == 3600.0
    assert listed[2]["next_tick"] is None

    assert cli("recurring", "cancel", "hourly").out == "1\n"
    r = cli("recurring", "cancel", "hourly", rc=1)
    assert r.err == "futurecalls: error: no recurring schedule with key 'hourly'\n"
    assert r.out == ""
    assert [s["key"] for s in cli("recurring", "list", "--json").json()] == ["daily", "old"]


def test_runs_and_skipped_ticks_are_listed(cli: Any, db: Path) -> None:
    cli("migrate")  # only migrate (and worker --create) creates a store
    cli(
        "recurring", "add", "tick", "--key", "t", "--every", "1h", "--start", "2030-01-01T00:00:00Z"
    )

    async def fire() -> list[int]:
        async with open_sqlite_store(db) as store:
            # Ticks 00:00 to 03:00 are due: misfire="once" runs the latest, skips 3.
            fired = await store.fire_recurring(datetime(2030, 1, 1, 3, 30, tzinfo=UTC), 100)
            assert fired.runs == 1
            return [c.id for c in await list_pending(store)]

    (call_id,) = trio.run(fire)
    (row,) = cli("recurring", "list", "--json").json()
    assert (row["runs"], row["skipped_overlap"], row["skipped_misfire"]) == (1, 0, 3)
    assert (row["last_tick"], row["last_call_id"]) == ("2030-01-01T03:00:00+00:00", call_id)
    assert row["next_tick"] == "2030-01-01T04:00:00+00:00"
    assert cli("recurring", "list").table()[1] == [
        "t",
        "tick",
        "every 3600 s",
        "UTC",
        "2030-01-01T04:00:00+00:00",
        "2030-01-01T03:00:00+00:00",
        "1",
        "0/3",
    ]

    # Added again with another timing: updated, counters kept; --keep: left alone.
    r = cli(
        "recurring",
        "add",
        "tick",
        "--key",
        "t",
        "--every",
        "2h",
        "--start",
        "2030-01-01T00:00:00Z",
        "--keep",
        "--json",
    )
    assert (r.json()["status"], r.json()["every"]) == ("unchanged", 3600.0)
    r = cli(
        "recurring", "add", "tick", "--key", "t", "--every", "2h", "--start", "2030-01-01T00:00:00Z"
    )
    assert r.out.splitlines()[0] == "updated:"
    (row,) = cli("recurring", "list", "--json").json()
    assert (row["every"], row["runs"], row["skipped_misfire"]) == (7200.0, 1, 3)
    r = cli(
        "recurring", "add", "tick", "--key", "t", "--every", "2h", "--start", "2030-01-01T00:00:00Z"
    )
    assert r.out.startswith("unchanged (same definition): a schedule with key 't' exists")

    # Cancelling deletes the run that has not started.
    assert cli("recurring", "cancel", "t").out == "1\n"

    async def pending() -> int:
        async with open_sqlite_store(db) as store:
            return len(await list_pending(store))

    assert trio.run(pending) == 0


BAD_USAGE = [
    (["--cron", "61 * * * *"], "invalid cron expression '61 * * * *'"),
    (["--cron", "x"], "invalid cron expression 'x'"),
    (["--cron", "* * * * *", "--timezone", "Mars/Olympus"], "unknown time zone 'Mars/Olympus'"),
    (["--cron", "* * * * *", "--every", "5"], "argument --every: not allowed with argument --cron"),
    ([], "one of the arguments --cron --every is required"),
    (["--every", "0"], "every must be > 0"),
    (["--every", "soon"], "invalid duration 'soon'"),
    (["--every", "1e20"], "invalid duration '1e20'"),
    (["--every", "5", "--start", "2030-01-01"], "--start: time '2030-01-01' has no timezone"),
    (["--every", "5", "--end", "never"], "--end: invalid ISO 8601 time 'never'"),
    (
        ["--every", "5", "--start", "2030-01-02T00:00:00Z", "--end", "2030-01-01T00:00:00Z"],
        "is before start",
    ),
    (["--every", "5", "--payload", "{nope"], "--payload is not valid JSON"),
    (["--every", "5", "--misfire", "never"], "argument --misfire: invalid choice: 'never'"),
    (["--every", "5", "--overlap", "queue"], "argument --overlap: invalid choice: 'queue'"),
    (["--every", "5", "--identifier", ""], "identifier must not be empty"),
]


@pytest.mark.parametrize(("extra", "message"), BAD_USAGE)
def test_usage_errors_exit_2_and_open_no_store(
    cli: Any, db: Path, extra: list[str], message: str
) -> None:
    r = cli("recurring", "add", "tick", "--key", "k", *extra, rc=2)
    assert message in r.err
    assert "Traceback" not in r.err
    assert not db.exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["recurring", "add", "bad name", "--key", "k", "--every", "5"], "call name 'bad name'"),
        (["recurring", "add", "tick", "--key", "", "--every", "5"], "key must be a non-empty str"),
        (
            ["recurring", "add", "tick", "--every", "5"],
            "the following arguments are required: --key",
        ),
        (["recurring", "cancel", "k" * 201], "the limit is 200"),
        (["recurring", "cancel", ""], "key must be a non-empty str"),
        (["recurring"], "the following arguments are required: ACTION"),
    ],
)
def test_bad_names_and_keys_exit_2(cli: Any, db: Path, args: list[str], message: str) -> None:
    r = cli(*args, rc=2)
    assert message in r.err
    assert not db.exists()


def test_add_with_overlap_skip_says_what_it_needs(cli: Any) -> None:
    cli("migrate")  # only migrate (and worker --create) creates a store
    r = cli("recurring", "add", "job", "--key", "k", "--every", "5", "--overlap", "skip")
    assert "overlap=skip holds only if 'job' is at-least-once" in r.err
    plain = cli("recurring", "add", "job", "--key", "k2", "--every", "5")
    assert "overlap=skip" not in plain.err

"""``futurecalls pause|resume NAME`` and the PAUSED column of ``stats``, run in process
through ``cli.main`` on an SQLite store in ``tmp_path``."""

from __future__ import annotations

import json
import re
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import trio

from trio_futurecalls import open_sqlite_store
from trio_futurecalls.cli import build_parser


def paused_in(db: Path) -> dict[str, datetime]:
    async def read() -> dict[str, datetime]:
        async with open_sqlite_store(db) as store:
            return await store.paused()

    return trio.run(read)


@pytest.mark.parametrize("argv", [["pause"], ["resume"]])
def test_help(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        build_parser().parse_args([*argv, "--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: futurecalls {argv[0]}")
    assert "--store" in out


def test_pause_and_resume(cli: Any, db: Path) -> None:
    cli("migrate")  # only migrate (and worker --create) creates a store
    assert cli("pause", "mail.send").out == "paused: mail.send\n"
    (since,) = paused_in(db).values()
    again = cli("pause", "mail.send").out
    assert again == f"already paused: mail.send (since {since.isoformat()})\n"
    assert list(paused_in(db)) == ["mail.send"]
    assert cli("resume", "mail.send").out == "resumed: mail.send\n"
    assert cli("resume", "mail.send").out == "not paused: mail.send\n"
    assert paused_in(db) == {}


@pytest.mark.parametrize("name", ["", "1abc", "has space", "n" * 201])
def test_bad_names_are_usage_errors(cli: Any, db: Path, name: str) -> None:
    for command in ("pause", "resume"):
        r = cli(command, name, rc=2)
        assert "call name" in r.err
    assert paused_in(db) == {}


def test_stats_show_paused_classes(cli: Any) -> None:
    cli("migrate")  # only migrate (and worker --create) creates a store
    cli("schedule", "a", "--in", "0")
    cli("schedule", "b", "--in", "0")
    cli("pause", "a")
    cli("pause", "idle")  # paused, with no pending call: listed too
    stats = json.loads(cli("stats", "--json").out)
    assert stats["a"]["paused"] is True
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT[\d:.]+\+00:00", stats["a"]["paused_at"])
    assert stats["b"] == {"pending": 1, "due": 1, "waiting": 0, "paused": False, "paused_at": None}
    assert stats["idle"]["pending"] == 0
    assert stats["idle"]["paused"] is True
    table = [re.split(r" {2,}", line.rstrip()) for line in cli("stats").out.splitlines()]
    assert table[0] == ["NAME", "PENDING", "DUE", "WAITING", "PAUSED"]
    assert table[1:] == [
        ["a", "1", "1", "0", "yes"],
        ["b", "1", "1", "0"],
        ["idle", "0", "0", "0", "yes"],
    ]

"""``futurecalls cancel --id N | --identifier X``, run in process through ``cli.main`` on
an SQLite store in ``tmp_path``: the outcome of a pending, a running (leased) and an
unknown call, and the count of an identifier."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import trio

from trio_futurecalls import Lease, NewCall, PendingQuery, open_sqlite_store
from trio_futurecalls.cli import main


def run_cli(db: Path, capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    code = main(["--store", f"sqlite:///{db}", *args])
    return code, capsys.readouterr().out


def prepare(db: Path) -> tuple[int, int, int]:
    """A pending call, a leased (running) one and an at-most-once one claimed."""

    async def go() -> tuple[int, int, int]:
        async with open_sqlite_store(db) as store:
            now = datetime.now(UTC)

            def new(name: str, identifier: str | None = None) -> NewCall:
                return NewCall(
                    name=name, payload="null", due_at=now, scheduled_at=now, identifier=identifier
                )

            (leased,) = await store.schedule([new("a", "job")])
            lease = Lease(
                owner="w", expires_at=now.replace(year=now.year + 1), names=frozenset({"a"})
            )
            assert [c.id for c in (await store.claim(now, {"a": 1}, 1, lease)).calls] == [leased]
            (gone,) = await store.schedule([new("b")])
            assert [c.id for c in (await store.claim(now, {"b": 1}, 1)).calls] == [gone]
            (pending,) = await store.schedule([new("c", "job")])
            return pending, leased, gone

    return trio.run(go)


def test_cancel_by_id_prints_the_outcome(tmp_path: Path, capsys: Any) -> None:
    db = tmp_path / "calls.sqlite3"
    assert main(["--store", f"sqlite:///{db}", "migrate"]) == 0
    capsys.readouterr()
    pending, leased, gone = prepare(db)
    assert run_cli(db, capsys, "cancel", "--id", str(pending)) == (0, "pending\n")
    assert run_cli(db, capsys, "cancel", "--id", str(leased)) == (0, "running\n")
    # No live worker runs it (nor anything): not found, at once.
    assert run_cli(db, capsys, "cancel", "--id", str(gone)) == (1, "not_found\n")
    assert run_cli(db, capsys, "cancel", "--id", "999") == (1, "not_found\n")


def test_cancel_identifier_counts_pending_and_running(tmp_path: Path, capsys: Any) -> None:
    db = tmp_path / "calls.sqlite3"
    assert main(["--store", f"sqlite:///{db}", "migrate"]) == 0
    capsys.readouterr()
    prepare(db)
    assert run_cli(db, capsys, "cancel", "--identifier", "job") == (0, "2\n")
    assert run_cli(db, capsys, "cancel", "--identifier", "job") == (0, "0\n")

    async def left() -> list[str]:
        async with open_sqlite_store(db) as store:
            return [c.name for c in await store.pending(PendingQuery(now=datetime.now(UTC)))]

    assert trio.run(left) == []

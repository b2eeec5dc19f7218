"""Cancel a call running in another process (tests/processes/cancel_worker.py).

A call runs in worker process A (two workers run, so that both must answer); this
process (B) cancels it by id: ``invoke`` in A sees ``trio.Cancelled`` (measured from
just before the cancel to A's log line; logged, and bounded generously in the
assert: real processes in real time), the answer is RUNNING, and the call does not
run again (no second start within several lease lengths and recheck intervals).
On PostgreSQL the NOTIFY carries the request (milliseconds); on SQLite A reads it
within its recheck interval (0.05 s in these workers).
"""

from __future__ import annotations

import logging
import sys
import time
from contextlib import AbstractAsyncContextManager
from datetime import UTC, datetime
from pathlib import Path

import pytest
import trio
from worker_procs import worker_processes

from trio_futurecalls import CancelOutcome, NewCall, Store
from trio_futurecalls._cancels import cancel_call
from trio_futurecalls._options import utc_now

TESTS = Path(__file__).parent
_log = logging.getLogger(__name__)


def workers(
    url: str, log_path: Path, count: int
) -> AbstractAsyncContextManager[list[trio.Process]]:
    argv = [sys.executable, str(TESTS / "cancel_worker.py"), url, str(log_path)]
    return worker_processes(argv, count)


def events(log_path: Path, kind: str, call_id: int) -> list[float]:
    if not log_path.exists():
        return []
    found = []
    for line in log_path.read_text().splitlines():
        k, i, at = line.split()
        if k == kind and int(i) == call_id:
            found.append(float(at))
    return found


async def wait_for_event(log_path: Path, kind: str, call_id: int, seconds: float) -> float:
    with trio.fail_after(seconds):
        while not (found := events(log_path, kind, call_id)):  # noqa: ASYNC110 - other processes
            await trio.sleep(0.01)
    return found[0]


async def check_cancel(url: str, store: Store, tmp_path: Path, name: str, what: str) -> None:
    log_path = tmp_path / "calls.log"
    async with workers(url, log_path, 2):
        now = datetime.now(UTC)
        (call_id,) = await store.schedule(
            [NewCall(name=name, payload="null", due_at=now, scheduled_at=now)]
        )
        await wait_for_event(log_path, "start", call_id, 30)
        before = time.time()
        outcome = await cancel_call(store, call_id, utc_now)
        answered = time.time() - before
        seen = await wait_for_event(log_path, "cancelled", call_id, 10) - before
        _log.warning(
            "%s %s: invoke saw Cancelled %.3f s after cancel began; cancel answered in %.3f s",
            what,
            name,
            seen,
            answered,
        )
        print(f"{what} {name}: Cancelled after {seen:.3f} s; answered in {answered:.3f} s")
        assert outcome is CancelOutcome.RUNNING
        assert seen < 5.0
        # Not run again: several lease lengths (3 s) pass with no second start.
        await trio.sleep(4.0)
        assert len(events(log_path, "start", call_id)) == 1
        assert events(log_path, "end", call_id) == []
    assert await cancel_call(store, call_id, utc_now) is CancelOutcome.NOT_FOUND


NAMES = pytest.mark.parametrize("name", ["cancel.long", "cancel.long_leased"])


@NAMES
async def test_sqlite_cancel_reaches_another_process(tmp_path: Path, name: str) -> None:
    from trio_futurecalls import open_sqlite_store

    path = tmp_path / "cancel.sqlite3"
    async with open_sqlite_store(path) as store:
        await check_cancel(f"sqlite:///{path}", store, tmp_path, name, "sqlite")


@NAMES
async def test_postgres_cancel_reaches_another_process(tmp_path: Path, name: str) -> None:
    from pg_support import open_test_postgres_store, pg_dsn

    async with open_test_postgres_store() as store:
        await check_cancel(f"{pg_dsn()}#{store.schema}", store, tmp_path, name, "postgres")

"""``examples/webapp.py`` runs as a newcomer runs it: a POST schedules a call that the
scheduler in the app's lifespan runs, and SIGTERM stops it cleanly, keeping a call
not yet due in the store."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import httpx
import trio

from trio_futurecalls import PendingQuery, open_sqlite_store

EXAMPLE = Path(__file__).parents[2] / "examples" / "webapp.py"


async def test_webapp_schedules_from_a_request_and_runs_the_call(tmp_path: Path) -> None:
    path = tmp_path / "webapp.sqlite3"
    argv = [sys.executable, str(EXAMPLE), "--port", "0", "--store", f"sqlite:///{path}"]
    app = await trio.lowlevel.open_process(argv, stderr=subprocess.PIPE)
    assert app.stderr is not None
    log = b""
    try:
        with trio.fail_after(30):
            while not (found := re.search(rb"Running on (http://127\.0\.0\.1:\d+)", log)):
                chunk = await app.stderr.receive_some(4096)
                assert chunk, log.decode()
                log += chunk
        base = found.group(1).decode()
        async with httpx.AsyncClient(base_url=base) as client:
            with trio.fail_after(30):
                now = await client.post("/signup", json={"email": "ada@example.com"})
                later = await client.post(
                    "/signup", json={"email": "bob@example.com", "delay": 3600}
                )
                bad = await client.post("/signup", content=b"not json")
                assert now.status_code == 202
                assert later.status_code == 202
                assert bad.status_code == 400
                # Wait for the call to have run (a condition, not a time): the other
                # process can only be asked.
                while (await client.get("/sent")).json() != ["ada@example.com"]:  # noqa: ASYNC110
                    await trio.sleep(0.05)
        app.send_signal(signal.SIGTERM)
        with trio.fail_after(30):
            while chunk := await app.stderr.receive_some(4096):
                log += chunk
            await app.wait()
    finally:
        if app.returncode is None:
            app.kill()
            with trio.CancelScope(shield=True):
                await app.wait()
    assert app.returncode == 0, log.decode()
    assert b"sent a welcome email to ada@example.com" in log
    async with open_sqlite_store(path) as store:
        pending = await store.pending(PendingQuery(now=datetime.now(UTC)))
    assert [call.id for call in pending] == [later.json()["call_id"]]

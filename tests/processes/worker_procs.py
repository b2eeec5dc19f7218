"""Worker processes for the process tests: started, waited for, always killed.

``worker_processes(argv, count)`` starts ``count`` processes running ``argv`` (each
prints "ready" once its scheduler runs) and yields them; on leaving, those still
running get SIGKILL, so that no worker outlives its test.
"""

from __future__ import annotations

import signal
import subprocess
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager

import trio


@asynccontextmanager
async def worker_processes(argv: Sequence[str], count: int) -> AsyncIterator[list[trio.Process]]:
    procs: list[trio.Process] = []
    try:
        for _ in range(count):
            proc = await trio.lowlevel.open_process(list(argv), stdout=subprocess.PIPE)
            procs.append(proc)
            assert proc.stdout is not None
            with trio.fail_after(30):
                line = await proc.stdout.receive_some()
            assert b"ready" in line, line
        yield procs
    finally:
        for proc in procs:
            if proc.returncode is None:
                proc.send_signal(signal.SIGKILL)
            with trio.CancelScope(shield=True):
                await proc.wait()
                if proc.stdout is not None:
                    await proc.stdout.aclose()

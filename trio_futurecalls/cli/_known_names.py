"""Names the live workers run, read from the workers registry: ``schedule`` refuses a
name none of them registered (a typo would otherwise wait in the store forever).

Each worker that executes calls registers in its store with its classes
(``WorkerInfo.limits["classes"]``) and heartbeats; its row is listed until it
expires. While no worker is registered (none started yet, or a store only ever used
from Python) nothing can be checked: ``schedule`` warns and schedules.
"""

from __future__ import annotations

import difflib
import sys
from datetime import UTC, datetime

from .. import FutureCallsError, Store, WorkerInfo


class UnknownNameError(FutureCallsError):
    """No live worker registered the name being scheduled (exit code 1)."""


def names_of(workers: list[WorkerInfo]) -> set[str]:
    """The call names the ``workers`` registered (a row another program wrote may
    hold anything: only string keys of a ``classes`` object count)."""
    names: set[str] = set()
    for worker in workers:
        classes = worker.limits.get("classes") if isinstance(worker.limits, dict) else None
        if isinstance(classes, dict):
            names.update(name for name in classes if isinstance(name, str))
    return names


async def live_names(store: Store) -> tuple[int, set[str]]:
    """How many workers are live, and the names they run."""
    workers = await store.workers(datetime.now(UTC))
    return len(workers), names_of(workers)


async def check_known_name(store: Store, name: str) -> None:
    """Raise :class:`UnknownNameError` if workers are live and none runs ``name``;
    warn if no worker is registered."""
    count, names = await live_names(store)
    if not count:
        # A one-shot command's note, worded as its errors are (not a log line).
        print(
            f"futurecalls: warning: no worker is registered in this store, so no one can "
            f"say whether {name!r} is a call name they run; scheduled all the same",
            file=sys.stderr,
        )
        return
    if name in names:
        return
    close = difflib.get_close_matches(name, sorted(names), n=1)
    maybe = f"did you mean {close[0]!r}? " if close else ""
    shown = ", ".join(sorted(names)) or "none"
    raise UnknownNameError(
        f"no live worker runs calls named {name!r} ({count} worker(s) registered, "
        f"running: {shown}); {maybe}--allow-unknown schedules it anyway "
        "(a worker that registers the name later will run it)"
    )

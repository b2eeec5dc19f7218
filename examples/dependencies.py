"""Dependencies: an extract-transform-load chain, a fan-in, and a failure that stops
what depends on it. Runs on the embedded SQLite store, in a temporary file.

Run it with:  python examples/dependencies.py
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import trio

from trio_futurecalls import Delivery, FutureCall, open_scheduler, open_sqlite_store


class Step(FutureCall):
    """Prints its payload's message; fails if asked to."""

    name = "step"
    max_concurrent = 5
    delivery = Delivery.AT_LEAST_ONCE  # a running step stays visible to after=
    max_attempts = 1  # fail for good at once (the example's failure is on purpose)

    async def invoke(self, session: Any, payload: dict[str, Any]) -> None:
        await trio.sleep(payload.get("sleep", 0.1))
        if payload.get("fail"):
            raise RuntimeError(f"{payload['say']} failed")
        print(f"  {self.info.id:>3}  {payload['say']}")


async def settle(scheduler: Any) -> None:
    """Wait until nothing is pending or running (looking every 50 ms, for a minute)."""
    for _ in range(1200):
        if not await scheduler.pending() and not scheduler.running():
            return
        await trio.sleep(0.05)
    raise TimeoutError("calls still pending after a minute")


async def main() -> None:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "calls.sqlite3"
        async with (
            open_sqlite_store(path) as store,
            open_scheduler(store, [Step]) as scheduler,
        ):
            print("a chain (each step after the one before):")
            extract = await scheduler.schedule(Step, {"say": "extract"}, delay=0.2)
            transform = await scheduler.schedule(Step, {"say": "transform"}, after=[extract])
            await scheduler.schedule(Step, {"say": "load"}, after=[transform])
            await settle(scheduler)

            print("a fan-in (the report after five parts, which run side by side):")
            parts = await scheduler.schedule_many(
                [(Step, {"say": f"part {k}", "sleep": 0.1 * k}, 0.1) for k in range(1, 6)]
            )
            await scheduler.schedule(Step, {"say": "report"}, after=parts)
            await settle(scheduler)

            print("a chain whose middle step fails:")
            ids = await scheduler.chain(
                [
                    (Step, {"say": "fetch"}),
                    (Step, {"say": "parse", "fail": True}),
                    (Step, {"say": "store"}),
                    (Step, {"say": "notify"}),
                ]
            )
            await settle(scheduler)
            for dead in await store.dead_letters():
                if dead.call_id in ids:
                    print(f"  {dead.call_id:>3}  dead letter: {dead.error.splitlines()[-1]}")


if __name__ == "__main__":
    trio.run(main)

"""A separate process for the SQLite tests: schedules a call, then waits to be killed."""

from __future__ import annotations

import sys
from typing import Any

import trio

from trio_futurecalls import FutureCall, open_sqlite_store, schedule_call


class Remember(FutureCall):
    """Writes its payload into a table through its own session."""

    name = "remember"
    max_concurrent = 4

    async def invoke(self, session: Any, payload: Any) -> None:
        await session.execute("CREATE TABLE IF NOT EXISTS remembered (value TEXT)")
        await session.execute("INSERT INTO remembered VALUES (?)", (payload,))


async def main(path: str, value: str, delay: float) -> None:
    async with open_sqlite_store(path) as store:
        await schedule_call(store, Remember, value, delay=delay)
        print("scheduled", flush=True)
        await trio.sleep_forever()


if __name__ == "__main__":
    trio.run(main, sys.argv[1], sys.argv[2], float(sys.argv[3]))

"""A producer: a process that only schedules calls (a web app, a cron script, a shell).

It needs no scheduler and does not import the call classes: it schedules by name with
plain JSON payloads, and the worker's class (``examples/worker.py``: ``send-email``,
whose payload is an attrs ``Email``) decodes them when the calls run. The store opened
here only schedules, so it holds no LISTEN connection (PostgreSQL) and polls nothing
(SQLite); the workers hear of the new calls at once all the same.

Run it with:  python examples/producer.py [STORE_URL] [--count N] [--delay SECONDS]
(STORE_URL: ``sqlite:///calls.sqlite3`` by default, or ``$CALLS_STORE``.)
"""

from __future__ import annotations

import argparse
import os

import trio

from trio_futurecalls import CallRequest, open_store, schedule_call, schedule_many


async def main(url: str, count: int, delay: float) -> None:
    async with open_store(url) as store:
        # Many calls in one round trip, by name: (name, JSON payload, delay in seconds).
        ids = await schedule_many(
            store,
            [
                ("send-email", {"to": f"user{i}@example.com", "subject": "hello"}, delay)
                for i in range(count)
            ],
        )
        print(f"scheduled {len(ids)} emails: ids {ids[0]}..{ids[-1]}" if ids else "none")
        # One call with more options, also by name. A unique key makes it "schedule if
        # absent": while a digest is pending, running this script again adds none.
        digest = await schedule_call(
            store,
            "send-email",
            {"to": "team@example.com", "subject": "daily digest"},
            delay=delay,
            identifier="digest",
            unique_key="digest:today",
            priority=10,
        )
        print(f"digest: id {digest}")
        # A CallRequest names every option of schedule_many's requests by keyword.
        (welcome,) = await schedule_many(
            store,
            [
                CallRequest(
                    call_class="send-email", payload={"to": "new@example.com", "subject": "welcome"}
                )
            ],
        )
        print(f"welcome: id {welcome}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "url", nargs="?", default=os.environ.get("CALLS_STORE", "sqlite:///calls.sqlite3")
    )
    parser.add_argument("--count", type=int, default=10, help="emails to schedule (10)")
    parser.add_argument("--delay", type=float, default=0.0, help="seconds from now (0)")
    arguments = parser.parse_args()
    trio.run(main, arguments.url, arguments.count, arguments.delay)

"""A worker for containers: runs calls until SIGTERM (or Ctrl-C), then stops gracefully.

Container runtimes stop a process with SIGTERM and, after a grace period of their own
(Docker: 10 s, Kubernetes: ``terminationGracePeriodSeconds``, 30 s), SIGKILL. On the
first SIGTERM or SIGINT this worker stops starting calls and gives the running ones
``--grace`` seconds (keep it below the runtime's) to finish; a second signal cancels
them at once. The calls are at-least-once, so a call cancelled at the deadline (or
killed with its worker) runs again later; calls that had not started stay in the store.
Either way, no call is lost.

The calls write to the store's database through their session: the same code runs on
SQLite and PostgreSQL (``$1`` placeholders work on both).

Run it with:  python examples/worker.py [STORE_URL] [--grace SECONDS]
(STORE_URL: ``sqlite:///calls.sqlite3`` by default, or ``$CALLS_STORE``; schedule
calls from another process with ``python examples/producer.py``.)
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
from collections.abc import AsyncIterator

import attrs
import trio

from trio_futurecalls import (
    Delivery,
    FutureCall,
    Scheduler,
    Session,
    open_scheduler,
    open_store,
)


def say(text: str) -> None:
    print(text, flush=True)  # at once, line by line: container logs read a pipe


@attrs.frozen
class Email:
    to: str
    subject: str


class SendEmail(FutureCall):
    name = "send-email"
    max_concurrent = 2
    payload_type = Email
    # At-least-once: the row stays until the call finishes, so a call cut short by a
    # shutdown (or a killed container) runs again.
    delivery = Delivery.AT_LEAST_ONCE

    async def invoke(self, session: Session, payload: Email) -> None:
        await trio.sleep(0.3)  # pretend to talk to a mail server
        await session.execute(
            "CREATE TABLE IF NOT EXISTS example_outbox (call_id BIGINT PRIMARY KEY, "
            "recipient TEXT NOT NULL)"
        )
        await session.execute(
            # Idempotent, as at-least-once calls must be: a run again adds no row.
            "INSERT INTO example_outbox (call_id, recipient) VALUES ($1, $2) "
            "ON CONFLICT (call_id) DO NOTHING",
            self.info.id,
            payload.to,
        )
        say(f"sent #{self.info.id} to {payload.to}")


async def run_until_signalled(scheduler: Scheduler, signals: AsyncIterator[int]) -> None:
    """Wait for SIGTERM or SIGINT, then shut the scheduler down: running calls get its
    grace period; a second signal cancels them at once."""
    async for signum in signals:
        grace = scheduler.options.grace_period
        say(f"{signal.Signals(signum).name}: stopping; running calls get {grace:g} s")
        break
    async with trio.open_nursery() as nursery:

        async def cut_short() -> None:
            async for signum in signals:
                say(f"{signal.Signals(signum).name} again: cancelling running calls now")
                await scheduler.shutdown(0)  # shortens the grace period to nothing

        nursery.start_soon(cut_short)
        await scheduler.shutdown()  # returns once every running call has ended
        nursery.cancel_scope.cancel()


async def main(url: str, grace: float) -> None:
    # Open the receiver before the scheduler starts: from then on SIGTERM and SIGINT
    # no longer kill the process at once, they queue here.
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async with (
            open_store(url) as store,
            open_scheduler(store, [SendEmail], grace_period=grace) as scheduler,
        ):
            say(f"worker ready (pid {os.getpid()})")
            await run_until_signalled(scheduler, signals)
    counts = scheduler.statistics().classes[SendEmail.name]
    say(f"stopped cleanly: {counts.succeeded} sent, {counts.cancelled} cut short (they run again)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "url", nargs="?", default=os.environ.get("CALLS_STORE", "sqlite:///calls.sqlite3")
    )
    parser.add_argument(
        "--grace", type=float, default=8.0, help="seconds (default 8: Docker's own is 10)"
    )
    arguments = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    trio.run(main, arguments.url, arguments.grace)

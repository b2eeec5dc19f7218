"""``futurecalls dashboard``: serve the web dashboard over the store of ``--store``.

A thin command over :func:`trio_futurecalls.dashboard.serve_dashboard`: no scheduler
runs here, so the pages show what the store knows. Runs until SIGINT or SIGTERM (exit
0). The token may come from ``$FUTURECALLS_DASHBOARD_TOKEN`` rather than the command
line, where other users of the machine could read it (``ps``).
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
from functools import partial
from typing import Final

import trio

from .. import FutureCallsError
from .._validate import is_loopback
from ._commands import store_of

ENV_TOKEN: Final = "FUTURECALLS_DASHBOARD_TOKEN"

_log = logging.getLogger("trio_futurecalls.cli")


async def cmd_dashboard(args: argparse.Namespace) -> int:
    try:
        from ..dashboard import serve_dashboard
    except ImportError as exc:
        raise FutureCallsError(f"dashboard: {exc}") from None
    token = args.token or os.environ.get(ENV_TOKEN) or None
    host, port = args.host, args.port
    async with store_of(args) as store, trio.open_nursery() as nursery:
        serve = partial(
            serve_dashboard,
            store,
            host=host,
            port=port,
            allow_actions=args.allow_actions,
            token=token,
            store_label=args.store,
        )
        try:
            bound = await nursery.start(serve)
        except OSError as exc:
            raise FutureCallsError(f"cannot serve the dashboard on {host}:{port}: {exc}") from None
        if token is None and not is_loopback(host):
            _log.warning(
                "the dashboard listens on %s without a token: anyone who can reach it sees "
                "the queues; set --token or $%s",
                host,
                ENV_TOKEN,
            )
        url_host = f"[{host}]" if ":" in host else host
        mode = "actions allowed" if args.allow_actions else "read-only"
        print(f"dashboard on http://{url_host}:{bound}/ ({mode}); Ctrl-C to stop", flush=True)
        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async for _ in signals:
                break
        nursery.cancel_scope.cancel()
    return 0

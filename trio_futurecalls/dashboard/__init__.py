"""A web dashboard for operators: queues, calls, dead letters, schedules and workers.

Optional: needs the ``dashboard`` extra (``pip install 'trio_futurecalls[dashboard]'``).
Serve it from the Trio program that runs a scheduler (or over a bare store)::

    from trio_futurecalls.dashboard import serve_dashboard

    async with open_scheduler(store, calls) as scheduler, trio.open_nursery() as nursery:
        port = await nursery.start(partial(serve_dashboard, scheduler, port=8470))

or run ``futurecalls dashboard --store URL``. It is a Starlette app (anyio, on Trio)
served by Hypercorn's Trio worker in the caller's nursery, with Jinja2 templates and
one small script (no build step). Over a scheduler, Prometheus metrics are served at
``/metrics`` on the same server (when the ``prometheus`` extra is installed).

Safe by default: it binds 127.0.0.1 (and then answers only requests naming a loopback
host), it is read-only unless ``allow_actions=True``; actions are POSTs checked for a
per-server CSRF token and the same origin; ``token`` guards every route with a bearer
token (or a login cookie for browsers). See ``_security.py``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Collection
from datetime import UTC, datetime
from typing import Final

import trio

try:
    import jinja2  # noqa: F401
    import starlette  # noqa: F401

    from .._metrics_http import serve_asgi
except ImportError as exc:  # pragma: no cover - exercised by a test with the module hidden
    raise ImportError(
        "trio_futurecalls.dashboard needs Starlette, Jinja2 and Hypercorn; install the "
        "`dashboard` extra: pip install 'trio_futurecalls[dashboard]'"
    ) from exc

from starlette.types import ASGIApp

from .._errors import InvalidArgumentError
from .._redact import redact
from .._scheduler import Scheduler
from .._store import Store
from .._validate import check_host, is_loopback
from ._app import DashboardSettings, build_app
from ._data import Source
from ._security import LOOPBACK_HOSTS, new_secret

__all__ = ["DEFAULT_PORT", "dashboard_app", "serve_dashboard"]

#: The port ``futurecalls dashboard`` listens on unless told otherwise.
DEFAULT_PORT: Final = 8470


def _loopback_hosts(host: str) -> frozenset[str]:
    """The hosts a request to a dashboard bound to the loopback ``host`` may name: the
    usual loopback names, and ``host`` itself (127.0.0.2 is loopback too), as a
    ``Host`` header writes it (an IPv6 address in brackets)."""
    bare = host.strip("[]").lower()
    return LOOPBACK_HOSTS | {f"[{bare}]" if ":" in bare else bare}


def _source(target: Store | Scheduler, store_label: str | None) -> Source:
    if isinstance(target, Scheduler):
        scheduler: Scheduler | None = target
        store = target.store
    elif isinstance(target, Store):
        scheduler, store = None, target
    else:
        raise InvalidArgumentError(
            f"the dashboard needs a Store or a Scheduler, got {type(target).__name__}"
        )
    if store_label is not None and not isinstance(store_label, str):
        raise InvalidArgumentError("store_label must be a str or None")
    label = type(store).__name__ if store_label is None else redact(store_label)
    return Source(store=store, scheduler=scheduler, label=label)


def _metrics_app(scheduler: Scheduler | None) -> ASGIApp | None:
    if scheduler is None:
        return None
    try:
        from ..metrics import metrics_app
    except ImportError:
        return None
    app: ASGIApp = metrics_app(scheduler)  # type: ignore[assignment]
    return app


def dashboard_app(
    target: Store | Scheduler,
    *,
    allow_actions: bool = False,
    token: str | None = None,
    store_label: str | None = None,
    allowed_hosts: Collection[str] | None = None,
    refresh_seconds: float = 3.0,
    metrics: bool = True,
    clock: Callable[[], datetime] | None = None,
) -> ASGIApp:
    """The dashboard over ``target`` (a store, or a running scheduler) as an ASGI app,
    to mount in an app of your own or to test in-process; :func:`serve_dashboard`
    serves it.

    ``store_label`` names the store on pages (a URL: its password is hidden);
    ``allowed_hosts``: the hosts the ``Host`` header may name (None: any);
    ``metrics``: serve ``/metrics`` (over a scheduler, with the ``prometheus`` extra);
    ``clock``: the current aware time (default: the scheduler's clock, else the system's).
    """
    if not isinstance(allow_actions, bool):
        raise InvalidArgumentError(f"allow_actions must be a bool, got {allow_actions!r}")
    if token is not None and (not isinstance(token, str) or len(token) < 8):
        raise InvalidArgumentError("token must be a str of at least 8 characters, or None")
    if (
        isinstance(refresh_seconds, bool)
        or not isinstance(refresh_seconds, int | float)
        or not math.isfinite(refresh_seconds)
        or not 0.5 <= refresh_seconds <= 3600
    ):
        raise InvalidArgumentError(
            f"refresh_seconds must be a number from 0.5 to 3600, got {refresh_seconds!r}"
        )
    if isinstance(allowed_hosts, str):
        raise InvalidArgumentError("allowed_hosts must be a collection of host names, not a str")
    source = _source(target, store_label)
    if clock is None:
        clock = _system_clock if source.scheduler is None else source.scheduler.options.clock
    settings = DashboardSettings(
        allow_actions=allow_actions,
        token=token,
        secret=new_secret(),
        refresh_seconds=float(refresh_seconds),
        allowed_hosts=None if allowed_hosts is None else frozenset(allowed_hosts),
        secrets=() if store_label is None else tuple(_secrets(store_label)),
        clock=clock,
    )
    return build_app(source, settings, _metrics_app(source.scheduler) if metrics else None)


def _system_clock() -> datetime:
    return datetime.now(UTC)


def _secrets(url: str) -> list[str]:
    from .._redact import secrets_in

    return secrets_in(url)


async def serve_dashboard(
    target: Store | Scheduler,
    *,
    host: str = "127.0.0.1",
    port: int = DEFAULT_PORT,
    allow_actions: bool = False,
    token: str | None = None,
    store_label: str | None = None,
    refresh_seconds: float = 3.0,
    metrics: bool = True,
    task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve the dashboard over ``target`` at ``http://host:port/`` until cancelled.

    Start it with ``await nursery.start(...)``: set-up errors (port in use) surface
    there, and the value is the port actually bound (``port=0`` picks a free one).
    Bound to a loopback address, it answers only requests that name a loopback host
    (no DNS rebinding); bound elsewhere, it answers any host name, so set ``token``.
    The other keywords are :func:`dashboard_app`'s.
    """
    if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
        raise InvalidArgumentError(f"port must be an int within 0..65535, got {port!r}")
    check_host(host)
    app = dashboard_app(
        target,
        allow_actions=allow_actions,
        token=token,
        store_label=store_label,
        allowed_hosts=_loopback_hosts(host) if is_loopback(host) else None,
        refresh_seconds=refresh_seconds,
        metrics=metrics,
    )
    await serve_asgi(
        app,  # type: ignore[arg-type]
        host=host,
        port=port,
        what="the dashboard",
        task_status=task_status,
    )

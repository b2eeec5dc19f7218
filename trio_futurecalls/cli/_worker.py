"""The ``worker`` and ``run-once`` commands: load the call classes, run a scheduler,
and shut it down on SIGINT/SIGTERM (gracefully the first time, at once the second)."""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import signal
import sys
import traceback
from collections.abc import Awaitable, Callable, Iterable
from contextlib import AbstractAsyncContextManager
from functools import partial
from typing import Any

import trio

from .. import (
    ClassStatistics,
    Delivery,
    FutureCall,
    FutureCallsError,
    SchedulerStatistics,
    Store,
    open_scheduler,
    run_due_calls,
)
from .._call_end_log import CALL_END_LOGGER
from .._redact import redact
from ._arguments import NOT_GIVEN, UsageError
from ._store import Sizing, open_cli_store, worker_sizing

_log = logging.getLogger("trio_futurecalls.cli")


class CallsImportError(FutureCallsError):
    """Importing the module of ``MODULE:ATTR`` raised (exit code 1)."""


def _import_failure(module_name: str, exc: Exception) -> str:
    """What went wrong importing ``module_name``: the error, where it was raised (the
    innermost line of the user's code), and how to see the whole traceback."""
    if isinstance(exc, SyntaxError) and exc.filename:
        place = f" at {exc.filename}:{exc.lineno}"
    else:
        frames = traceback.extract_tb(exc.__traceback__)
        ours = [f for f in frames if "importlib" not in f.filename]
        place = f" at {ours[-1].filename}:{ours[-1].lineno}" if ours else ""
    return (
        f"importing module {module_name!r} raised {type(exc).__name__}: {exc}{place} "
        "(run with -v for the traceback)"
    )


def load_calls(spec: str) -> list[type[FutureCall]]:
    """Import ``MODULE:ATTR``: a FutureCall subclass or an iterable of them."""
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise UsageError(f"expected MODULE:ATTR (e.g. myapp.calls:CALLS), got {spec!r}")
    cwd = os.getcwd()
    if cwd not in sys.path:
        sys.path.insert(0, cwd)
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name is not None and (
            module_name == exc.name or module_name.startswith(exc.name + ".")
        ):
            raise UsageError(f"cannot import module {module_name!r}: {exc}") from None
        raise CallsImportError(_import_failure(module_name, exc)) from exc
    except Exception as exc:  # the user's module raised (or has a syntax error)
        raise CallsImportError(_import_failure(module_name, exc)) from exc
    value: object = module
    for part in attr.split("."):
        try:
            value = getattr(value, part)
        except AttributeError:
            raise UsageError(f"module {module_name!r} has no attribute {attr!r}") from None
    if isinstance(value, type):
        classes: list[object] = [value]
    elif isinstance(value, Iterable) and not isinstance(value, str | bytes):
        classes = list(value)
    else:
        raise UsageError(
            f"{spec} must be a FutureCall subclass or an iterable of them, got {value!r}"
        )
    calls: list[type[FutureCall]] = []
    for cls in classes:
        if not (isinstance(cls, type) and issubclass(cls, FutureCall)):
            raise UsageError(f"{spec}: {cls!r} is not a FutureCall subclass")
        calls.append(cls)
    if not calls:
        raise UsageError(f"{spec} holds no FutureCall classes")
    return calls


def _scheduler_options(args: argparse.Namespace, sizing: Sizing) -> dict[str, Any]:
    options: dict[str, Any] = {
        "grace_period": args.grace,
        "default_delivery": Delivery(args.delivery.replace("-", "_")),
    }
    if sizing.max_concurrent is not NOT_GIVEN:
        options["max_concurrent"] = sizing.max_concurrent
    for pool in ("max_threads", "max_processes"):
        if getattr(args, pool) is not None:
            options[pool] = getattr(args, pool)
    return options


async def _sizing(args: argparse.Namespace) -> Sizing:
    """The pool and global limit (``_store.py``); logs a limit lowered to fit, and
    switches the line per finished call."""
    if not args.call_log:
        logging.getLogger(CALL_END_LOGGER).setLevel(logging.WARNING)
    sizing = await worker_sizing(args, args.create)
    if sizing.note:
        _log.info("%s", sizing.note)
    return sizing


def _store(args: argparse.Namespace, sizing: Sizing) -> AbstractAsyncContextManager[Store]:
    # (Migrating again what the first opening of worker_sizing created does nothing.)
    create: bool = args.create
    return open_cli_store(args, create=create, pool_size=sizing.pool_size)


async def cmd_worker(args: argparse.Namespace) -> int:
    classes = load_calls(args.calls)
    sizing = await _sizing(args)
    serve_metrics: Callable[..., Awaitable[None]] | None = None
    if args.metrics_port is not None:
        try:
            from .. import metrics
        except ImportError as exc:
            raise FutureCallsError(f"--metrics-port: {exc}") from None
        serve_metrics = metrics.serve_metrics
    first_signal = trio.Event()
    forced: list[int] = []
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with trio.open_nursery() as top:

            async def watch_signals() -> None:
                async for signum in signals:
                    name = signal.Signals(signum).name
                    if not first_signal.is_set():
                        _log.info(
                            "received %s: shutting down gracefully (grace %.3g s); "
                            "send it again to cancel running calls at once",
                            name,
                            args.grace,
                        )
                        first_signal.set()
                    else:
                        _log.warning("received %s again: cancelling running calls now", name)
                        forced.append(signum)
                        top.cancel_scope.cancel()
                        return

            top.start_soon(watch_signals)
            await _run_worker(args, classes, sizing, first_signal, serve_metrics)
            top.cancel_scope.cancel()
    if forced:
        _log.info("worker stopped: running calls were cancelled")
        return 128 + forced[0]
    return 0


async def _run_worker(
    args: argparse.Namespace,
    classes: list[type[FutureCall]],
    sizing: Sizing,
    stop: trio.Event,
    serve_metrics: Callable[..., Awaitable[None]] | None,
) -> None:
    # The metrics server's nursery is outside the scheduler's block, so that a server
    # that cannot start surfaces as its own error, and is stopped after the drain.
    async with _store(args, sizing) as store, trio.open_nursery() as nursery:
        options = _scheduler_options(args, sizing)
        async with open_scheduler(store, classes, execute=args.execute, **options) as sched:
            metrics = ""
            if serve_metrics is not None:
                host, port = args.metrics_host, args.metrics_port
                try:
                    port = await nursery.start(partial(serve_metrics, sched, host=host, port=port))
                except OSError as exc:
                    raise FutureCallsError(
                        f"cannot serve metrics on {host}:{port}: {exc}"
                    ) from None
                metrics = f", metrics on http://{host}:{port}/metrics"
            limit = "unlimited" if sched.max_concurrent is None else sched.max_concurrent
            pool = "" if sizing.pool_size is None else f", pool {sizing.pool_size}"
            _log.info(
                "worker started (pid %d): store %s, calls %s, max_concurrent %s%s, grace "
                "%.3g s%s%s",
                os.getpid(),
                redact(args.store),
                ", ".join(sorted(sched.call_classes)),
                limit,
                pool,
                args.grace,
                "" if args.execute else ", scheduling only (--no-execute)",
                metrics,
            )
            await stop.wait()
            await sched.shutdown(args.grace)
        nursery.cancel_scope.cancel()
        total = sched.statistics().total
        _log.info("worker stopped: %d call(s) started, %s", total.started, _outcomes(total))


def _summary(stats: SchedulerStatistics) -> str:
    total = stats.total
    lines = [f"ran {total.started} call(s): {_outcomes(total)}"]
    for name, c in sorted(stats.classes.items()):
        if c.started:
            lines.append(f"  {name}: {c.started} started, {_outcomes(c)}")
    return "\n".join(lines)


def _outcomes(c: ClassStatistics) -> str:
    return (
        f"{c.succeeded} succeeded, {c.failed} failed, {c.cancelled} cancelled, "
        f"{c.retried} retried, {c.dead_lettered} dead-lettered"
    )


async def cmd_run_once(args: argparse.Namespace) -> int:
    classes = load_calls(args.calls)
    sizing = await _sizing(args)
    async with _store(args, sizing) as store:
        stats = await run_due_calls(store, classes, **_scheduler_options(args, sizing))
    print(_summary(stats))
    return 1 if stats.total.failed or stats.total.cancelled else 0

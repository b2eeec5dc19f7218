"""The ``futurecalls`` command line: operate a store and run workers.

A thin layer over the public API: argument parsing, output formatting, signal
handling and exit codes live here; everything else is a call into the library.

Exit codes: 0 success; 1 runtime error (store unreachable, failed calls in
``run-once``...); 2 usage error (bad arguments, URL, JSON, time, duration, name);
128 + signal number when a worker is stopped by a second signal (running calls
cancelled at once).
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import math
import os
import re
import signal
import sys
import traceback
from collections.abc import Awaitable, Callable, Iterable, Sequence
from contextlib import AbstractAsyncContextManager
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any, Final, NoReturn

import trio

from . import (
    DEFAULT_GRACE_PERIOD,
    ENV_MAX_CONCURRENT,
    MAX_PAYLOAD_BYTES,
    ClassStatistics,
    Delivery,
    FutureCall,
    FutureCallsError,
    InvalidArgumentError,
    NewCall,
    SchedulerStatistics,
    Store,
    __version__,
    list_pending,
    open_scheduler,
    open_store,
    queue_lengths,
    run_due_calls,
)
from ._open_store import parse_store_url, redact
from ._util import leaves as group_leaves
from ._validate import check_aware, check_delay, check_identifier, check_name, resolve_due

ENV_STORE: Final = "FUTURECALLS_STORE"
DEFAULT_STORE: Final = "sqlite:///futurecalls.sqlite3"
DEFAULT_SCHEMA: Final = "futurecalls"
PROG: Final = "futurecalls"

_log = logging.getLogger("trio_futurecalls.cli")


#: Marks an option that was not given (so the library applies its own default).
_DEFAULT: Final = object()


class UsageError(Exception):
    """Bad command-line input: reported with exit code 2."""


# -- parsing helpers -------------------------------------------------------------------

_DURATION_RE: Final = re.compile(
    r"^(?:(?P<d>\d+(?:\.\d+)?)d)?(?:(?P<h>\d+(?:\.\d+)?)h)?"
    r"(?:(?P<m>\d+(?:\.\d+)?)m)?(?:(?P<s>\d+(?:\.\d+)?)s)?$"
)
_UNIT_SECONDS: Final = {"d": 86400.0, "h": 3600.0, "m": 60.0, "s": 1.0}


def parse_duration(text: str) -> timedelta:
    """``30s``, ``5m``, ``2h``, ``1d``, ``1h30m``, or plain (fractional) seconds."""
    raw = text.strip().lower()
    seconds: float | None = None
    try:
        seconds = float(raw)
    except ValueError:
        match = _DURATION_RE.match(raw)
        if raw and match:
            seconds = sum(
                float(value) * _UNIT_SECONDS[unit]
                for unit, value in match.groupdict().items()
                if value is not None
            )
    if seconds is None:
        raise UsageError(
            f"invalid duration {text!r}: use e.g. 30s, 5m, 2h, 1d, 1h30m or a number of seconds"
        )
    if not math.isfinite(seconds) or seconds < 0:
        raise UsageError(f"invalid duration {text!r}: must be finite and not negative")
    try:
        return check_delay(timedelta(seconds=seconds))
    except (InvalidArgumentError, OverflowError) as exc:
        raise UsageError(f"invalid duration {text!r}: {exc}") from None


def parse_time(text: str, what: str = "--at") -> datetime:
    """A timezone-aware ISO 8601 time (``Z`` or an offset is required), as UTC."""
    try:
        value = datetime.fromisoformat(text.strip())
    except ValueError:
        raise UsageError(
            f"{what}: invalid ISO 8601 time {text!r} (e.g. 2030-01-01T09:00:00+00:00)"
        ) from None
    if value.tzinfo is None or value.tzinfo.utcoffset(value) is None:
        raise UsageError(
            f"{what}: time {text!r} has no timezone; add an offset or Z, "
            "e.g. 2030-01-01T09:00:00Z or 2030-01-01T09:00:00+02:00"
        )
    return check_aware(value, what)


def _reject_constant(name: str) -> NoReturn:
    raise ValueError(f"{name} is not valid JSON")


def parse_payload(text: str) -> str:
    """Validate JSON text and re-encode it compactly (no NaN/Infinity)."""
    try:
        value = json.loads(text, parse_constant=_reject_constant)
    except ValueError as exc:
        raise UsageError(f"--payload is not valid JSON: {exc}") from None
    encoded = json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    size = len(encoded.encode())
    if size > MAX_PAYLOAD_BYTES:
        raise UsageError(f"--payload is {size} bytes as JSON; the limit is {MAX_PAYLOAD_BYTES}")
    return encoded


def _check(fn: Callable[[Any], Any], value: object) -> Any:
    try:
        return fn(value)
    except InvalidArgumentError as exc:
        raise UsageError(str(exc)) from None


def _due_at(args: argparse.Namespace, now: datetime) -> datetime:
    """The due time from ``--at`` or ``--in`` (neither: now)."""
    at = None if args.at is None else parse_time(args.at)
    delay = None if args.in_ is None else parse_duration(args.in_)
    try:
        return resolve_due(now, at, delay)
    except InvalidArgumentError as exc:
        raise UsageError(str(exc)) from None


def _int_at_least(low: int, expected: str) -> Callable[[str], int]:
    """An argparse type: an integer >= ``low``; ``expected`` names it in errors."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = low - 1
        if value < low:
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}")
        return value

    return parse


_positive_int = _int_at_least(1, "a positive integer")
_non_negative_int = _int_at_least(0, "an integer >= 0")


def _port(text: str) -> int:
    value = _non_negative_int(text)
    if value > 65535:
        raise argparse.ArgumentTypeError(f"port must be within 0..65535, got {text!r}")
    return value


def _limit(text: str) -> int | None:
    if text.strip().lower() in ("unlimited", "none"):
        return None
    return _positive_int(text)


def _seconds(text: str) -> float:
    try:
        return parse_duration(text).total_seconds()
    except UsageError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


# -- stores ----------------------------------------------------------------------------


def _open_store(args: argparse.Namespace) -> AbstractAsyncContextManager[Store]:
    """The store of ``--store``; ``--schema`` applies to PostgreSQL only."""
    postgres = parse_store_url(args.store).kind == "postgres"
    return open_store(args.store, **({"schema": args.schema} if postgres else {}))


# -- logging ---------------------------------------------------------------------------

_STANDARD_RECORD_FIELDS: Final = frozenset(
    vars(logging.LogRecord("x", logging.INFO, "x", 0, "x", None, None)).keys()
) | {"message", "asctime", "taskName"}


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, and structured extras."""

    def format(self, record: logging.LogRecord) -> str:
        data: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD_RECORD_FIELDS and not key.startswith("_"):
                data[key] = value
        if record.exc_info:
            data["exc_info"] = self.formatException(record.exc_info)
        return json.dumps(data, default=str, ensure_ascii=False)


def setup_logging(verbose: bool, log_format: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    if log_format == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG if verbose else logging.INFO)


# -- output ----------------------------------------------------------------------------


def _print_table(headers: Sequence[str], rows: Iterable[Sequence[object]]) -> None:
    text_rows = [["" if v is None else str(v) for v in row] for row in rows]
    widths = [len(h) for h in headers]
    for row in text_rows:
        widths = [max(w, len(v)) for w, v in zip(widths, row, strict=True)]
    for row in [list(headers), *text_rows]:
        print("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip())


def _shorten(text: str, width: int = 60) -> str:
    """One table cell: the first line of ``text``, at most ``width`` characters."""
    lines = text.strip().splitlines() or [""]
    line = lines[0] + (" ..." if len(lines) > 1 else "")
    return line if len(line) <= width else line[: width - 3] + "..."


def _print_json(value: object) -> None:
    print(json.dumps(value, indent=2, ensure_ascii=False))


def _json_or_text(text: str) -> object:
    """A stored payload as a JSON value (the raw text if it is not valid JSON)."""
    try:
        return json.loads(text)
    except ValueError:
        return text


def _iso(value: datetime) -> str:
    return value.astimezone(UTC).isoformat()


# -- commands --------------------------------------------------------------------------


async def cmd_migrate(args: argparse.Namespace) -> int:
    async with _open_store(args) as store:
        postgres = parse_store_url(args.store).kind == "postgres"
        where = f"schema {args.schema!r} of " if postgres else ""
        print(f"migrated: {where}{redact(args.store)} is up to date ({type(store).__name__})")
    return 0


async def cmd_schedule(args: argparse.Namespace) -> int:
    name = _check(check_name, args.name)
    identifier = _check(check_identifier, args.identifier)
    payload = parse_payload(args.payload)
    now = datetime.now(UTC)
    due_at = _due_at(args, now)
    new_call = NewCall(
        name=name, payload=payload, due_at=due_at, identifier=identifier, scheduled_at=now
    )
    async with _open_store(args) as store:
        (call_id,) = await store.schedule([new_call])
    print(call_id)
    return 0


async def cmd_list(args: argparse.Namespace) -> int:
    name = None if args.name is None else _check(check_name, args.name)
    identifier = _check(check_identifier, args.identifier)
    due_after = None if args.due_after is None else parse_time(args.due_after, "--due-after")
    due_before = None if args.due_before is None else parse_time(args.due_before, "--due-before")
    async with _open_store(args) as store:
        calls = await list_pending(
            store,
            name,
            identifier=identifier,
            due_after=due_after,
            due_before=due_before,
            limit=args.limit,
        )
    if args.json:
        _print_json(
            [
                {
                    "id": c.id,
                    "name": c.name,
                    "identifier": c.identifier,
                    "due_at": _iso(c.due_at),
                    "scheduled_at": _iso(c.scheduled_at),
                    "payload": _json_or_text(c.payload),
                }
                for c in calls
            ]
        )
    else:
        _print_table(
            ["ID", "NAME", "DUE AT", "IDENTIFIER", "PAYLOAD"],
            ([c.id, c.name, _iso(c.due_at), c.identifier, _shorten(c.payload)] for c in calls),
        )
    return 0


async def cmd_cancel(args: argparse.Namespace) -> int:
    identifier = _check(check_identifier, args.identifier)
    async with _open_store(args) as store:
        if identifier is not None:
            count = await store.cancel_identifier(identifier)
        else:
            count = int(await store.cancel(args.id))
    print(count)
    return 0


async def cmd_stats(args: argparse.Namespace) -> int:
    if args.metrics_url is not None:
        return await _stats_from_metrics(args.metrics_url, as_json=args.json)
    async with _open_store(args) as store:
        lengths = await queue_lengths(store)
    if args.json:
        _print_json({name: {"pending": q.pending, "due": q.due} for name, q in lengths.items()})
    else:
        _print_table(
            ["NAME", "PENDING", "DUE"], ([n, q.pending, q.due] for n, q in lengths.items())
        )
    return 0


def _fetch(url: str) -> str:
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            body: bytes = response.read()
            return body.decode("utf-8")
    except (urllib.error.URLError, OSError, ValueError) as exc:
        raise FutureCallsError(f"cannot fetch metrics from {url}: {exc}") from None


def _metrics_table(text: str) -> dict[str, dict[str, float]]:
    try:
        from prometheus_client.parser import text_string_to_metric_families
    except ImportError:
        raise FutureCallsError(
            "--metrics-url needs prometheus-client; install the `prometheus` extra: "
            "pip install 'trio_futurecalls[prometheus]'"
        ) from None
    simple = {
        "futurecalls_calls_started_total": "started",
        "futurecalls_calls_retried_total": "retried",
        "futurecalls_calls_dead_lettered_total": "dead_lettered",
        "futurecalls_calls_running": "running",
        "futurecalls_calls_pending": "pending",
        "futurecalls_calls_due_waiting": "due",
        "futurecalls_concurrency_limit": "limit",
    }
    timings = {
        f"futurecalls_call_{kind}_seconds_{part}": f"{kind}_{part}"
        for kind in ("wait", "run")
        for part in ("sum", "count")
    }
    out: dict[str, dict[str, float]] = {}
    try:
        families = list(text_string_to_metric_families(text))
    except ValueError as exc:
        raise FutureCallsError(f"the metrics endpoint sent unparseable text: {exc}") from None
    for family in families:
        for sample in family.samples:
            name = sample.labels.get("call_class")
            if name is None:
                continue
            row = out.setdefault(name, {})
            if sample.name in simple:
                row[simple[sample.name]] = sample.value
            elif sample.name == "futurecalls_calls_finished_total":
                row[sample.labels.get("outcome", "?")] = sample.value
            elif sample.name in timings:
                row[timings[sample.name]] = sample.value
    for row in out.values():
        for kind in ("wait", "run"):
            count = row.pop(f"{kind}_count", 0.0)
            total = row.pop(f"{kind}_sum", 0.0)
            if count:
                row[f"avg_{kind}_seconds"] = total / count
    return dict(sorted(out.items()))


async def _stats_from_metrics(url: str, *, as_json: bool) -> int:
    text = await trio.to_thread.run_sync(_fetch, url)
    table = _metrics_table(text)
    if as_json:
        _print_json(table)
        return 0
    columns = [
        "started",
        "succeeded",
        "failed",
        "cancelled",
        "retried",
        "dead_lettered",
        "running",
        "pending",
        "due",
        "limit",
        "avg_wait_seconds",
        "avg_run_seconds",
    ]

    def cell(value: float | None) -> str:
        if value is None:
            return "-"
        if math.isinf(value):
            return "unlimited"
        return str(int(value)) if value == int(value) else f"{value:.4f}"

    _print_table(
        [
            "NAME",
            *("STARTED", "OK", "FAILED", "CANCELLED", "RETRIED", "DEAD"),
            *("RUNNING", "PENDING", "DUE", "LIMIT"),
            *("AVG WAIT S", "AVG RUN S"),
        ],
        ([name, *(cell(row.get(c)) for c in columns)] for name, row in table.items()),
    )
    return 0


async def cmd_dead_list(args: argparse.Namespace) -> int:
    name = None if args.name is None else _check(check_name, args.name)
    async with _open_store(args) as store:
        letters = await store.dead_letters(name=name, limit=args.limit)
    if args.json:
        _print_json(
            [
                {
                    "id": d.id,
                    "call_id": d.call_id,
                    "name": d.name,
                    "identifier": d.identifier,
                    "due_at": _iso(d.due_at),
                    "scheduled_at": _iso(d.scheduled_at),
                    "failed_at": _iso(d.failed_at),
                    "attempts": d.attempts,
                    "error": d.error,
                    "payload": _json_or_text(d.payload),
                }
                for d in letters
            ]
        )
    else:
        _print_table(
            ["ID", "CALL ID", "NAME", "FAILED AT", "ATTEMPTS", "ERROR"],
            (
                [d.id, d.call_id, d.name, _iso(d.failed_at), d.attempts, _shorten(d.error)]
                for d in letters
            ),
        )
    return 0


async def cmd_dead_requeue(args: argparse.Namespace) -> int:
    due_at = _due_at(args, datetime.now(UTC))
    async with _open_store(args) as store:
        call_id = await store.requeue_dead_letter(args.id, due_at)
    if call_id is None:
        raise FutureCallsError(f"no dead letter with id {args.id}")
    print(call_id)
    return 0


async def cmd_dead_purge(args: argparse.Namespace) -> int:
    async with _open_store(args) as store:
        count = await store.purge_dead_letters(None if args.all else args.id)
    print(count)
    return 0


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
        raise
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


def _scheduler_options(args: argparse.Namespace) -> dict[str, Any]:
    options: dict[str, Any] = {
        "grace_period": args.grace,
        "default_delivery": Delivery(args.delivery.replace("-", "_")),
    }
    if args.max_concurrent is not _DEFAULT:
        options["max_concurrent"] = args.max_concurrent
    return options


async def cmd_worker(args: argparse.Namespace) -> int:
    classes = load_calls(args.calls)
    serve_metrics: Callable[..., Awaitable[None]] | None = None
    if args.metrics_port is not None:
        try:
            from . import metrics
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
            await _run_worker(args, classes, first_signal, serve_metrics)
            top.cancel_scope.cancel()
    if forced:
        _log.info("worker stopped: running calls were cancelled")
        return 128 + forced[0]
    return 0


async def _run_worker(
    args: argparse.Namespace,
    classes: list[type[FutureCall]],
    stop: trio.Event,
    serve_metrics: Callable[..., Awaitable[None]] | None,
) -> None:
    # The metrics server's nursery is outside the scheduler's block, so that a server
    # that cannot start surfaces as its own error, and is stopped after the drain.
    async with _open_store(args) as store, trio.open_nursery() as nursery:
        options = _scheduler_options(args)
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
            _log.info(
                "worker started (pid %d): store %s, calls %s, max_concurrent %s, grace %.3g s%s%s",
                os.getpid(),
                redact(args.store),
                ", ".join(sorted(sched.call_classes)),
                limit,
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
    async with _open_store(args) as store:
        stats = await run_due_calls(store, classes, **_scheduler_options(args))
    print(_summary(stats))
    return 1 if stats.total.failed or stats.total.cancelled else 0


# -- the parser ------------------------------------------------------------------------


def _global_options(parser: argparse.ArgumentParser, *, suppress: bool) -> None:
    """Options accepted before and after the command (after: only if given)."""

    def default(value: object) -> object:
        return argparse.SUPPRESS if suppress else value

    parser.add_argument(
        "--store",
        metavar="URL",
        default=default(os.environ.get(ENV_STORE) or DEFAULT_STORE),
        help=f"store URL: sqlite:///relative/path, sqlite:////absolute/path, "
        f"postgresql://user:pass@host:port/db, postgres://... or memory:// "
        f"(default: ${ENV_STORE}, else {DEFAULT_STORE})",
    )
    parser.add_argument(
        "--schema",
        metavar="NAME",
        default=default(DEFAULT_SCHEMA),
        help=f"PostgreSQL schema of the store (default: {DEFAULT_SCHEMA})",
    )
    parser.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        default=default(False),
        help="debug logging, and tracebacks with errors",
    )
    parser.add_argument(
        "--log-format",
        choices=["text", "json"],
        default=default("text"),
        help="log lines on stderr as text, or one JSON object per line (default: text)",
    )


def _when_options(parser: argparse.ArgumentParser, *, required: bool, what: str) -> None:
    group = parser.add_mutually_exclusive_group(required=required)
    group.add_argument(
        "--at",
        metavar="ISO8601",
        help=f"{what} at this timezone-aware time, e.g. 2030-01-01T09:00:00Z",
    )
    group.add_argument(
        "--in",
        dest="in_",
        metavar="DURATION",
        help=f"{what} after this delay: 30s, 5m, 2h, 1d, 1h30m or seconds (0: now)",
    )


def _scheduler_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "calls",
        metavar="MODULE:ATTR",
        help="the call classes: a FutureCall subclass or an iterable of them, "
        "importable from the current directory (e.g. myapp.calls:CALLS)",
    )
    parser.add_argument(
        "--max-concurrent",
        type=_limit,
        default=_DEFAULT,
        metavar="N",
        help=f"global limit on calls running at once, or 'unlimited' "
        f"(default: ${ENV_MAX_CONCURRENT}, else 100)",
    )
    parser.add_argument(
        "--grace",
        type=_seconds,
        default=DEFAULT_GRACE_PERIOD,
        metavar="DURATION",
        help=f"time running calls get to finish at shutdown before they are cancelled "
        f"(default: {DEFAULT_GRACE_PERIOD:g}s)",
    )
    parser.add_argument(
        "--delivery",
        choices=["at-most-once", "at-least-once"],
        default="at-most-once",
        help="default delivery of classes that do not set their own: delete the row when "
        "the call starts, or lease it until the call finishes (default: at-most-once)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Operate a trio_futurecalls store and run workers.",
        epilog="Exit codes: 0 success, 1 runtime error, 2 usage error.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    _global_options(parser, suppress=False)
    common = argparse.ArgumentParser(add_help=False)
    _global_options(common, suppress=True)
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def command(name: str, help: str, **kwargs: Any) -> argparse.ArgumentParser:
        return commands.add_parser(name, help=help, description=help, parents=[common], **kwargs)

    p = command("migrate", "Create or upgrade the store's schema.")
    p.set_defaults(run=cmd_migrate)

    p = command(
        "schedule",
        "Schedule a call by name (no import of its class); prints its id.",
    )
    p.add_argument("name", metavar="NAME", help="the call class's name")
    p.add_argument("--payload", metavar="JSON", default="null", help="JSON payload (default null)")
    p.add_argument("--identifier", metavar="X", help="optional, non-unique identifier")
    _when_options(p, required=True, what="due")
    p.set_defaults(run=cmd_schedule)

    p = command("list", "List pending calls, earliest due first.")
    p.add_argument("--name", help="only calls with this name")
    p.add_argument("--identifier", metavar="X", help="only calls with this identifier")
    p.add_argument("--due-after", metavar="ISO8601", help="only calls due at or after this")
    p.add_argument("--due-before", metavar="ISO8601", help="only calls due before this")
    p.add_argument("--limit", type=_non_negative_int, metavar="N", help="at most N calls")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(run=cmd_list)

    p = command(
        "cancel", "Cancel pending calls by id or identifier; prints how many were cancelled."
    )
    group = p.add_mutually_exclusive_group(required=True)
    group.add_argument("--id", type=_positive_int, metavar="N", help="the call's id")
    group.add_argument("--identifier", metavar="X", help="every call with this identifier")
    p.set_defaults(run=cmd_cancel)

    p = command(
        "stats",
        "Queue lengths per name from the store; with --metrics-url, a running worker's "
        "per-class counters and timings.",
    )
    p.add_argument(
        "--metrics-url",
        metavar="URL",
        help="a worker's metrics endpoint, e.g. http://127.0.0.1:9464/metrics",
    )
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(run=cmd_stats)

    p = command("dead-letters", "Inspect, requeue and purge dead letters.")
    dead = p.add_subparsers(dest="dead_command", metavar="ACTION", required=True)
    d = dead.add_parser(
        "list",
        help="List dead letters, oldest failure first.",
        description="List dead letters, oldest failure first.",
        parents=[common],
    )
    d.add_argument("--name", help="only dead letters with this call name")
    d.add_argument("--limit", type=_non_negative_int, metavar="N", help="at most N")
    d.add_argument("--json", action="store_true", help="print JSON instead of a table")
    d.set_defaults(run=cmd_dead_list)
    d = dead.add_parser(
        "requeue",
        help="Move a dead letter back to pending (due now by default); prints the new call id.",
        description="Move a dead letter back to pending (due now by default); "
        "prints the new call id.",
        parents=[common],
    )
    d.add_argument("id", type=_positive_int, metavar="ID", help="the dead letter's id")
    _when_options(d, required=False, what="due")
    d.set_defaults(run=cmd_dead_requeue)
    d = dead.add_parser(
        "purge",
        help="Delete dead letters; prints how many were deleted.",
        description="Delete dead letters; prints how many were deleted.",
        parents=[common],
    )
    group = d.add_mutually_exclusive_group(required=True)
    group.add_argument(
        "--id", type=_positive_int, nargs="+", metavar="N", help="the dead letters' ids"
    )
    group.add_argument("--all", action="store_true", help="every dead letter")
    d.set_defaults(run=cmd_dead_purge)

    p = command(
        "worker",
        "Run a scheduler until SIGINT/SIGTERM, then shut down gracefully.",
        epilog="On the first SIGINT or SIGTERM, no new call starts and running calls get "
        "--grace to finish (exit 0); a second signal cancels them at once "
        "(exit 128 + signal number).",
    )
    _scheduler_arguments(p)
    p.add_argument(
        "--metrics-port",
        type=_port,
        metavar="N",
        help="serve Prometheus metrics on this port (needs the `prometheus` extra)",
    )
    p.add_argument(
        "--metrics-host",
        default="127.0.0.1",
        metavar="HOST",
        help="address the metrics server binds (default: 127.0.0.1)",
    )
    p.add_argument(
        "--no-execute",
        dest="execute",
        action="store_false",
        help="a scheduling-only node: start no calls",
    )
    p.set_defaults(run=cmd_worker)

    p = command(
        "run-once",
        "Run every call due now, wait for them, print a summary and exit.",
        epilog="Exit status: 0 if every call succeeded (or none was due), 1 if any call "
        "failed or was cancelled (so cron and CI notice), 2 on usage errors.",
    )
    _scheduler_arguments(p)
    p.set_defaults(run=cmd_run_once)
    return parser


def _error(message: str) -> None:
    print(f"{PROG}: error: {message}", file=sys.stderr)


def _leaves(exc: BaseException) -> list[BaseException]:
    return list(group_leaves(exc)) if isinstance(exc, BaseExceptionGroup) else [exc]


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``futurecalls`` console script; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    setup_logging(args.verbose, args.log_format)
    run: Callable[[argparse.Namespace], Any] = args.run
    try:
        parse_store_url(args.store)  # a bad URL is a usage error, whatever the command
        code: int = trio.run(run, args)
    except BaseException as caught:
        leaves = _leaves(caught)
        known = [e for e in leaves if isinstance(e, UsageError | FutureCallsError)]
        exc = leaves[0] if len(leaves) == 1 else (known[0] if known else caught)
        if isinstance(exc, KeyboardInterrupt):
            _error("interrupted")
            return 130
        if isinstance(exc, SystemExit):
            raise
        if isinstance(exc, UsageError | InvalidArgumentError):
            _error(str(exc))
            return 2
        if args.verbose:
            traceback.print_exception(caught)
        if isinstance(exc, FutureCallsError):
            _error(str(exc))
        elif isinstance(exc, Exception):
            _error(f"{type(exc).__name__}: {exc}")
        else:
            raise
        return 1
    return code

"""The argument parser: global options, one sub-command per command, and their help."""

from __future__ import annotations

import argparse
import os
from typing import Any, Final, NoReturn

from .. import DEFAULT_GRACE_PERIOD, ENV_MAX_CONCURRENT, __version__
from .._redact import redact
from .._validate_recurring import (
    MISFIRE_MODES,
    OVERLAP_MODES,
)
from ._arguments import (
    NOT_GIVEN,
    concurrency_limit,
    duration_seconds,
    host_name,
    id_number,
    metrics_url,
    parse_duration,
    port_number,
    positive_int,
    row_limit,
)
from ._commands import (
    cmd_cancel,
    cmd_dead_list,
    cmd_dead_purge,
    cmd_dead_requeue,
    cmd_list,
    cmd_migrate,
    cmd_schedule,
    cmd_stats,
)
from ._dashboard import ENV_TOKEN as ENV_DASHBOARD_TOKEN
from ._dashboard import cmd_dashboard
from ._limits import cmd_limits_list, cmd_limits_remove, cmd_limits_set
from ._pause import cmd_pause, cmd_resume
from ._recurring import cmd_recurring_add, cmd_recurring_cancel, cmd_recurring_list
from ._unknown import cmd_unknown_dead_letter, cmd_unknown_list
from ._worker import cmd_run_once, cmd_worker
from ._workers import cmd_workers

ENV_STORE: Final = "FUTURECALLS_STORE"
DEFAULT_STORE: Final = "sqlite:///futurecalls.sqlite3"
DEFAULT_SCHEMA: Final = "futurecalls"
PROG: Final = "futurecalls"


class _Parser(argparse.ArgumentParser):
    """An argument parser whose usage errors show no password: they quote what was
    typed (``unrecognized arguments: --sotre postgresql://u:pw@h/db``)."""

    def error(self, message: str) -> NoReturn:
        super().error(redact(message))


def _after_option(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--after",
        type=id_number,
        metavar="ID",
        action="append",
        default=[],
        help="start only once call ID has succeeded (repeat for several); exit code 1 if "
        "the store cannot see that call (it finished, failed or never existed)",
    )


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
        "--pool-size",
        type=positive_int,
        default=default(None),
        metavar="N",
        help="PostgreSQL connection pool size (default: a worker's is its "
        "--max-concurrent + 2, capped by what the server has room for; other "
        "commands use 3); ignored by other stores",
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
        type=concurrency_limit,
        default=NOT_GIVEN,
        metavar="N",
        help=f"global limit on calls running at once, or 'unlimited' "
        f"(default: ${ENV_MAX_CONCURRENT}, else 100)",
    )
    parser.add_argument(
        "--max-threads",
        type=positive_int,
        default=None,
        metavar="N",
        help="worker threads for Executor.THREAD calls and to_thread (default: 40)",
    )
    parser.add_argument(
        "--max-processes",
        type=positive_int,
        default=None,
        metavar="N",
        help="worker processes for Executor.PROCESS calls and to_process (default: the "
        "CPUs this process may use)",
    )
    parser.add_argument(
        "--grace",
        type=duration_seconds,
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
    parser.add_argument(
        "--create",
        action="store_true",
        help="create the store (SQLite file, PostgreSQL schema) if there is none, as "
        "`futurecalls migrate` does (default: a missing store is an error)",
    )
    parser.add_argument(
        "--no-call-log",
        dest="call_log",
        action="store_false",
        help="no INFO line per finished call (name, id, outcome, run time); warnings "
        "and errors, and calls lost at shutdown, are still logged",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog=PROG,
        description="Operate a trio_futurecalls store and run workers.",
        epilog="Exit codes: 0 success, 1 runtime error, 2 usage error.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    _global_options(parser, suppress=False)
    common = _Parser(add_help=False)
    _global_options(common, suppress=True)
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def command(name: str, help: str, **kwargs: Any) -> argparse.ArgumentParser:
        return commands.add_parser(name, help=help, description=help, parents=[common], **kwargs)

    p = command("migrate", "Create or upgrade the store's schema.")
    p.set_defaults(run=cmd_migrate)

    p = command(
        "schedule",
        "Schedule a call by name (no import of its class), due now unless --at or --in; "
        "prints its id.",
    )
    p.add_argument("name", metavar="NAME", help="the call class's name")
    p.add_argument("--payload", metavar="JSON", default="null", help="JSON payload (default null)")
    p.add_argument(
        "--allow-unknown",
        action="store_true",
        help="schedule NAME even though no live worker registered it (by default that is "
        "refused once workers are registered in the store; with none, it is a warning)",
    )
    p.add_argument("--identifier", metavar="X", help="optional, non-unique identifier")
    p.add_argument(
        "--unique-key",
        metavar="K",
        help="at most one pending call of this name with key K (prints the pending one's id)",
    )
    p.add_argument(
        "--on-conflict",
        choices=["ignore", "replace", "error"],
        default="ignore",
        help="when a call with the key is pending: keep it (ignore, the default), give it "
        "this payload and due time (replace), or fail with exit code 1 (error)",
    )
    p.add_argument(
        "--priority",
        metavar="N",
        type=int,
        default=0,
        help="among due calls with free slots, higher starts first; from -1000 to 1000 "
        "(default 0: the CLI does not import the class, so its priority does not apply)",
    )
    _after_option(p)
    _when_options(p, required=False, what="due (default: now)")
    p.set_defaults(run=cmd_schedule)

    p = command("list", "List pending calls, earliest due first.")
    p.add_argument("--name", help="only calls with this name")
    p.add_argument("--identifier", metavar="X", help="only calls with this identifier")
    p.add_argument("--due-after", metavar="ISO8601", help="only calls due at or after this")
    p.add_argument("--due-before", metavar="ISO8601", help="only calls due before this")
    p.add_argument("--limit", type=row_limit, metavar="N", help="at most N calls")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(run=cmd_list)

    p = command(
        "cancel",
        "Cancel calls, pending or running on any worker. --id prints pending, running or "
        "not_found (exit 1); --identifier prints how many were cancelled (pending ones, "
        "and running ones the workers stopped).",
    )
    group = p.add_mutually_exclusive_group(required=True)
    group.add_argument("--id", type=id_number, metavar="N", help="the call's id")
    group.add_argument("--identifier", metavar="X", help="every call with this identifier")
    p.set_defaults(run=cmd_cancel)

    p = command(
        "pause",
        "Pause a call class in the store: no worker starts its calls (running ones "
        "finish) until it is resumed.",
        epilog="Exit status 0, also when it was paused already (the message says so).",
    )
    p.add_argument("name", metavar="NAME", help="the call class's name")
    p.set_defaults(run=cmd_pause)

    p = command(
        "resume",
        "End a call class's pause: every worker starts its due calls at once.",
        epilog="Exit status 0, also when it was not paused (the message says so).",
    )
    p.add_argument("name", metavar="NAME", help="the call class's name")
    p.set_defaults(run=cmd_resume)

    p = command(
        "stats",
        "Queue lengths per name from the store, and paused classes; with --metrics-url, "
        "a running worker's per-class counters and timings.",
    )
    p.add_argument(
        "--metrics-url",
        type=metrics_url,
        metavar="URL",
        help="a worker's metrics endpoint, e.g. http://127.0.0.1:9464/metrics "
        "(http or https; user:password@ in it is sent as basic authentication)",
    )
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(run=cmd_stats)

    p = command(
        "workers",
        "List the live workers (schedulers that execute calls) of the store, by start.",
        epilog="A worker heartbeats every third of its worker_timeout (30 s by default) "
        "and is listed until its row expires; read-only.",
    )
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(run=cmd_workers)

    p = command(
        "limits",
        "List, set and remove the cluster-wide limits every worker on the store obeys.",
    )
    limits = p.add_subparsers(dest="limits_command", metavar="ACTION", required=True)
    m = limits.add_parser(
        "list",
        help="The stored limits.",
        description="The stored limits.",
        parents=[common],
    )
    m.add_argument("--json", action="store_true", help="print JSON instead of a table")
    m.set_defaults(run=cmd_limits_list)
    m = limits.add_parser(
        "set",
        help="Store a limit (the last value set wins; running calls are not stopped).",
        description="Store a limit (the last value set wins; running calls are not stopped).",
        parents=[common],
    )
    m.add_argument("name", metavar="NAME", help="a call class's name, or * for all classes")
    m.add_argument(
        "--concurrency", type=positive_int, metavar="N", help="at most N running at once"
    )
    m.add_argument("--rate", type=positive_int, metavar="N", help="at most N starts per --per")
    m.add_argument("--per", type=parse_duration, metavar="DURATION", help="e.g. 1s, 1m, 1h")
    m.set_defaults(run=cmd_limits_set)
    m = limits.add_parser(
        "remove",
        help="Drop a limit (calls it held back may start at once).",
        description="Drop a limit (calls it held back may start at once).",
        parents=[common],
    )
    m.add_argument("name", metavar="NAME", help="a call class's name, or * for all classes")
    kind = m.add_mutually_exclusive_group(required=True)
    kind.add_argument("--concurrency", action="store_true", help="the concurrency limit")
    kind.add_argument("--rate", action="store_true", help="the rate limit")
    m.set_defaults(run=cmd_limits_remove)

    p = command("dead-letters", "Inspect, requeue and purge dead letters.")
    dead = p.add_subparsers(dest="dead_command", metavar="ACTION", required=True)
    d = dead.add_parser(
        "list",
        help="List dead letters, oldest failure first.",
        description="List dead letters, oldest failure first.",
        parents=[common],
    )
    d.add_argument("--name", help="only dead letters with this call name")
    d.add_argument("--limit", type=row_limit, metavar="N", help="at most N")
    d.add_argument("--json", action="store_true", help="print JSON instead of a table")
    d.set_defaults(run=cmd_dead_list)
    d = dead.add_parser(
        "requeue",
        help="Move a dead letter back to pending (due now by default); prints the new call id.",
        description="Move a dead letter back to pending (due now by default); "
        "prints the new call id.",
        parents=[common],
    )
    d.add_argument("id", type=id_number, metavar="ID", help="the dead letter's id")
    _after_option(d)
    _when_options(d, required=False, what="due")
    d.set_defaults(run=cmd_dead_requeue)
    d = dead.add_parser(
        "purge",
        help="Delete dead letters; prints how many were deleted.",
        description="Delete dead letters; prints how many were deleted.",
        parents=[common],
    )
    group = d.add_mutually_exclusive_group(required=True)
    group.add_argument("--id", type=id_number, nargs="+", metavar="N", help="the dead letters' ids")
    group.add_argument("--all", action="store_true", help="every dead letter")
    d.set_defaults(run=cmd_dead_purge)

    p = command(
        "unknown-calls",
        "Pending calls whose name no live worker (or MODULE:ATTR) runs: list them, or "
        "move the due ones to dead letters.",
        epilog="The known names are those of --calls MODULE:ATTR, else those the live "
        "workers registered (`futurecalls workers`); with neither, exit 1.",
    )
    unknown = p.add_subparsers(dest="unknown_command", metavar="ACTION", required=True)
    for action_name, action_help, run in (
        ("list", "List them, earliest due first.", cmd_unknown_list),
        (
            "dead-letter",
            "Move the due ones (all, or those of --name) to dead letters; prints how many.",
            cmd_unknown_dead_letter,
        ),
    ):
        u = unknown.add_parser(
            action_name, help=action_help, description=action_help, parents=[common]
        )
        u.add_argument(
            "--calls",
            metavar="MODULE:ATTR",
            help="the known classes, imported (default: the names live workers registered)",
        )
        if action_name == "list":
            u.add_argument("--json", action="store_true", help="print JSON instead of a table")
        else:
            u.add_argument(
                "--name",
                action="append",
                default=None,
                metavar="NAME",
                help="only this name (repeat for several)",
            )
        u.set_defaults(run=run)

    p = command("recurring", "Add, list and cancel recurring schedules.")
    recurring = p.add_subparsers(dest="recurring_command", metavar="ACTION", required=True)

    def action(name: str, help: str, **kwargs: Any) -> argparse.ArgumentParser:
        return recurring.add_parser(name, help=help, description=help, parents=[common], **kwargs)

    r = action(
        "add",
        "Register (or update) a recurring schedule of a call name (no import of its "
        "class); prints the schedule as stored.",
        epilog="Each tick becomes an ordinary call of NAME, run once however many "
        "workers are up. Adding a key again updates its schedule (counters kept), "
        "unless --keep.",
    )
    r.add_argument("name", metavar="NAME", help="the call class's name")
    r.add_argument("--key", required=True, metavar="KEY", help="the schedule's unique key")
    when = r.add_mutually_exclusive_group(required=True)
    when.add_argument(
        "--cron",
        metavar="EXPR",
        help="a cron expression: five fields, or six with seconds first "
        "(e.g. '*/15 * * * *'), read in --timezone",
    )
    when.add_argument(
        "--every",
        metavar="SECONDS",
        help="a fixed interval: seconds, or a duration such as 30s, 5m, 2h, 1d",
    )
    r.add_argument("--payload", metavar="JSON", default="null", help="JSON payload (default null)")
    r.add_argument(
        "--timezone",
        metavar="TZ",
        default="UTC",
        help="IANA time zone the cron fields follow, e.g. Europe/Paris (default: UTC)",
    )
    r.add_argument("--start", metavar="ISO8601", help="no tick before this time")
    r.add_argument("--end", metavar="ISO8601", help="no tick after this time")
    r.add_argument(
        "--misfire",
        choices=MISFIRE_MODES,
        default="once",
        help="ticks missed while no worker ran: one run for all of them, none, or "
        "each (up to the latest 100) (default: once)",
    )
    r.add_argument(
        "--overlap",
        choices=OVERLAP_MODES,
        default="allow",
        help="skip: no new run while the previous run is still in the store (its "
        "class must be at-least-once) (default: allow)",
    )
    r.add_argument(
        "--keep",
        action="store_true",
        help="if a schedule with this key exists, keep it as it is (do not replace it)",
    )
    r.add_argument(
        "--allow-unknown",
        action="store_true",
        help="add it even though no live worker registered NAME (as for schedule)",
    )
    r.add_argument("--identifier", metavar="X", help="optional identifier of every run")
    r.add_argument("--json", action="store_true", help="print JSON instead of a table")
    r.set_defaults(run=cmd_recurring_add)
    r = action("list", "List recurring schedules, by key.")
    r.add_argument("--json", action="store_true", help="print JSON instead of a table")
    r.set_defaults(run=cmd_recurring_list)
    r = action(
        "cancel",
        "Delete a recurring schedule and its runs that have not started; prints 1 "
        "(an unknown key is an error).",
    )
    r.add_argument("key", metavar="KEY", help="the schedule's key")
    r.set_defaults(run=cmd_recurring_cancel)

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
        type=port_number,
        metavar="N",
        help="serve Prometheus metrics on this port (needs the `prometheus` extra)",
    )
    p.add_argument(
        "--metrics-host",
        type=host_name,
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

    p = command(
        "dashboard",
        "Serve the web dashboard over the store until SIGINT/SIGTERM (read-only unless "
        "--allow-actions).",
        epilog="Pages: overview, pending calls, dead letters, recurring schedules, workers. "
        "It binds 127.0.0.1 by default; bound elsewhere, set a token.",
    )
    p.add_argument(
        "--host",
        type=host_name,
        default="127.0.0.1",
        metavar="HOST",
        help="address to bind (default: 127.0.0.1)",
    )
    p.add_argument(
        "--port", type=port_number, default=8470, metavar="N", help="port (default: 8470)"
    )
    p.add_argument(
        "--allow-actions",
        action="store_true",
        help="allow requeueing and purging dead letters (POSTs with CSRF protection)",
    )
    p.add_argument(
        "--token",
        metavar="TOKEN",
        help=f"require this bearer token (at least 8 characters) on every request; "
        f"browsers sign in once (default: ${ENV_DASHBOARD_TOKEN}, else none)",
    )
    p.set_defaults(run=cmd_dashboard)
    return parser

"""The ``futurecalls`` command line: operate a store and run workers.

A thin layer over the public API: argument parsing, output formatting, signal
handling and exit codes live here; everything else is a call into the library.

Exit codes: 0 success; 1 runtime error (store unreachable, failed calls in
``run-once``...); 2 usage error (bad arguments, URL, JSON, time, duration, name);
128 + signal number when a worker is stopped by a second signal (running calls
cancelled at once); 141 (128 + SIGPIPE) when stdout closed early (``| head``).
"""

from __future__ import annotations

import argparse
import os
import sys
import traceback
from collections.abc import Callable, Sequence
from functools import partial
from typing import Any

import trio

from .. import DuplicateCallError, FutureCallsError, InvalidArgumentError, PrerequisiteError
from .._open_store import parse_store_url
from .._redact import redact, secrets_in
from .._util import leaves as group_leaves
from ._arguments import UsageError as UsageError
from ._arguments import parse_duration as parse_duration
from ._arguments import parse_payload as parse_payload
from ._arguments import parse_time as parse_time
from ._output import JsonFormatter as JsonFormatter
from ._output import setup_logging as setup_logging
from ._parser import DEFAULT_SCHEMA as DEFAULT_SCHEMA
from ._parser import DEFAULT_STORE as DEFAULT_STORE
from ._parser import ENV_STORE as ENV_STORE
from ._parser import PROG as PROG
from ._parser import build_parser as build_parser
from ._worker import load_calls as load_calls


def _error(message: str, hide: Callable[[str], str]) -> None:
    print(f"{PROG}: error: {hide(message)}", file=sys.stderr)


def _leaves(exc: BaseException) -> list[BaseException]:
    return list(group_leaves(exc)) if isinstance(exc, BaseExceptionGroup) else [exc]


def _stdout_closed() -> int:
    """The reader of stdout went away (``futurecalls list | head``): no traceback, no
    error message (the output was wanted only in part), and no second error when
    Python flushes stdout at exit. Exit 128 + SIGPIPE, as ``cat`` or ``yes`` would."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)
    return 128 + 13


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``futurecalls`` console script; returns the exit code."""
    try:
        code = _main(argv)
        sys.stdout.flush()  # here, not at exit, so that a closed pipe is seen here
    except BrokenPipeError:
        return _stdout_closed()
    return code


def _main(argv: Sequence[str] | None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    # No password of the store's URL or connection string, or of the metrics URL,
    # shows in what this prints: messages, log lines, tracebacks.
    secrets = [*secrets_in(args.store), *secrets_in(getattr(args, "metrics_url", None) or "")]
    hide = partial(redact, secrets=secrets)
    setup_logging(args.verbose, args.log_format, hide)
    run: Callable[[argparse.Namespace], Any] = args.run
    try:
        parse_store_url(args.store)  # a bad URL is a usage error, whatever the command
        code: int = trio.run(run, args)
    except BaseException as caught:
        leaves = _leaves(caught)
        known = [e for e in leaves if isinstance(e, UsageError | FutureCallsError)]
        exc = leaves[0] if len(leaves) == 1 else (known[0] if known else caught)
        if isinstance(exc, BrokenPipeError):
            raise exc from None
        if isinstance(exc, KeyboardInterrupt):
            _error("interrupted", hide)
            return 130
        if isinstance(exc, SystemExit):
            raise
        if isinstance(exc, UsageError | InvalidArgumentError) and not isinstance(
            exc,
            DuplicateCallError | PrerequisiteError,  # found by the store: not a usage error
        ):
            _error(str(exc), hide)
            return 2
        if args.verbose or not isinstance(exc, Exception):
            sys.stderr.write(hide("".join(traceback.format_exception(caught))))
        if isinstance(exc, FutureCallsError):
            _error(str(exc), hide)
        else:
            _error(f"{type(exc).__name__}: {exc}", hide)
        return 1
    return code

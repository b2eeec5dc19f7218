"""``stats --metrics-url``: a running worker's counters and timings, per class.

Fetches the worker's Prometheus endpoint, parses it with ``prometheus_client``'s
parser and prints one row per call class.
"""

from __future__ import annotations

import base64
import math
from typing import Final
from urllib.parse import unquote, urlsplit, urlunsplit

import trio

from .. import FutureCallsError
from .._redact import redact
from ._output import print_json, print_table

#: Largest metrics page read: a worker's is a few kB; an endpoint sending more is not one.
MAX_METRICS_BYTES: Final = 16 * 1024 * 1024


def _fetch(url: str) -> str:
    import urllib.error
    import urllib.request

    parts = urlsplit(url)
    netloc = parts.netloc.rpartition("@")[2]
    request = urllib.request.Request(urlunsplit(parts._replace(netloc=netloc)))
    if parts.username is not None:
        # Basic authentication from the URL's credentials, on this request only: an
        # unredirected header is not sent on to wherever a redirect points.
        pair = f"{unquote(parts.username)}:{unquote(parts.password or '')}"
        token = base64.b64encode(pair.encode()).decode()
        request.add_unredirected_header("Authorization", f"Basic {token}")
    # HTTP(S) only, redirects included: no file:// or ftp:// handler.
    opener = urllib.request.OpenerDirector()
    for handler in (
        urllib.request.HTTPHandler(),
        urllib.request.HTTPSHandler(),
        urllib.request.HTTPRedirectHandler(),
        urllib.request.HTTPDefaultErrorHandler(),
        urllib.request.HTTPErrorProcessor(),
    ):
        opener.add_handler(handler)
    try:
        with opener.open(request, timeout=10) as response:
            body: bytes = response.read(MAX_METRICS_BYTES + 1)
    except (urllib.error.URLError, OSError, ValueError) as exc:
        raise FutureCallsError(f"cannot fetch metrics from {redact(url)}: {exc}") from None
    if len(body) > MAX_METRICS_BYTES:
        raise FutureCallsError(
            f"the metrics endpoint {redact(url)} sent more than {MAX_METRICS_BYTES} bytes"
        )
    return body.decode("utf-8", "replace")


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
        "futurecalls_concurrency_current_limit": "current_limit",
    }
    timings = {
        f"futurecalls_call_{kind}_seconds_{part}": f"{kind}_{part}"
        for kind in ("wait", "run")
        for part in ("sum", "count")
    }
    out: dict[str, dict[str, float]] = {}
    try:
        families = list(text_string_to_metric_families(text))
    except Exception as exc:  # whatever answered: the parser may fail in any way
        raise FutureCallsError(
            f"the metrics endpoint sent unparseable text: {type(exc).__name__}: {exc}"
        ) from None
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


def _json_value(key: str, value: float) -> float | int | None:
    """A sample as JSON: counts as integers (Prometheus sends every value as a float),
    averages as floats; NaN and infinity (not JSON) as null (an unlimited limit)."""
    if not math.isfinite(value):
        return None
    if not key.startswith("avg_") and value == int(value):
        return int(value)
    return value


def _cell(value: float | None) -> str:
    if value is None:
        return "-"
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "unlimited" if value > 0 else "-inf"
    return str(int(value)) if value == int(value) else f"{value:.4f}"


async def stats_from_metrics(url: str, *, as_json: bool) -> int:
    text = await trio.to_thread.run_sync(_fetch, url)
    # Names come from whatever answered: no URL or connection string in them shows a
    # password.
    table = {redact(name): row for name, row in _metrics_table(text).items()}
    if as_json:
        print_json(
            {name: {k: _json_value(k, v) for k, v in row.items()} for name, row in table.items()}
        )
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
        "current_limit",
        "avg_wait_seconds",
        "avg_run_seconds",
    ]

    print_table(
        [
            "NAME",
            *("STARTED", "OK", "FAILED", "CANCELLED", "RETRIED", "DEAD"),
            *("RUNNING", "PENDING", "DUE", "LIMIT", "CURRENT LIMIT"),
            *("AVG WAIT S", "AVG RUN S"),
        ],
        ([name, *(_cell(row.get(c)) for c in columns)] for name, row in table.items()),
    )
    return 0

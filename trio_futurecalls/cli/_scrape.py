"""``stats --metrics-url``: a running worker's counters and timings, per class.

Fetches the worker's Prometheus endpoint, parses it with ``prometheus_client``'s
parser and prints one row per call class.
"""

from __future__ import annotations

import math

import trio

from .. import FutureCallsError
from ._output import print_json, print_table


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


async def stats_from_metrics(url: str, *, as_json: bool) -> int:
    text = await trio.to_thread.run_sync(_fetch, url)
    table = _metrics_table(text)
    if as_json:
        print_json(table)
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

    print_table(
        [
            "NAME",
            *("STARTED", "OK", "FAILED", "CANCELLED", "RETRIED", "DEAD"),
            *("RUNNING", "PENDING", "DUE", "LIMIT"),
            *("AVG WAIT S", "AVG RUN S"),
        ],
        ([name, *(cell(row.get(c)) for c in columns)] for name, row in table.items()),
    )
    return 0

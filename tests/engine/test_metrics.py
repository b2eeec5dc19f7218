"""The Prometheus exporter, scraped over a real socket on 127.0.0.1 (real time, quick)."""

from __future__ import annotations

import gzip
import importlib
import itertools
import logging
import math
import sys
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any

import pytest
import trio
import trio.testing
from prometheus_client.parser import text_string_to_metric_families

from trio_futurecalls import (
    BUCKETS,
    Distribution,
    FutureCall,
    InvalidArgumentError,
    MemoryStore,
    StoreUnavailableError,
    open_scheduler,
    schedule_recurring,
)
from trio_futurecalls.metrics import histogram_buckets, serve_metrics

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


class Quick(FutureCall):
    name = "quick"
    max_concurrent = 3

    async def invoke(self, session: Any, payload: Any) -> None:
        await trio.lowlevel.checkpoint()


class Boom(FutureCall):
    name = "boom"

    async def invoke(self, session: Any, payload: Any) -> None:
        raise RuntimeError("boom")


class Block(FutureCall):
    name = "block"
    max_concurrent = None
    release = trio.Event()

    async def invoke(self, session: Any, payload: Any) -> None:
        await Block.release.wait()


async def http(port: int, request: bytes) -> tuple[int, dict[str, str], bytes]:
    """Send one raw HTTP request; return the status code, headers and body.

    Reads until the server closes the connection: send ``Connection: close``.
    """
    with trio.fail_after(10):
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        async with stream:
            await stream.send_all(request)
            data = b""
            while chunk := await stream.receive_some(65536):
                data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    status, *lines = head.decode("latin-1").split("\r\n")
    version, code, *_ = status.split(" ")  # Hypercorn sends no reason phrase
    assert version == "HTTP/1.1", status
    headers = {k.strip().lower(): v.strip() for k, v in (line.split(":", 1) for line in lines)}
    return int(code), headers, body


def request(method: str, path: str, *extra: str) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", "Host: test", "Connection: close", *extra]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


async def scrape(port: int) -> Samples:
    status, headers, body = await http(port, request("GET", "/metrics"))
    assert status == 200
    assert headers["content-type"].startswith("text/plain")
    assert int(headers["content-length"]) == len(body)
    out: Samples = {}
    for family in text_string_to_metric_families(body.decode()):
        for sample in family.samples:
            out[sample.name, frozenset(sample.labels.items())] = sample.value
    return out


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples[name, frozenset(labels.items())]


async def settle(condition: Callable[[], bool]) -> None:
    """Let every task run until all are blocked, then check ``condition``."""
    await trio.testing.wait_all_tasks_blocked()
    assert condition()


@pytest.mark.parametrize("missing", ["prometheus_client", "hypercorn.config"])
def test_import_error_names_the_extra(missing: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, missing, None)
    monkeypatch.delitem(sys.modules, "trio_futurecalls.metrics")
    monkeypatch.delitem(sys.modules, "trio_futurecalls._metrics_http")
    with pytest.raises(ImportError, match=r"install the `prometheus` extra"):
        importlib.import_module("trio_futurecalls.metrics")


def test_histogram_buckets_are_cumulative() -> None:
    counts = [0] * len(BUCKETS)
    counts[0] = 1  # <= 1 ms
    counts[5] = 2  # <= 50 ms
    counts[-1] = 1  # > 1 h
    dist = Distribution(count=4, sum=5000.1, min=0.0005, max=5000.0, counts=tuple(counts))
    buckets = histogram_buckets(dist)
    assert [le for le, _ in buckets][:3] == ["0.001", "0.0025", "0.005"]
    assert buckets[-1] == ("+Inf", 4.0)
    assert [n for _, n in buckets][:7] == [1, 1, 1, 1, 1, 3, 3]
    assert buckets[-2] == ("3600.0", 3.0)
    assert all(a[1] <= b[1] for a, b in itertools.pairwise(buckets))


async def test_scrape_over_http() -> None:
    Block.release = trio.Event()
    store = MemoryStore()
    now = datetime.now(UTC)
    async with (
        open_scheduler(store, [Quick, Boom, Block], max_concurrent=10) as scheduler,
        trio.open_nursery() as nursery,
    ):
        await scheduler.schedule(Quick, 1)
        await scheduler.schedule(Quick, 2)
        later = await scheduler.schedule(Quick, 3, at=now + timedelta(hours=1))
        await scheduler.schedule(Quick, 4, after=[later])
        await scheduler.schedule(Boom)
        await scheduler.schedule(Block)

        def settled() -> bool:
            stats = scheduler.statistics().classes
            return (
                stats["quick"].succeeded == 2
                and stats["boom"].failed == 1
                and stats["block"].running == 1
            )

        await settle(settled)
        port = await nursery.start(partial(serve_metrics, scheduler, port=0))
        samples = await scrape(port)

        assert value(samples, "futurecalls_calls_started_total", call_class="quick") == 2
        assert value(samples, "futurecalls_calls_started_total", call_class="block") == 1
        finished = "futurecalls_calls_finished_total"
        assert value(samples, finished, call_class="quick", outcome="succeeded") == 2
        assert value(samples, finished, call_class="quick", outcome="failed") == 0
        assert value(samples, finished, call_class="boom", outcome="failed") == 1
        assert value(samples, finished, call_class="block", outcome="cancelled") == 0
        boom = scheduler.statistics().classes["boom"]
        for counter, expected in (("retried", boom.retried), ("dead_lettered", boom.dead_lettered)):
            metric = f"futurecalls_calls_{counter}_total"
            assert value(samples, metric, call_class="boom") == expected
            assert value(samples, metric, call_class="quick") == 0
        assert value(samples, "futurecalls_calls_running", call_class="block") == 1
        assert value(samples, "futurecalls_calls_running", call_class="quick") == 0
        assert value(samples, "futurecalls_calls_pending", call_class="quick") == 2
        assert value(samples, "futurecalls_calls_due_waiting", call_class="quick") == 0
        waiting = "futurecalls_calls_waiting_prerequisites"
        assert value(samples, waiting, call_class="quick") == 1
        assert value(samples, waiting, call_class="boom") == 0
        assert value(samples, "futurecalls_calls_pending", call_class="boom") == 0
        assert value(samples, "futurecalls_concurrency_limit", call_class="quick") == 3
        assert value(samples, "futurecalls_concurrency_limit", call_class="block") == math.inf
        assert value(samples, "futurecalls_global_concurrency_limit") == 10
        assert value(samples, "futurecalls_store_up") == 1

        for metric, count in (
            ("futurecalls_call_wait_seconds", 2),
            ("futurecalls_call_run_seconds", 2),
        ):
            assert value(samples, f"{metric}_count", call_class="quick") == count
            assert value(samples, f"{metric}_bucket", call_class="quick", le="+Inf") == count
            assert value(samples, f"{metric}_sum", call_class="quick") >= 0
            cumulative = [
                value(samples, f"{metric}_bucket", call_class="quick", le=le)
                for le, _ in histogram_buckets(scheduler.statistics().classes["quick"].wait)
            ]
            assert cumulative == sorted(cumulative)
        # The running call has waited but not finished.
        assert value(samples, "futurecalls_call_wait_seconds_count", call_class="block") == 1
        assert value(samples, "futurecalls_call_run_seconds_count", call_class="block") == 0

        # Scraped again: counters move on.
        Block.release.set()
        await settle(lambda: scheduler.statistics().classes["block"].succeeded == 1)
        again = await scrape(port)
        assert value(again, finished, call_class="block", outcome="succeeded") == 1
        assert value(again, "futurecalls_call_run_seconds_count", call_class="block") == 1
        nursery.cancel_scope.cancel()


async def test_http_errors_and_head() -> None:
    async with (
        open_scheduler(MemoryStore(), [Quick]) as scheduler,
        trio.open_nursery() as nursery,
    ):
        port = await nursery.start(partial(serve_metrics, scheduler, port=0))
        status, _, body = await http(port, request("GET", "/nope"))
        assert (status, body) == (404, b"not found; try /metrics\n")
        status, _, _ = await http(port, request("POST", "/metrics", "Content-Length: 0"))
        assert status == 405
        status, _, _ = await http(port, b"garbage\r\n\r\n")
        assert status == 400
        # HTTP/1.1 requires a Host header (Hypercorn's h11 answers 400 without one).
        status, _, _ = await http(port, b"GET /metrics HTTP/1.1\r\nConnection: close\r\n\r\n")
        assert status == 400
        status, headers, body = await http(port, request("HEAD", "/metrics"))
        assert status == 200
        assert body == b""
        assert int(headers["content-length"]) > 0
        upgrade = ("Upgrade: websocket", "Connection: Upgrade", "Sec-WebSocket-Version: 13")
        websocket = request("GET", "/metrics", *upgrade, "Sec-WebSocket-Key: dGhlIHNhbXBsZQ==")
        status, _, _ = await http(port, websocket.replace(b"Connection: close\r\n", b""))
        assert status == 403
        status, _, body = await http(port, request("GET", "/?x=1"))
        assert status == 200
        assert b"futurecalls_store_up 1.0" in body
        # A client that connects and leaves does not disturb the server.
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        await stream.aclose()
        assert value(await scrape(port), "futurecalls_store_up") == 1
        nursery.cancel_scope.cancel()


async def test_openmetrics_and_gzip_when_the_scraper_asks() -> None:
    """prometheus_client's content negotiation: Prometheus itself asks for OpenMetrics."""
    async with (
        open_scheduler(MemoryStore(), [Quick]) as scheduler,
        trio.open_nursery() as nursery,
    ):
        port = await nursery.start(partial(serve_metrics, scheduler, port=0))
        accept = "Accept: application/openmetrics-text;version=1.0.0,text/plain;q=0.5"
        status, headers, body = await http(
            port, request("GET", "/metrics", accept, "Accept-Encoding: gzip")
        )
        assert status == 200
        assert headers["content-type"].startswith("application/openmetrics-text")
        assert headers["content-encoding"] == "gzip"
        assert int(headers["content-length"]) == len(body)
        text = gzip.decompress(body).decode()
        assert "# TYPE futurecalls_calls_started counter\n" in text  # OpenMetrics naming
        assert 'futurecalls_calls_started_total{call_class="quick"} 0.0\n' in text
        assert text.endswith("# EOF\n")
        nursery.cancel_scope.cancel()


async def test_quiet_and_stopped_at_once(
    capfd: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    """No access log or banner on stderr; cancelling stops the server even while a
    client keeps a connection open (keep-alive)."""
    caplog.set_level(logging.INFO)
    async with (
        open_scheduler(MemoryStore(), [Quick]) as scheduler,
        trio.open_nursery() as nursery,
    ):
        port = await nursery.start(partial(serve_metrics, scheduler, port=0))
        await scrape(port)
        idle = await trio.open_tcp_stream("127.0.0.1", port)
        await idle.send_all(b"GET /metrics HTTP/1.1\r\nHost: test\r\n\r\n")
        assert (await idle.receive_some(65536)).startswith(b"HTTP/1.1 200")
        started = trio.current_time()
        nursery.cancel_scope.cancel()
    assert trio.current_time() - started < 1.0
    await idle.aclose()
    assert capfd.readouterr().err == ""
    messages = [r.getMessage() for r in caplog.records if r.name.startswith(("trio_f", "hyper"))]
    assert messages == [f"serving metrics on http://127.0.0.1:{port}/metrics"]


async def test_store_down_is_reported_not_fatal(monkeypatch: pytest.MonkeyPatch) -> None:
    async with (
        open_scheduler(MemoryStore(), [Quick], max_concurrent=None) as scheduler,
        trio.open_nursery() as nursery,
    ):

        async def unavailable() -> None:
            raise StoreUnavailableError("database is down")

        monkeypatch.setattr(scheduler, "queue_lengths", unavailable)
        port = await nursery.start(partial(serve_metrics, scheduler, port=0))
        samples = await scrape(port)
        assert value(samples, "futurecalls_store_up") == 0
        assert value(samples, "futurecalls_global_concurrency_limit") == math.inf
        assert not any(name == "futurecalls_calls_pending" for name, _ in samples)
        assert value(samples, "futurecalls_calls_started_total", call_class="quick") == 0
        nursery.cancel_scope.cancel()


async def test_port_in_use_fails_at_start() -> None:
    async with (
        open_scheduler(MemoryStore(), [Quick]) as scheduler,
        trio.open_nursery() as nursery,
    ):
        port = await nursery.start(partial(serve_metrics, scheduler, port=0))
        with pytest.raises(OSError, match=r"(?i)address already in use"):
            await nursery.start(partial(serve_metrics, scheduler, port=port))
        nursery.cancel_scope.cancel()


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"port": 70000}, "port"),
        ({"port": True}, "port"),
        ({"port": 0, "host": "a" * 64}, "host"),
        ({"port": 0, "host": "a..b"}, "host"),
        ({"port": 0, "host": 127}, "host"),
    ],
)
async def test_bad_port_or_host_is_an_invalid_argument(options: dict[str, Any], match: str) -> None:
    async with (
        open_scheduler(MemoryStore(), [Quick]) as scheduler,
        trio.open_nursery() as nursery,
    ):
        with pytest.raises(InvalidArgumentError, match=match):
            await nursery.start(partial(serve_metrics, scheduler, **options))


async def test_a_failing_scrape_answers_500_and_the_server_survives(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    async with (
        open_scheduler(MemoryStore(), [Quick]) as scheduler,
        trio.open_nursery() as nursery,
    ):
        port = await nursery.start(partial(serve_metrics, scheduler, port=0))
        with monkeypatch.context() as patch:

            def broken() -> None:
                raise RuntimeError("statistics are broken")

            patch.setattr(scheduler, "statistics", broken)
            status, _, body = await http(port, request("GET", "/metrics"))
        assert (status, body) == (500, b"internal error\n")
        assert "could not answer a scrape" in caplog.text
        assert value(await scrape(port), "futurecalls_store_up") == 1
        nursery.cancel_scope.cancel()


async def test_recurring_schedules_are_exported(monkeypatch: pytest.MonkeyPatch) -> None:
    store = MemoryStore()
    start = datetime(2030, 1, 1, tzinfo=UTC)
    # Fired at 00:30, then 03:30: "hourly" runs 00:00, misses 01:00 and 02:00
    # (misfire="once": the 03:00 run stands for them); "serial" runs 00:00 and skips
    # 01:00..03:00 while that run is pending (overlap="skip"); "ended" never ran.
    await schedule_recurring(store, "tick", key="hourly", every=3600, start=start)
    await schedule_recurring(
        store, "tick", key="serial", every=3600, start=start, overlap="skip", misfire="all"
    )
    await schedule_recurring(
        store, "tick", key="ended", cron="0 * * * *", end=datetime(2020, 1, 1, tzinfo=UTC)
    )
    await store.fire_recurring(start + timedelta(minutes=30), 100)
    await store.fire_recurring(start + timedelta(hours=3, minutes=30), 100)
    # A node that runs no calls (and so fires no schedule) still exports them.
    async with (
        open_scheduler(store, [Quick], execute=False) as scheduler,
        trio.open_nursery() as nursery,
    ):
        port = await nursery.start(partial(serve_metrics, scheduler, port=0))
        samples = await scrape(port)
        next_tick = "futurecalls_recurring_next_tick_timestamp_seconds"
        last_tick = "futurecalls_recurring_last_tick_timestamp_seconds"
        four = (start + timedelta(hours=4)).timestamp()
        assert value(samples, next_tick, key="hourly") == four
        assert value(samples, next_tick, key="serial") == four
        assert value(samples, last_tick, key="hourly") == (start + timedelta(hours=3)).timestamp()
        assert value(samples, last_tick, key="serial") == start.timestamp()
        assert {dict(labels)["key"] for name, labels in samples if name == next_tick} == {
            "hourly",
            "serial",
        }  # "ended" is finished
        assert not any(name == last_tick and ("key", "ended") in labels for name, labels in samples)
        runs, skipped = "futurecalls_recurring_runs_total", "futurecalls_recurring_skipped_total"
        assert value(samples, runs, key="hourly") == 2
        assert value(samples, runs, key="serial") == 1
        assert value(samples, runs, key="ended") == 0
        assert value(samples, skipped, key="hourly", reason="misfire") == 2
        assert value(samples, skipped, key="hourly", reason="overlap") == 0
        assert value(samples, skipped, key="serial", reason="overlap") == 3
        assert value(samples, skipped, key="serial", reason="misfire") == 0
        assert value(samples, skipped, key="ended", reason="misfire") == 0
        _, _, body = await http(port, request("GET", "/metrics"))
        types = {f.name: f.type for f in text_string_to_metric_families(body.decode())}
        assert types[next_tick] == types[last_tick] == "gauge"
        assert types["futurecalls_recurring_runs"] == "counter"  # the parser drops _total
        assert types["futurecalls_recurring_skipped"] == "counter"

        # The store cannot list the schedules (a row no one can read, say): their
        # metrics alone are left out; the queue lengths and the rest are served.
        async def unavailable() -> None:
            raise StoreUnavailableError("database is down")

        monkeypatch.setattr(scheduler, "recurring", unavailable)
        samples = await scrape(port)
        assert value(samples, "futurecalls_store_up") == 1
        assert not any(name.startswith("futurecalls_recurring_") for name, _ in samples)
        assert any(name == "futurecalls_calls_pending" for name, _ in samples)
        assert value(samples, "futurecalls_calls_started_total", call_class="quick") == 0
        monkeypatch.undo()
        assert value(await scrape(port), runs, key="hourly") == 2
        nursery.cancel_scope.cancel()

"""One log line per finished call (``trio_futurecalls.call.end``), and the **lost**
warning of an at-most-once call that shutdown cancelled; memory store, autojump clock."""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime

import pytest
import trio
from helpers import Recorder, make_call
from trio.testing import MockClock

from trio_futurecalls import Delivery, MemoryStore, open_scheduler

END = "trio_futurecalls.call.end"


def end_records(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == END]


async def test_each_finished_call_logs_one_info_line(
    autojump_clock: MockClock, clock: Callable[[], datetime], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=END)
    rec = Recorder()
    call = make_call("mail", rec, max_concurrent=None)
    async with open_scheduler(MemoryStore(), [call], clock=clock) as s:
        ok = await s.schedule(call, {"tag": "ok", "sleep": 2})
        bad = await s.schedule(call, {"tag": "bad", "sleep": 1, "fail": True})
        await trio.sleep(10)
    by_id = {getattr(r, "call_id"): r for r in end_records(caplog)}  # noqa: B009
    assert sorted(by_id) == sorted([ok, bad])
    assert by_id[ok].levelno == logging.INFO
    assert by_id[ok].getMessage() == f"call mail (id={ok}) succeeded in 2.000 s"
    assert by_id[bad].getMessage() == f"call mail (id={bad}) failed in 1.000 s"
    assert getattr(by_id[ok], "call_outcome") == "succeeded"  # noqa: B009
    assert getattr(by_id[bad], "call_run_seconds") == pytest.approx(1.0)  # noqa: B009


async def test_debug_adds_detail_and_warning_level_switches_the_lines_off(
    autojump_clock: MockClock, clock: Callable[[], datetime], caplog: pytest.LogCaptureFixture
) -> None:
    rec = Recorder()
    call = make_call("mail", rec)
    caplog.set_level(logging.DEBUG, logger=END)
    async with open_scheduler(MemoryStore(), [call], clock=clock) as s:
        first = await s.schedule(call, {"tag": "x"}, identifier="user:7")
        await trio.sleep(1)
        caplog.set_level(logging.WARNING, logger=END)  # what --no-call-log does
        await s.schedule(call, {"tag": "y"})
        await trio.sleep(1)
    (record,) = end_records(caplog)
    message = record.getMessage()
    assert message.startswith(f"call mail (id={first}) succeeded in 0.000 s (attempt 1, ")
    assert "identifier 'user:7'" in message
    assert 'payload {"tag":"x"})' in message


async def test_an_at_most_once_call_cancelled_at_shutdown_is_logged_as_lost(
    autojump_clock: MockClock, clock: Callable[[], datetime], caplog: pytest.LogCaptureFixture
) -> None:
    # Even with the per-call lines switched off: it is a warning.
    caplog.set_level(logging.WARNING, logger=END)
    rec = Recorder()
    call = make_call("report", rec)
    async with open_scheduler(MemoryStore(), [call], clock=clock) as s:
        lost = await s.schedule(
            call, {"tag": "t", "sleep": 600, "to": "postgresql://u:hunter2@h/db"}, identifier="r:1"
        )
        await trio.sleep(5)
        await s.shutdown(grace_period=2)
    (record,) = end_records(caplog)
    assert record.levelno == logging.WARNING
    message = record.getMessage()
    assert message.startswith(
        f"call report (id={lost}, identifier 'r:1') lost: it was cancelled by shutdown "
        "after 7.000 s and, delivered at-most-once, is not run again; payload "
    )
    assert '"tag":"t"' in message
    assert "hunter2" not in message
    assert getattr(record, "call_outcome") == "lost"  # noqa: B009


async def test_an_at_least_once_call_cancelled_at_shutdown_is_not_lost(
    autojump_clock: MockClock, clock: Callable[[], datetime], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    rec = Recorder()
    call = make_call("report", rec)
    store = MemoryStore()
    options = {"default_delivery": Delivery.AT_LEAST_ONCE, "clock": clock}
    async with open_scheduler(store, [call], **options) as s:  # type: ignore[arg-type]
        await s.schedule(call, {"tag": "t", "sleep": 600})
        await trio.sleep(5)
        await s.shutdown(grace_period=0)
    assert end_records(caplog) == []
    assert any("it runs again" in r.getMessage() for r in caplog.records)
    async with open_scheduler(store, [call], **options) as s:  # type: ignore[arg-type]
        assert len(await s.pending()) == 1
        await s.shutdown(grace_period=0)

"""``worker`` and ``run-once`` pass the thread and process pool sizes to the scheduler
(``--max-threads``, ``--max-processes``); without them, the scheduler's defaults."""

from __future__ import annotations

import pytest

from trio_futurecalls import SchedulerOptions
from trio_futurecalls.cli._arguments import NOT_GIVEN
from trio_futurecalls.cli._parser import build_parser
from trio_futurecalls.cli._store import Sizing
from trio_futurecalls.cli._worker import _scheduler_options


@pytest.mark.parametrize("command", ["worker", "run-once"])
def test_pool_sizes_reach_the_scheduler(command: str) -> None:
    parser = build_parser()
    sizing = Sizing(pool_size=None, max_concurrent=NOT_GIVEN)
    args = parser.parse_args([command, "m:CALLS", "--max-threads", "3", "--max-processes", "2"])
    options = SchedulerOptions(**_scheduler_options(args, sizing))
    assert (options.max_threads, options.max_processes) == (3, 2)
    default = SchedulerOptions(
        **_scheduler_options(parser.parse_args([command, "m:CALLS"]), sizing)
    )
    assert (default.max_threads, default.max_processes) == (
        SchedulerOptions().max_threads,
        SchedulerOptions().max_processes,
    )


@pytest.mark.parametrize("bad", ["0", "-1", "two"])
def test_bad_pool_sizes_are_usage_errors(bad: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        build_parser().parse_args(["worker", "m:CALLS", "--max-processes", bad])
    assert exited.value.code == 2
    assert "--max-processes: expected a positive integer" in capsys.readouterr().err

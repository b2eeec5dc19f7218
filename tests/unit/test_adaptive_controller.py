"""The adaptive controller's decisions from synthetic windows (pure: no Trio), and the
validation of ``Adaptive`` wherever a limit is accepted."""

from __future__ import annotations

from typing import Any

import pytest

from trio_futurecalls import Adaptive, FutureCall, InvalidArgumentError, SchedulerOptions
from trio_futurecalls._adaptive import LimitController, Window, ceiling, check_max_concurrent
from trio_futurecalls._presence import worker_limits
from trio_futurecalls._retry import Delivery

BASE = 0.020  # seconds: the downstream's unloaded latency


def busy(limit: int, latency: float = BASE, **kw: Any) -> Window:
    """A window of a limit in full use, at ``latency``."""
    return Window(succeeded=50, latency=latency, peak_running=limit, **kw)


def run(controller: LimitController, windows: int, make: Any) -> list[int]:
    """Feed ``windows`` windows made by ``make(limit)``; return the limits in force."""
    seen = []
    for _ in range(windows):
        seen.append(controller.update(make(controller.limit)).limit)
    return seen


def test_slow_start_doubles_while_latency_stays_at_its_best() -> None:
    c = LimitController(Adaptive(1, 64))
    assert c.limit == 1
    assert run(c, 6, busy) == [2, 4, 8, 16, 32, 64]
    assert c.slow_start


def test_rises_under_good_latency_after_slow_start_and_stops_at_max() -> None:
    c = LimitController(Adaptive(1, 40, initial=10))
    c.update(busy(10, BASE))
    # Latency past the tolerance ends slow start...
    c.update(busy(10, BASE * 2))
    assert not c.slow_start
    start = c.limit
    # ...then latency at its best again: the limit climbs, gradually, up to max.
    limits = run(c, 200, busy)
    assert limits[0] <= start + 1
    assert limits == sorted(limits)
    assert limits[-1] == 40
    assert max(limits) == 40


def test_does_not_grow_when_the_limit_is_not_used() -> None:
    c = LimitController(Adaptive(1, 64, initial=8))
    for _ in range(20):
        c.update(Window(succeeded=50, latency=BASE, peak_running=3))
    assert c.limit == 8


def queueing(capacity: int, limit: int) -> float:
    """Latency of a downstream that serves ``capacity`` requests at once at BASE and
    queues the rest: BASE up to capacity, growing linearly beyond."""
    return BASE * max(1.0, limit / capacity)


def test_falls_under_latency_growth_and_settles_near_capacity() -> None:
    c = LimitController(Adaptive(1, 64, initial=60))
    c.update(busy(60, BASE))  # its best seen once
    limits = run(c, 100, lambda lim: busy(lim, queueing(8, lim)))
    assert limits[0] < 60
    # Settled: latency within tolerance plus the sqrt(limit) queue Gradient2 allows.
    assert 8 <= limits[-1] <= 20
    assert max(limits[-20:]) - min(limits[-20:]) <= 2


def test_follows_capacity_down_and_back_up() -> None:
    c = LimitController(Adaptive(1, 64))
    before = run(c, 40, lambda lim: busy(lim, queueing(8, lim)))[-1]
    after_drop = run(c, 40, lambda lim: busy(lim, queueing(4, lim)))[-1]
    recovered = run(c, 80, lambda lim: busy(lim, queueing(8, lim)))[-1]
    assert after_drop < before
    assert 4 <= after_drop <= 12
    assert recovered >= before - 2


@pytest.mark.parametrize("failed", [10, 50])
def test_errors_and_timeouts_decrease_multiplicatively(failed: int) -> None:
    c = LimitController(Adaptive(1, 64, initial=40))
    d = c.update(Window(succeeded=50, overloaded=failed, latency=BASE, peak_running=40))
    assert d.limit == 28  # 40 * 0.7
    assert not c.slow_start
    assert "failed or timed out" in d.reason
    c.update(Window(overloaded=5, peak_running=28))
    assert c.limit == 19  # 28 * 0.7 = 19.6, rounded down


def test_a_few_errors_among_many_calls_are_the_calls_own() -> None:
    c = LimitController(Adaptive(1, 64, initial=16))
    d = c.update(Window(succeeded=100, overloaded=5, latency=BASE, peak_running=16))
    assert d.limit == 32  # still slow start: 5 % is under ERROR_SHARE


def test_floor_at_min() -> None:
    c = LimitController(Adaptive(3, 64, initial=10))
    limits = run(c, 20, lambda lim: Window(overloaded=20, peak_running=lim))
    assert limits[-1] == 3
    assert min(limits) == 3
    # Latency growth cannot push it below min either.
    c2 = LimitController(Adaptive(5, 64, initial=5))
    c2.update(busy(5, BASE))
    assert min(run(c2, 50, lambda lim: busy(lim, BASE * 10))) == 5


def test_ceiling_at_max_and_custom_backoff() -> None:
    c = LimitController(Adaptive(1, 10, backoff=0.5))
    assert max(run(c, 50, busy)) == 10
    assert c.update(Window(overloaded=10, peak_running=10)).limit == 5


def test_loop_lag_lowers_the_limit_and_moderate_lag_stops_growth() -> None:
    c = LimitController(Adaptive(1, 64, initial=32))
    d = c.update(busy(32, loop_lag=0.3))
    assert d.limit == 22  # 32 * 0.7
    assert "lag" in d.reason
    # Even with no call ended (a loop blocked by something else).
    assert c.update(Window(loop_lag=0.3)).limit == 15
    # Lag above half max_loop_lag: no growth; at its best and calm: growth.
    assert c.update(busy(15, loop_lag=0.06)).limit == 15
    assert c.update(busy(15, loop_lag=0.0)).limit > 15


def test_no_successful_call_changes_nothing() -> None:
    c = LimitController(Adaptive(1, 64, initial=8))
    assert c.update(Window(peak_running=8)).limit == 8


def test_start_is_clamped_into_bounds() -> None:
    assert LimitController(Adaptive(4, 8), start=100).limit == 8
    assert LimitController(Adaptive(4, 8), start=1).limit == 4
    assert LimitController(Adaptive(4, 8, initial=6)).limit == 6


# -- validation ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "kwargs", "message"),
    [
        ((0, 10), {}, "min must be an int >= 1"),
        ((1.5, 10), {}, "min must be an int >= 1"),
        ((True, 10), {}, "min must be an int >= 1"),
        ((5, 4), {}, "max must be >= min"),
        ((1, "64"), {}, "max must be an int >= 1"),
        ((2, 8), {"initial": 1}, "initial must be within min..max"),
        ((2, 8), {"initial": 9}, "initial must be within min..max"),
        ((1, 8), {"latency_tolerance": 0.9}, "latency_tolerance must be >= 1"),
        ((1, 8), {"latency_tolerance": float("inf")}, "latency_tolerance"),
        ((1, 8), {"backoff": 1}, "backoff must be a number above 0 and below 1"),
        ((1, 8), {"backoff": 0}, "backoff"),
        ((1, 8), {"max_loop_lag": 0}, "max_loop_lag"),
        ((1, 8), {"max_loop_lag": "1"}, "max_loop_lag"),
    ],
)
def test_adaptive_refuses_bad_bounds(
    args: tuple[Any, ...], kwargs: dict[str, Any], message: str
) -> None:
    with pytest.raises(InvalidArgumentError, match=message):
        Adaptive(*args, **kwargs)


def test_adaptive_defaults_and_repr() -> None:
    a = Adaptive()
    assert (a.min, a.max, a.start) == (1, 64, 1)
    assert Adaptive(min=2, max=9) == Adaptive(2, 9)
    assert repr(a).startswith("Adaptive(min=1, max=64")
    assert type(a).__module__ == "trio_futurecalls"
    assert ceiling(a) == 64
    assert ceiling(5) == 5
    assert ceiling(None) is None


def test_a_class_accepts_adaptive_and_refuses_bad_limits() -> None:
    class Ok(FutureCall):
        name = "ok"
        max_concurrent = Adaptive(2, 16)

        async def invoke(self, session: Any, payload: Any) -> None:
            pass

    assert Ok.max_concurrent == Adaptive(2, 16)
    with pytest.raises(InvalidArgumentError, match=r"Bad\.max_concurrent must be a positive int"):

        class Bad(FutureCall):
            name = "bad"
            max_concurrent = (1, 64)  # type: ignore[assignment]

            async def invoke(self, session: Any, payload: Any) -> None:
                pass


def test_scheduler_options_accept_adaptive_and_keep_env_ints(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert SchedulerOptions(max_concurrent=Adaptive(4, 100)).max_concurrent == Adaptive(4, 100)
    monkeypatch.setenv("TRIO_FUTURECALLS_MAX_CONCURRENT", "7")
    assert SchedulerOptions().max_concurrent == 7
    with pytest.raises(InvalidArgumentError, match="max_concurrent must be a positive int, an"):
        SchedulerOptions(max_concurrent="Adaptive")
    with pytest.raises(InvalidArgumentError, match="the global limit must be >= 1"):
        check_max_concurrent(0, "the global limit")


def test_worker_limits_record_an_adaptive_limit_as_its_max_and_bounds() -> None:
    limits = worker_limits(
        Adaptive(4, 100),
        {"a": (Adaptive(1, 64), Delivery.AT_MOST_ONCE), "b": (3, Delivery.AT_LEAST_ONCE)},
    )
    assert limits == {
        "max_concurrent": 100,
        "adaptive": {"min": 4, "max": 100},
        "classes": {
            "a": {
                "max_concurrent": 64,
                "adaptive": {"min": 1, "max": 64},
                "delivery": "at_most_once",
            },
            "b": {"max_concurrent": 3, "delivery": "at_least_once"},
        },
    }

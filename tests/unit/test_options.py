"""SchedulerOptions: every setting declared, defaulted and validated in one place."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import attrs
import pytest

from trio_futurecalls import (
    DEFAULT_GRACE_PERIOD,
    DEFAULT_MAX_CONCURRENT,
    DEFAULT_WORKER_TIMEOUT,
    Delivery,
    InvalidArgumentError,
    SchedulerKeywords,
    SchedulerOptions,
)
from trio_futurecalls._options import build_options


def test_keywords_and_fields_stay_in_step() -> None:
    fields = {f.name for f in attrs.fields(SchedulerOptions)}
    assert set(SchedulerKeywords.__annotations__) == fields


def test_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TRIO_FUTURECALLS_MAX_CONCURRENT", raising=False)
    options = SchedulerOptions()
    assert options.max_concurrent == DEFAULT_MAX_CONCURRENT
    assert options.grace_period == DEFAULT_GRACE_PERIOD
    assert options.execute is True
    assert options.default_delivery is Delivery.AT_MOST_ONCE
    assert options.renew_interval == options.lease_duration / 3
    assert options.worker_timeout == DEFAULT_WORKER_TIMEOUT == 30.0


def test_environment_is_read_when_the_limit_is_not_given(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("TRIO_FUTURECALLS_MAX_CONCURRENT", "7")
    assert SchedulerOptions().max_concurrent == 7
    assert SchedulerOptions(max_concurrent=3).max_concurrent == 3
    assert SchedulerOptions(max_concurrent=None).max_concurrent is None
    monkeypatch.setenv("TRIO_FUTURECALLS_MAX_CONCURRENT", "unlimited")
    assert SchedulerOptions().max_concurrent is None


def test_build_options_applies_keywords_over_a_base() -> None:
    base = SchedulerOptions(max_concurrent=4, grace_period=1)
    assert build_options(base, {}) is base
    built = build_options(base, {"grace_period": 2})
    assert (built.max_concurrent, built.grace_period) == (4, 2.0)
    assert build_options(None, {"max_concurrent": 9}).max_concurrent == 9
    with pytest.raises(InvalidArgumentError, match="options must be a SchedulerOptions"):
        build_options({"max_concurrent": 1}, {})  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("keywords", "message"),
    [
        ({"max_concurrent": 0}, "max_concurrent must be >= 1"),
        ({"max_concurrent": True}, "max_concurrent must be a positive int"),
        ({"grace_period": -1}, "grace_period must be finite and >= 0"),
        ({"grace_period": float("nan")}, "grace_period must be finite"),
        ({"unknown_check_interval": 0}, "unknown_check_interval must be > 0"),
        ({"lease_duration": 0}, "lease_duration must be > 0"),
        ({"lease_duration": 3, "lease_renew_interval": 3}, "shorter than lease_duration"),
        ({"lease_renew_interval": 0}, "lease_renew_interval must be > 0"),
        ({"default_delivery": "at_least_once"}, "default_delivery must be a Delivery"),
        ({"worker_timeout": 0}, "worker_timeout must be > 0"),
        ({"worker_timeout": -1}, "worker_timeout must be finite and >= 0"),
        ({"worker_timeout": float("inf")}, "worker_timeout must be finite"),
        ({"worker_timeout": "30"}, "worker_timeout must be a number of seconds"),
        ({"clock": 5}, "clock must be callable"),
        ({"clock": datetime.now}, "must be timezone-aware"),
    ],
)
def test_bad_options_are_rejected(keywords: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidArgumentError, match=message):
        SchedulerOptions(**keywords)


def test_options_are_frozen() -> None:
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        SchedulerOptions().grace_period = 3  # type: ignore[misc]

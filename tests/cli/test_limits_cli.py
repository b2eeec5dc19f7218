"""``futurecalls limits list|set|remove``, run in process through ``cli.main`` on an
SQLite store in ``tmp_path``."""

from __future__ import annotations

import json
from typing import Any

import pytest


@pytest.fixture
def cli(cli: Any) -> Any:
    """The shared runner, on a migrated store."""
    cli("migrate")
    return cli


def test_set_list_and_remove(cli: Any) -> None:
    assert cli("limits", "list", "--json").out.strip() == "[]"
    assert (
        "set: cluster-wide limit of pay: 5 at once"
        in cli("limits", "set", "pay", "--concurrency", "5").out
    )
    assert "(was 5)" in cli("limits", "set", "pay", "--concurrency", "3").out
    cli("limits", "set", "api", "--rate", "100", "--per", "1m")
    cli("limits", "set", "*", "--concurrency", "20")
    listed = json.loads(cli("limits", "list", "--json").out)
    assert [(x["name"], x["kind"], x["tokens"], x["per_seconds"]) for x in listed] == [
        ("*", "concurrency", 20, None),
        ("api", "rate", 100, 60.0),
        ("pay", "concurrency", 3, None),
    ]
    assert listed[2]["set_by"].startswith("futurecalls limits set (")
    table = cli("limits", "list").out
    assert "NAME" in table
    assert "60 s" in table
    assert cli("limits", "remove", "api", "--rate").out.strip() == "removed: rate limit of api"
    assert cli("limits", "remove", "api", "--rate").out.strip() == "no rate limit of api"
    assert len(json.loads(cli("limits", "list", "--json").out)) == 2


@pytest.mark.parametrize(
    "args",
    [
        ("pay",),  # neither
        ("pay", "--concurrency", "2", "--rate", "3", "--per", "1s"),  # both
        ("pay", "--rate", "3"),  # no window
        ("pay", "--concurrency", "3", "--per", "1s"),
        ("pay", "--concurrency", "0"),
        ("*", "--rate", "3", "--per", "1s"),  # a rate on all classes
        ("bad name", "--concurrency", "1"),
        ("pay", "--rate", "3", "--per", "0s"),
    ],
)
def test_bad_limits_are_usage_errors(cli: Any, args: tuple[str, ...]) -> None:
    result = cli("limits", "set", *args, rc=2)
    assert "Traceback" not in result.err

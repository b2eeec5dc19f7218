"""``futurecalls stats --metrics-url`` shows each class's ``current_limit`` (an adaptive
limit's value in force), read from the worker's metrics page (fetched in process)."""

from __future__ import annotations

import pytest

from trio_futurecalls.cli import _scrape, main

PAGE = """\
futurecalls_calls_started_total{call_class="partner"} 120
futurecalls_concurrency_limit{call_class="partner"} 64
futurecalls_concurrency_current_limit{call_class="partner"} 13
futurecalls_concurrency_limit{call_class="fixed"} 5
futurecalls_concurrency_current_limit{call_class="fixed"} 5
"""


@pytest.fixture(autouse=True)
def _page(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_scrape, "_fetch", lambda url: PAGE)


def test_stats_table_has_a_current_limit_column(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["stats", "--metrics-url", "http://127.0.0.1:9/metrics"]) == 0
    header, *rows = capsys.readouterr().out.splitlines()
    assert "LIMIT" in header
    assert "CURRENT LIMIT" in header
    partner = next(r for r in rows if r.startswith("partner"))
    assert partner.split()[-4:-2] == ["64", "13"]  # then AVG WAIT S, AVG RUN S


def test_stats_json_has_current_limit(capsys: pytest.CaptureFixture[str]) -> None:
    import json

    assert main(["stats", "--metrics-url", "http://127.0.0.1:9/metrics", "--json"]) == 0
    table = json.loads(capsys.readouterr().out)
    assert table["partner"]["limit"] == 64
    assert table["partner"]["current_limit"] == 13
    assert table["fixed"]["current_limit"] == 5

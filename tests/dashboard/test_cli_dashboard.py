"""``futurecalls dashboard``'s failures, in process (its success runs in a subprocess in
``test_browser.py``: it serves until a signal)."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from trio_futurecalls._validate import is_loopback
from trio_futurecalls.cli import main


@pytest.fixture
def store_url(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path / 'calls.sqlite3'}"
    assert main(["--store", url, "migrate"]) == 0
    return url


def test_a_port_in_use_is_a_clear_error(store_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        code = main(["--store", store_url, "dashboard", "--port", str(port)])
    assert code == 1
    assert f"cannot serve the dashboard on 127.0.0.1:{port}" in capsys.readouterr().err


def test_a_short_token_is_a_usage_error(store_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["--store", store_url, "dashboard", "--port", "0", "--token", "abc"])
    assert code == 2
    err = capsys.readouterr().err
    assert "token must be a str of at least 8 characters" in err


def test_bad_port_is_a_usage_error(store_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit:
        main(["--store", store_url, "dashboard", "--port", "70000"])
    assert exit.value.code == 2


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.0.0.2", True),
        ("localhost", True),
        ("::1", True),
        ("[::1]", True),
        ("0.0.0.0", False),
        ("192.168.1.5", False),
        ("dashboard.example", False),
    ],
)
def test_the_no_token_warning_is_for_hosts_other_machines_reach(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback

"""Store URLs: which forms ``open_store`` takes, what it rejects, and that no error shows
a password. Nothing here opens a store (every case fails before any I/O)."""

from __future__ import annotations

import sys
from typing import Any

import pytest

from trio_futurecalls import InvalidArgumentError, open_store
from trio_futurecalls._open_store import StoreURL, parse_store_url, redact, secrets_in


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("memory://", StoreURL("memory", "")),
        ("MEMORY://", StoreURL("memory", "")),
        ("sqlite:///calls.db", StoreURL("sqlite", "calls.db")),
        ("sqlite:///sub/calls.db", StoreURL("sqlite", "sub/calls.db")),
        ("sqlite:////abs/calls.db", StoreURL("sqlite", "/abs/calls.db")),
        ("postgresql://u@h/db", StoreURL("postgres", "postgresql://u@h/db")),
        ("postgres://u:p@h:5433/db", StoreURL("postgres", "postgres://u:p@h:5433/db")),
        ("PostgreSQL://h/db", StoreURL("postgres", "PostgreSQL://h/db")),
    ],
)
def test_accepted_urls(url: str, expected: StoreURL) -> None:
    assert parse_store_url(url) == expected


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("mysql://x/y", "unsupported store URL 'mysql://x/y': use memory://, sqlite:///path"),
        ("calls.db", "unsupported store URL 'calls.db'"),
        ("", "unsupported store URL ''"),
        ("host=h dbname=d", "unsupported store URL"),
        ("sqlite:calls.db", "invalid SQLite store URL 'sqlite:calls.db'"),
        ("sqlite://calls.db", "invalid SQLite store URL"),
        ("sqlite:///", "invalid SQLite store URL"),
        ("memory://x", "invalid memory store URL 'memory://x': use memory://"),
        ("memory:", "invalid memory store URL"),
        ("postgresql:db", "invalid PostgreSQL store URL 'postgresql:db'"),
    ],
)
def test_rejected_urls(url: str, message: str) -> None:
    with pytest.raises(InvalidArgumentError, match="^" + message.replace("?", r"\?")):
        parse_store_url(url)


def test_a_url_must_be_a_string() -> None:
    with pytest.raises(InvalidArgumentError, match="must be a str, got bytes"):
        parse_store_url(b"memory://")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("postgresql://u:secret@h/db", "postgresql://u:***@h/db"),
        ("postgres://u:se@cr:et@h:5/db", "postgres://u:***@h:5/db"),
        ("postgresql://u:se/cret@h/db", "postgresql://u:***@h/db"),
        (
            "postgresql://u@h/db?password=secret&sslmode=off",
            "postgresql://u@h/db?password=***&sslmode=off",
        ),
        ("host=h password=secret dbname=d", "host=h password=*** dbname=d"),
        ("host=h PASSWORD = 'sec ret' dbname=d", "host=h PASSWORD = *** dbname=d"),
        ("mysql:u:secret@h", "mysql:u:***@h"),
        ("postgresql://u@h/db", "postgresql://u@h/db"),
        (
            "postgresql://h:5432/db?application_name=a@b",
            "postgresql://h:5432/db?application_name=a@b",
        ),
        ("sqlite:////a/b.db", "sqlite:////a/b.db"),
        ("", ""),
        # key=value connection strings: a value runs to unescaped whitespace (libpq).
        ("host=h password=s3cr&et dbname=d", "host=h password=*** dbname=d"),
        ("host=h password=s3cr;et dbname=d", "host=h password=*** dbname=d"),
        (r"host=h password=a\ b dbname=d", "host=h password=*** dbname=d"),
        (r"host=h password='it\'s' dbname=d", "host=h password=*** dbname=d"),
        ("host=h sslpassword=key dbname=d", "host=h sslpassword=*** dbname=d"),
        ("password=secret", "password=***"),
        # In free text (messages, tracebacks): every URL, and only the password.
        (
            "cannot connect to postgresql://u:p@ss@h/db (timeout)",
            "cannot connect to postgresql://u:***@h/db (timeout)",
        ),
        (
            "x postgresql://u:pw@h/db and 'postgresql://v:pw2@h/db'",
            "x postgresql://u:***@h/db and 'postgresql://v:***@h/db'",
        ),
        ("http://user:pass@host/metrics", "http://user:***@host/metrics"),
        ("failed: u:secret@h:5432", "failed: u:***@h:5432"),
        ("@decorator and a@b.c stay", "@decorator and a@b.c stay"),
    ],
)
def test_redact(url: str, shown: str) -> None:
    assert redact(url) == shown


def test_the_passwords_a_url_holds_are_hidden_wherever_they_appear() -> None:
    url = "postgresql://u:p%40ss%20word@h/db?sslpassword=keypass&password=other1"
    secrets = secrets_in(url)
    assert set(secrets) >= {"p%40ss%20word", "p@ss word", "keypass", "other1"}
    assert secrets_in("host=h password='it\\'s long' dbname=d") == ["it's long"]
    text = "auth failed with 'p@ss word' (keypass) for other1"
    assert redact(text, secrets) == "auth failed with '***' (***) for ***"
    # Too short to hide everywhere without hiding everything: URL forms still are.
    assert secrets_in("postgresql://u:ab@h/db") == []


@pytest.mark.parametrize(
    "url",
    [
        "mysql://u:secret@h/db",
        "postgresql:u:secret@h",
        "sqlite:u:secret@h",
        "memory://u:secret@h",
        "mysql://u@h/db?password=secret",
        "host=h password=secret",
    ],
)
async def test_no_error_shows_a_password(url: str) -> None:
    with pytest.raises(InvalidArgumentError) as caught:
        async with open_store(url):
            pass
    assert "secret" not in str(caught.value)
    assert "***" in str(caught.value)


@pytest.mark.parametrize(
    ("url", "options", "message"),
    [
        ("memory://", {"schema": "x"}, r"\(MemoryStore\) takes no option 'schema'; it takes none"),
        (
            "sqlite:///calls.db",
            {"schema": "x"},
            r"\(open_sqlite_store\) takes no option 'schema'; it takes recheck_interval, "
            "synchronous, busy_timeout",
        ),
        (
            "postgresql://u:secret@127.0.0.1:1/db",
            {"synchronous": "FULL"},
            r"^the store at 'postgresql://u:\*\*\*@127.0.0.1:1/db' \(open_postgres_store\) "
            "takes no option 'synchronous'; it takes schema, ",
        ),
    ],
)
async def test_options_the_opener_does_not_take(
    url: str, options: dict[str, Any], message: str, tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(InvalidArgumentError, match=message):
        async with open_store(url, **options):
            pass
    assert not (tmp_path / "calls.db").exists()  # nothing was opened


async def test_bad_option_values_are_the_openers_errors() -> None:
    with pytest.raises(InvalidArgumentError, match="synchronous must be one of"):
        async with open_store("sqlite:///never.db", synchronous="SOMETIMES"):
            pass
    with pytest.raises(InvalidArgumentError, match="schema"):
        async with open_store("postgresql://u:secret@127.0.0.1:1/db", schema="Bad-Name"):
            pass


async def test_postgres_without_the_extra_names_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "asyncpg", None)
    monkeypatch.delitem(sys.modules, "trio_futurecalls.stores.postgres", raising=False)
    with pytest.raises(ImportError, match=r"pip install 'trio_futurecalls\[postgres\]'") as caught:
        async with open_store("postgresql://u:secret@h/db"):
            pass
    assert "secret" not in str(caught.value)
    # Other URLs do not need it.
    async with open_store("memory://"):
        pass

"""The public API: one explicit list, and every name reports its public home."""

from __future__ import annotations

import importlib
import traceback
import typing

import pytest

import trio_futurecalls

PUBLIC = sorted(name for name in dir(trio_futurecalls) if not name.startswith("_"))
DEFINED_HERE = [
    name
    for name in PUBLIC
    if callable(getattr(trio_futurecalls, name))
    and getattr(getattr(trio_futurecalls, name), "__module__", "").startswith("trio_futurecalls")
]


@pytest.mark.parametrize("name", DEFINED_HERE)
def test_public_names_report_their_public_module(name: str) -> None:
    value = getattr(trio_futurecalls, name)
    assert value.__module__ in (
        "trio_futurecalls",
        *(f"trio_futurecalls.{m}" for m in ["stores.memory", "stores.sqlite", "stores.postgres"]),
    ), value.__module__
    if isinstance(value, type):
        # Annotations still resolve after the module was rewritten (attrs, cattrs...).
        typing.get_type_hints(value)


@pytest.mark.parametrize(
    "package", ["trio_futurecalls.stores.sqlite", "trio_futurecalls.stores.postgres"]
)
def test_store_packages_report_their_public_module(package: str) -> None:
    module = importlib.import_module(package)
    names = [n for n in dir(module) if not n.startswith("_")]
    found = 0
    for name in names:
        value = getattr(module, name)
        if callable(value) and getattr(value, "__module__", "").startswith(package):
            assert value.__module__ == package, (name, value.__module__)
            if isinstance(value, type):
                typing.get_type_hints(value)
            found += 1
    assert found >= 3


def test_errors_show_their_public_name_in_tracebacks() -> None:
    try:
        raise trio_futurecalls.StoreUnavailableError("database down")
    except trio_futurecalls.StoreError as exc:
        (line,) = traceback.format_exception_only(exc)
    assert line == "trio_futurecalls.StoreUnavailableError: database down\n"
    assert repr(trio_futurecalls.SchedulerOptions).startswith(
        "<class 'trio_futurecalls.SchedulerOptions'"
    )


def test_version_has_one_source() -> None:
    from importlib.metadata import version

    from trio_futurecalls._version import __version__

    assert trio_futurecalls.__version__ == __version__ == version("trio_futurecalls")


def test_the_postgres_store_is_importable_from_the_top_lazily() -> None:
    """``from trio_futurecalls import open_postgres_store`` works (the import happens on
    first use: tests/processes/test_imports.py checks that ``import trio_futurecalls``
    alone does not import asyncpg)."""
    from trio_futurecalls import PostgresSession, PostgresStore, open_postgres_store
    from trio_futurecalls.stores import postgres

    assert open_postgres_store is postgres.open_postgres_store
    assert (PostgresStore, PostgresSession) == (postgres.PostgresStore, postgres.PostgresSession)
    assert {"open_postgres_store", "PostgresStore", "PostgresSession"} <= set(PUBLIC)
    with pytest.raises(AttributeError, match="no attribute 'nothing_here'"):
        trio_futurecalls.nothing_here  # noqa: B018

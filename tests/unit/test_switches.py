"""Switches take a real bool: a string from configuration is not its truth value."""

from __future__ import annotations

from typing import Any

import pytest

from trio_futurecalls import InvalidArgumentError, SchedulerOptions


@pytest.mark.parametrize("value", ["false", "no", 0.0, None, [0]])
def test_execute_must_be_a_bool(value: Any) -> None:
    with pytest.raises(InvalidArgumentError):
        SchedulerOptions(execute=value)


@pytest.mark.parametrize("value", ["no", 0, None])
async def test_postgres_switches_and_sizes_are_checked(value: Any) -> None:
    from trio_futurecalls.stores.postgres import open_postgres_store, recommended_pool_size

    # Refused before any connection is tried (no server listens on port 1).
    with pytest.raises(InvalidArgumentError, match="migrate must be True or False"):
        async with open_postgres_store("postgresql://nobody@127.0.0.1:1/x", migrate=value):
            pass
    for bad in (-5, 0):
        with pytest.raises(InvalidArgumentError, match="max_concurrent must be >= 1"):
            recommended_pool_size(bad)


def test_public_is_accepted_but_postgresqls_own_schemas_are_not() -> None:
    from trio_futurecalls.stores.postgres import check_schema_name

    assert check_schema_name("public") == "public"  # 0.1.0 stores there keep working
    for own in ("information_schema", "pg_catalog", "pg_toast"):
        with pytest.raises(InvalidArgumentError, match="PostgreSQL's own"):
            check_schema_name(own)

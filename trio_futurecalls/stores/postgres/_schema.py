"""The store's PostgreSQL schema by name: its validation, its NOTIFY channel and the
store's queries with the name filled in.

A schema name is interpolated into SQL (``{schema}`` in the ``.sql`` files) and into
the channel name, so it is checked first, once, by :func:`check_schema_name`.
"""

from __future__ import annotations

import re
from typing import Final

from ..._errors import InvalidArgumentError
from .._sql import queries

#: The schema used when none is given.
DEFAULT_SCHEMA: Final = "futurecalls"
#: Prefix of the NOTIFY channel; the schema name follows it.
CHANNEL_PREFIX: Final = "futurecalls:"
#: Longest accepted schema name (the channel name must fit PostgreSQL's 63 bytes).
MAX_SCHEMA_LENGTH: Final = 63 - len(CHANNEL_PREFIX)

# Lower case only: PostgreSQL folds unquoted names to lower case, so "Futurecalls" and
# "futurecalls" would be the same schema in hand-written SQL but not in ours.
_SCHEMA_RE: Final = re.compile(r"^[a-z_][a-z0-9_]*$")
#: Schemas the store must never use: PostgreSQL's own (``pg_catalog``, ``pg_toast``,
#: ``pg_temp...``, every name starting with ``pg_``, which PostgreSQL reserves, and
#: ``information_schema``), and ``public``, where the application's own tables live
#: (a ``calls`` table of its own would mix with ours).
RESERVED_SCHEMAS: Final = frozenset({"information_schema"})


def check_schema_name(schema: object) -> str:
    """Validate a schema name; it is interpolated into SQL only after this check."""
    if not isinstance(schema, str):
        raise InvalidArgumentError(f"schema must be a str, got {type(schema).__name__}")
    if not schema or len(schema) > MAX_SCHEMA_LENGTH:
        raise InvalidArgumentError(
            f"schema name must be 1 to {MAX_SCHEMA_LENGTH} characters, got {schema!r}"
        )
    if not _SCHEMA_RE.match(schema):
        raise InvalidArgumentError(
            f"schema name {schema!r} must be lower case letters, digits and '_' and not "
            "start with a digit (no quotes, spaces, dots or semicolons)"
        )
    if schema.startswith("pg_") or schema in RESERVED_SCHEMAS:
        raise InvalidArgumentError(
            f"schema {schema!r} is PostgreSQL's own (names starting with 'pg_' and "
            "'information_schema' are refused): give the store a schema of its own, such "
            f"as {DEFAULT_SCHEMA!r}"
        )
    return schema


def channel_of(schema: str) -> str:
    """The NOTIFY channel of a (checked) schema."""
    return CHANNEL_PREFIX + schema


def in_schema(sql: str, schema: str) -> str:
    """``sql`` with ``{schema}`` replaced by the quoted name of a checked schema."""
    return sql.replace("{schema}", '"' + schema + '"')  # safe: see check_schema_name


def schema_queries(schema: str) -> dict[str, str]:
    """The named queries of ``stores/sql/postgres/queries.sql``, in ``schema``."""
    return {name: in_schema(sql, schema) for name, sql in queries("postgres").items()}

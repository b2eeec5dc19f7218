"""Loading of named queries and versioned migrations kept in ``.sql`` files.

``stores/sql/<dialect>/queries.sql`` holds named queries::

    -- name: claim_candidates
    SELECT ...;

``stores/sql/<dialect>/migrations/NNNN_description.sql`` are applied in order; the
number is the schema version a migration brings the database to.
"""

from __future__ import annotations

import itertools
import re
from functools import cache
from importlib import resources

import attrs

_NAME_LINE = re.compile(r"^--\s*name:\s*([a-z_][a-z0-9_]*)\s*$", re.MULTILINE)
_MIGRATION = re.compile(r"^(\d{4})_[a-z0-9_]+\.sql$")


@attrs.frozen
class Migration:
    version: int
    name: str
    sql: str


@cache
def queries(dialect: str) -> dict[str, str]:
    """Named queries of a dialect, as ``{name: sql}``.

    A name starting with ``_`` is a fragment, not a query: queries (and other
    fragments) include it where they say ``{_name}``, so that statements which must
    agree share one text.
    """
    text = resources.files(__package__).joinpath("sql", dialect, "queries.sql").read_text()
    return parse_queries(text, f"{dialect}/queries.sql")


_FRAGMENT_REF = re.compile(r"\{(_[a-z0-9_]+)\}")


def parse_queries(text: str, where: str) -> dict[str, str]:
    """The named queries in ``text`` with their fragments filled in."""
    parts = _NAME_LINE.split(text)
    found: dict[str, str] = {}
    for name, body in zip(parts[1::2], parts[2::2], strict=True):
        if name in found:
            raise RuntimeError(f"query {name!r} is defined twice in {where}")
        found[name] = body.strip().rstrip(";").strip()
    # A fragment's own leading comment lines describe it here, not in each query.
    fragments = {
        name: "\n".join(itertools.dropwhile(lambda line: line.startswith("--"), body.splitlines()))
        for name, body in found.items()
        if name.startswith("_")
    }

    def expand(body: str, inside: tuple[str, ...]) -> str:
        """``body`` with its fragments filled in, theirs too (``inside``: the
        fragments being filled, to refuse one that includes itself)."""

        def fill(match: re.Match[str]) -> str:
            name = match.group(1)
            fragment = fragments.get(name)
            if fragment is None:
                raise RuntimeError(f"unknown fragment {match.group(0)} in {where}")
            if name in inside:
                raise RuntimeError(f"fragment {match.group(0)} includes itself in {where}")
            return expand(fragment, (*inside, name))

        return _FRAGMENT_REF.sub(fill, body)

    return {name: expand(body, ()) for name, body in found.items() if not name.startswith("_")}


@cache
def migrations(dialect: str) -> tuple[Migration, ...]:
    """Migrations of a dialect in version order; versions must be 1, 2, 3..."""
    folder = resources.files(__package__).joinpath("sql", dialect, "migrations")
    found = []
    for entry in folder.iterdir():
        match = _MIGRATION.match(entry.name)
        if match:
            found.append(Migration(int(match.group(1)), entry.name, entry.read_text()))
    found.sort(key=lambda m: m.version)
    if [m.version for m in found] != list(range(1, len(found) + 1)):
        raise RuntimeError(f"{dialect} migrations are not numbered 1..n: {found}")
    return tuple(found)

"""The .sql loader: named queries, fragments shared between queries."""

from __future__ import annotations

import pytest

from trio_futurecalls.stores._sql import parse_queries, queries

TEXT = """
-- name: _pick
-- What both statements pick.
SELECT id FROM t WHERE due <= $1

-- name: take
DELETE FROM t WHERE id IN ({_pick});

-- name: peek
{_pick} LIMIT 1;
"""


def test_fragments_are_filled_in_and_not_queries_themselves() -> None:
    found = parse_queries(TEXT, "test")
    assert found == {
        "take": "DELETE FROM t WHERE id IN (SELECT id FROM t WHERE due <= $1)",
        "peek": "SELECT id FROM t WHERE due <= $1 LIMIT 1",
    }


def test_unknown_fragment_and_duplicate_names_are_errors() -> None:
    with pytest.raises(RuntimeError, match="unknown fragment"):
        parse_queries("-- name: q\nSELECT {_nope}", "test")
    with pytest.raises(RuntimeError, match="twice"):
        parse_queries("-- name: q\nSELECT 1\n-- name: q\nSELECT 2", "test")
    with pytest.raises(RuntimeError, match="includes itself"):
        parse_queries("-- name: _a\n{_b}\n-- name: _b\n{_a}\n-- name: q\nSELECT {_a}", "test")


def test_fragments_may_include_fragments() -> None:
    text = "-- name: _inner\n-- about inner\n1\n-- name: _outer\n{_inner} + {_inner}\n"
    assert parse_queries(text + "-- name: q\nSELECT {_outer}", "test") == {"q": "SELECT 1 + 1"}


def test_the_three_postgres_claims_pick_with_the_same_text() -> None:
    found = queries("postgres")
    # What each picks and answers is the same text: everything before its own
    # change ("taken AS" in the one-branch claims, "deleted AS" in the mixed one)...
    shared = found["claim_delete"].split(", taken AS (")[0].splitlines()[2:]
    assert "FOR UPDATE SKIP LOCKED" in "\n".join(shared)
    assert "upcoming AS" in "\n".join(shared)
    for name in ("claim", "claim_lease"):
        assert "\n".join(shared) in found[name]
    # ...and the result rows after it.
    result = found["claim_delete"].split("\n)\n", 1)[1].rsplit("UNION ALL", 1)[1]
    for name in ("claim", "claim_lease"):
        assert found[name].endswith(result)

    # The plain claims pick, take and look ahead with the same text as the full ones.
    def between(sql: str, start: str, end: str) -> str:
        return start + sql.split(start, 1)[1].split(end, 1)[0] + end

    picked = between(found["claim"], "picked AS (", "LIMIT $4::integer\n)")
    soonest = between(found["claim"], "(SELECT min(first.due_at)", ") AS first)")
    for kind in ("delete", "lease"):
        plain = found[f"claim_{kind}_plain"]
        assert picked in plain
        assert soonest in plain
        taken = between(found[f"claim_{kind}"], "taken AS (", "\n)\nSELECT")
        assert taken in plain
        assert "limits_stored" in plain
        assert "cluster_tokens" not in plain
    assert not any(name.startswith("_") for name in found)
    assert all("{_" not in sql for sql in found.values())

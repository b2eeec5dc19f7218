"""Cluster-wide limits on SQLite: their tokens, read and taken in the claim's transaction.

Every write transaction on the file is ``BEGIN IMMEDIATE``, so a claim that reads the
free tokens and takes them has no other claim, in any process, in between: the plan
(``stores/_cluster_tokens.py``, shared with the memory store) runs on what it read.
Rows another program wrote that are not limits or tokens (values of the wrong type
or out of range) are left out: a limit that cannot be read holds nothing back, a token
that cannot be read is not handed out.
"""

from __future__ import annotations

import json
import logging
import sqlite3
from collections.abc import Collection, Mapping, Sequence
from datetime import datetime
from typing import Any

from ..._cluster_limits import ALL_CLASSES, ClusterLimit
from .._cluster_tokens import Fit, Key, Token, fit, holding, take
from .._rows import cluster_limit_from_row
from ._connection import from_micros, to_micros

_log = logging.getLogger("trio_futurecalls.store.sqlite")


def limit_from_row(row: Sequence[Any]) -> ClusterLimit | None:
    try:
        if type(row[3]) not in (int, type(None)) or type(row[4]) is not int:
            raise TypeError("not integers")
        return cluster_limit_from_row(row, from_micros)
    except Exception as exc:  # a row another program wrote
        _log.error("a stored cluster limit is not one (left out): %r: %s", tuple(row), exc)
        return None


def _token(row: Sequence[Any]) -> Token | None:
    slot, call_id, owner, used_until = row
    if type(slot) is not int or type(call_id) not in (int, type(None)):
        return None
    if type(owner) not in (str, type(None)) or type(used_until) not in (int, type(None)):
        return None
    try:
        until = None if used_until is None else from_micros(used_until)
    except (OverflowError, ValueError):
        return None
    return Token(slot, call_id, owner, until)


def plan(
    q: Mapping[str, str],
    conn: sqlite3.Connection,
    slots: Mapping[str, int],
    limit: int,
    now: datetime,
    owner: str | None,
) -> tuple[Fit, dict[Key, ClusterLimit]] | None:
    """The claim's cut to the free tokens, or None when no limit applies."""
    rows = conn.execute(q["cluster_limits_of"], (json.dumps(list(slots)),)).fetchall()
    limits: dict[Key, ClusterLimit] = {}
    for row in rows:
        lim = limit_from_row(row)
        if lim is not None and (lim.name in slots or lim.name == ALL_CLASSES):
            limits[(lim.kind, lim.name)] = lim
    if not limits:
        return None
    tokens: dict[Key, list[Token]] = {}
    for key in limits:
        found = (_token(r) for r in conn.execute(q["cluster_tokens_of"], key).fetchall())
        tokens[key] = [t for t in found if t is not None]
    now_us = to_micros(now)
    expiries: dict[str, datetime | None] = {}

    def expiry(worker: str) -> datetime | None:
        if worker not in expiries:
            row = conn.execute(q["worker_expiry"], (worker, now_us)).fetchone()
            ok = row is not None and type(row[0]) is int
            expiries[worker] = from_micros(row[0]) if ok else None
        return expiries[worker]

    return fit(limits, tokens, slots, limit, now, owner, expiry), limits


def take_tokens(
    q: Mapping[str, str],
    conn: sqlite3.Connection,
    planned: tuple[Fit, dict[Key, ClusterLimit]],
    chosen: Sequence[tuple[int, str]],
    now: datetime,
    owner: str | None,
) -> frozenset[int]:
    """Take the tokens of the calls ``chosen``; return those holding concurrency ones."""
    cut, limits = planned
    taking = take(cut, limits, chosen, now)
    for t in taking:
        until = None if t.used_until is None else to_micros(t.used_until)
        call_id, holder = (None, None) if until is not None else (t.call_id, owner)
        conn.execute(q["take_token"], (*t.key, t.slot, call_id, holder, until))
    return holding(taking)


def set_limit(
    q: Mapping[str, str], conn: sqlite3.Connection, *, limit: ClusterLimit
) -> ClusterLimit | None:
    key = (limit.kind, limit.name)
    row = conn.execute(q["cluster_limit"], key).fetchone()
    previous = None if row is None else limit_from_row(row)
    conn.execute(
        q["set_cluster_limit"],
        (*key, limit.tokens, limit.per_us, to_micros(limit.set_at), limit.set_by),
    )
    conn.executemany(q["add_token"], ((*key, slot) for slot in range(limit.tokens)))
    conn.execute(q["drop_tokens_beyond"], (*key, limit.tokens))
    return previous


def remove_limit(q: Mapping[str, str], conn: sqlite3.Connection, *, key: Key) -> bool:
    gone = conn.execute(q["remove_cluster_limit"], key).rowcount
    conn.execute(q["remove_cluster_tokens"], key)
    return gone > 0


def limits(q: Mapping[str, str], conn: sqlite3.Connection) -> list[ClusterLimit]:
    found = (limit_from_row(row) for row in conn.execute(q["cluster_limits"]).fetchall())
    return [lim for lim in found if lim is not None]


def free(
    q: Mapping[str, str], conn: sqlite3.Connection, *, owner: str, call_ids: Collection[int]
) -> int:
    freed = conn.execute(q["free_tokens"], (owner, json.dumps(list(call_ids)))).rowcount
    if freed:
        conn.execute(q["drop_free_tokens_beyond_limits"])
    return int(freed)

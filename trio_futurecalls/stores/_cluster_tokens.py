"""The tokens of cluster-wide limits, planned for one claim (memory and SQLite stores).

A claim of calls under cluster-wide limits (``_cluster_limits.py``) takes, for each
call, one free token of every limit on it: the concurrency limit of its class and the
one on all classes (a token no call holds, or held by a worker that is dead), and its
class's rate limit (a token whose last start is a full window ago). These functions
are the plan, on a snapshot of the tokens the store read in the claim's transaction
(SQLite: the write transaction; memory: the store itself), so that both stores decide
alike; the PostgreSQL store does the same in its claim statement
(``_claim_quotas`` in queries.sql).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime

import attrs

from .._cluster_limits import ALL_CLASSES, ClusterLimit

#: (kind, name): a limit's key.
Key = tuple[str, str]
EVERYONE: Key = ("concurrency", ALL_CLASSES)


@attrs.frozen
class Token:
    """One token of a limit, as stored."""

    slot: int
    #: Concurrency: the call holding it and the holder's worker (None: free).
    call_id: int | None = None
    owner: str | None = None
    #: Rate: not free before this (None: never used).
    used_until: datetime | None = None


@attrs.frozen
class Fit:
    """What a claim may take under the cluster-wide limits."""

    #: Per name: its slots cut to its free tokens; names with none left out.
    slots: dict[str, int]
    #: The total cut to the free tokens of the limit on all classes.
    limit: int
    #: Free slot numbers of each limit that applies, lowest first.
    free: dict[Key, list[int]]
    #: When a limit that held calls back may free a token without a word from its
    #: holder (a rate window ends; a holder's worker would expire); None: no such time.
    wake: datetime | None


def keys_for(name: str) -> tuple[Key, Key]:
    return ("concurrency", name), ("rate", name)


def fit(
    limits: Mapping[Key, ClusterLimit],
    tokens: Mapping[Key, Sequence[Token]],
    slots: Mapping[str, int],
    limit: int,
    now: datetime,
    owner: str | None,
    expiry: Callable[[str], datetime | None],
) -> Fit:
    """Cut ``slots`` and ``limit`` to the free tokens of the limits on them.

    ``expiry(worker)`` is that worker's heartbeat expiry if it is alive at ``now``,
    else None. A concurrency token is taken only by a live ``owner`` (so that a dead
    worker's tokens are known free); without one, limited names get nothing.
    """
    alive = owner is not None and expiry(owner) is not None
    free: dict[Key, list[int]] = {}
    wakes: list[datetime] = []

    def free_of(key: Key) -> list[int]:
        found = free.get(key)
        if found is None:
            lim = limits[key]
            found = []
            busy = 0  # in every slot: one beyond a lowered limit counts until freed
            for token in tokens.get(key, ()):
                if key[0] == "rate":
                    is_free = token.used_until is None or token.used_until <= now
                else:
                    is_free = token.call_id is None or _dead(token.owner, expiry)
                busy += not is_free
                if is_free and token.slot < lim.tokens and (alive or key[0] == "rate"):
                    found.append(token.slot)
            found.sort()
            del found[max(0, lim.tokens - busy) :]
            free[key] = found
        return found

    def held_back(key: Key) -> None:
        per = limits[key].per
        if per is not None and free_of(key):
            # The tokens this claim takes free again a window from now.
            wakes.append(now + per)
        for token in tokens.get(key, ()):
            if token.slot >= limits[key].tokens:
                continue
            if key[0] == "rate":
                if token.used_until is not None and token.used_until > now:
                    wakes.append(token.used_until)
            elif token.owner is not None and (until := expiry(token.owner)) is not None:
                wakes.append(until)

    cut: dict[str, int] = {}
    for name, wanted in slots.items():
        quota = wanted
        for key in keys_for(name):
            if key in limits:
                room = len(free_of(key))
                if room < wanted:
                    held_back(key)
                quota = min(quota, room)
        if quota > 0:
            cut[name] = quota
    total = limit
    if EVERYONE in limits:
        room = len(free_of(EVERYONE))
        if room < sum(cut.values()) and room < limit:
            held_back(EVERYONE)
        total = min(limit, room)
        if total <= 0:
            cut = {}
    return Fit(cut, total, free, min(wakes, default=None))


@attrs.frozen
class Taking:
    """One token a claim takes: of limit ``key``, slot ``slot``, for call ``call_id``."""

    key: Key
    slot: int
    call_id: int
    #: Rate tokens: used until then; concurrency: None (held until freed).
    used_until: datetime | None


def take(
    plan: Fit,
    limits: Mapping[Key, ClusterLimit],
    chosen: Iterable[tuple[int, str]],
    now: datetime,
) -> list[Taking]:
    """The tokens the calls ``chosen`` (id, name; best first, within the cut slots and
    limit of ``plan``) take: the lowest free slots, in order."""
    used: dict[Key, int] = {}
    taking: list[Taking] = []
    for call_id, name in chosen:
        for key in (*keys_for(name), EVERYONE):
            if key not in limits:
                continue
            n = used.get(key, 0)
            used[key] = n + 1
            slot = plan.free[key][n]  # the cut slots guarantee one
            per = limits[key].per
            until = now + per if per is not None else None
            taking.append(Taking(key, slot, call_id, until))
    return taking


def holding(taking: Iterable[Taking]) -> frozenset[int]:
    """The calls that took a concurrency token (their end must free it)."""
    return frozenset(t.call_id for t in taking if t.key[0] == "concurrency")


def _dead(owner: str | None, expiry: Callable[[str], datetime | None]) -> bool:
    return owner is None or expiry(owner) is None

"""A scheduler's cluster-wide limits: recorded in the store when it starts.

The limits a scheduler's classes set (``cluster_max_concurrent``, ``rate_limit``) and
its own ``cluster_max_concurrent`` (all classes together) are written to the store
before its dispatcher claims anything, so that every worker on the store obeys them
from then on: the last value set wins, and a value that replaces another is logged.
A limit this scheduler does not set is left as stored (it still applies: removing
one is an explicit act, :meth:`Scheduler.remove_cluster_limit`). Until the store
answers, the scheduler retries with backoff and starts no call: a limit must not be
missed because the database was slow to come up.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from datetime import datetime

import trio

from ._call import FutureCall
from ._cluster_limits import ALL_CLASSES, ClusterLimit
from ._errors import StoreError
from ._store import Store

_log = logging.getLogger("trio_futurecalls.scheduler.cluster")

#: Longest pause between two attempts to record the limits.
MAX_BACKOFF = 30.0


def wanted_limits(
    classes: Mapping[str, type[FutureCall]],
    everyone: int | None,
    now: datetime,
    owner: str,
) -> list[ClusterLimit]:
    """The cluster-wide limits ``classes`` and the scheduler's option set."""
    limits = []
    if everyone is not None:
        limits.append(
            ClusterLimit(
                kind="concurrency", name=ALL_CLASSES, tokens=everyone, set_at=now, set_by=owner
            )
        )
    for name, cls in classes.items():
        if cls.cluster_max_concurrent is not None:
            limits.append(
                ClusterLimit(
                    kind="concurrency",
                    name=name,
                    tokens=cls.cluster_max_concurrent,
                    set_at=now,
                    set_by=owner,
                )
            )
        if cls.rate_limit is not None:
            rate = cls.rate_limit
            limits.append(
                ClusterLimit(
                    kind="rate",
                    name=name,
                    tokens=rate.count,
                    per=rate.per,
                    set_at=now,
                    set_by=owner,
                )
            )
    return limits


def describe(limit: ClusterLimit) -> str:
    what = "all classes" if limit.name == ALL_CLASSES else limit.name
    if limit.kind == "rate":
        return f"rate limit of {what}: {limit.tokens} per {limit.per}"
    return f"cluster-wide limit of {what}: {limit.tokens} at once"


async def publish(store: Store, wanted: Iterable[ClusterLimit]) -> None:
    """Record ``wanted`` in the store; log each stored value it replaces."""
    wanted = list(wanted)
    if not wanted:
        return
    stored = {(lim.kind, lim.name): lim for lim in await store.cluster_limits()}
    for limit in wanted:
        old = stored.get((limit.kind, limit.name))
        if old is not None and (old.tokens, old.per) == (limit.tokens, limit.per):
            continue
        if old is not None:
            _log.warning(
                "the %s was set to %s by %s at %s; this scheduler sets %s (the last "
                "value set wins: every worker on the store obeys it now)",
                describe(old),
                old.tokens if old.per is None else f"{old.tokens} per {old.per}",
                old.set_by or "someone",
                old.set_at.isoformat(),
                limit.tokens if limit.per is None else f"{limit.tokens} per {limit.per}",
            )
        await store.set_cluster_limit(limit)


async def publish_until_done(store: Store, wanted: list[ClusterLimit]) -> None:
    """:func:`publish`, tried again with backoff while the store fails."""
    pause = 0.05
    while True:
        try:
            await publish(store, wanted)
            return
        except StoreError as exc:
            _log.warning(
                "could not record the cluster-wide limits (trying again in %.2f s; no "
                "call starts until then): %s",
                pause,
                exc,
            )
            await trio.sleep(pause)
            pause = min(pause * 2, MAX_BACKOFF)

"""The memory store's cluster-wide limits: its process is the cluster.

Every scheduler on one :class:`MemoryStore` obeys the limits kept here, as workers on
one database obey the stored ones. The store calls :meth:`MemoryCluster.fit` and
:meth:`MemoryCluster.take` inside its (synchronous, so atomic) claim; the plan is
``_cluster_tokens.py``'s, shared with the SQLite store.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Mapping
from datetime import datetime

import attrs

from .._cluster_limits import ClusterLimit
from ._cluster_tokens import Fit, Key, Token, fit, holding, take


class MemoryCluster:
    """Limits and their tokens; ``expiry(worker)`` says until when a worker is alive."""

    def __init__(self, expiry: Callable[[str, datetime], datetime | None]) -> None:
        self._expiry = expiry
        self._limits: dict[Key, ClusterLimit] = {}
        self._tokens: dict[Key, list[Token]] = {}

    def __bool__(self) -> bool:
        """True when any limit is set (the claim's fast path skips the rest)."""
        return bool(self._limits)

    def set(self, limit: ClusterLimit) -> ClusterLimit | None:
        key = (limit.kind, limit.name)
        previous = self._limits.get(key)
        self._limits[key] = limit
        tokens = {t.slot: t for t in self._tokens.get(key, ())}
        self._tokens[key] = sorted(
            (
                tokens.get(slot, Token(slot))
                for slot in {*range(limit.tokens), *(s for s, t in tokens.items() if t.call_id)}
            ),
            key=lambda t: t.slot,
        )
        return previous

    def remove(self, key: Key) -> bool:
        self._tokens.pop(key, None)
        return self._limits.pop(key, None) is not None

    def limits(self) -> list[ClusterLimit]:
        return sorted(self._limits.values(), key=lambda lim: (lim.name, lim.kind))

    def fit(self, slots: Mapping[str, int], limit: int, now: datetime, owner: str | None) -> Fit:
        return fit(
            self._limits, self._tokens, slots, limit, now, owner, lambda w: self._expiry(w, now)
        )

    def take(
        self, plan: Fit, chosen: Iterable[tuple[int, str]], now: datetime, owner: str | None
    ) -> frozenset[int]:
        taking = take(plan, self._limits, chosen, now)
        for t in taking:
            tokens = self._tokens[t.key]
            i = next(i for i, token in enumerate(tokens) if token.slot == t.slot)
            if t.used_until is not None:
                tokens[i] = Token(t.slot, used_until=t.used_until)
            else:
                tokens[i] = Token(t.slot, call_id=t.call_id, owner=owner)
        return holding(taking)

    def free(self, owner: str | None, call_ids: Collection[int] | None = None) -> int:
        """Free the concurrency tokens ``owner`` holds for ``call_ids`` (all of its
        tokens when None); return how many."""
        freed = 0
        for key, tokens in self._tokens.items():
            for i, token in enumerate(tokens):
                if token.owner == owner and (call_ids is None or token.call_id in call_ids):
                    tokens[i] = attrs.evolve(token, call_id=None, owner=None)
                    freed += 1
            limit = self._limits.get(key)
            if limit is not None:  # tokens beyond a lowered limit go once free
                tokens[:] = [t for t in tokens if t.slot < limit.tokens or t.call_id]
        return freed

"""What is left of a claim's slots once it took its calls (shared by the stores)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime

from .._model import Lease


def free_after_claim(slots: Mapping[str, int], limit: int, claimed: Iterable[str]) -> list[str]:
    """Names that still have a free slot once calls of the names ``claimed`` (one entry
    per call) were taken, or none once the total ``limit`` is used up: the names whose
    rows :attr:`Claim.next_due` looks at."""
    taken: dict[str, int] = {}
    for name in claimed:
        taken[name] = taken.get(name, 0) + 1
    if sum(taken.values()) >= limit:
        return []
    return [name for name, free in slots.items() if free - taken.get(name, 0) > 0]


def until_next(
    next_due: datetime | None, lease: Lease | None, claimed: Iterable[str]
) -> datetime | None:
    """:attr:`Claim.next_due`: the earliest of ``next_due`` (found among the rows the
    claim did not take) and, if the claim leased any row, that lease's expiry: the
    lease keeper renews it, but if the lease is lost the row is due again then, and
    the dispatcher must look."""
    if lease is not None and any(name in lease.names for name in claimed):
        return lease.expires_at if next_due is None else min(next_due, lease.expires_at)
    return next_due

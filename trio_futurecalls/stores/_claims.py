"""What is left of a claim's slots once it took its calls (shared by the stores)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping


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

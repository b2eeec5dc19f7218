"""Dependencies between calls, shared by the stores: the reasons dependents get when a
prerequisite does not succeed, and the walk that finds them all (transitively).

The model every store keeps (see ``Store.schedule`` and ``Store.prerequisite_ended``):

* an edge (prerequisite, dependent) per unmet prerequisite; a dependent's row counts
  its edges (``waiting``) and is not claimable while it has any;
* a prerequisite row knows it has dependents (``dependents``); an at-most-once claim
  of such a row, which deletes it, records it as started instead, so that the store
  still knows it while it runs and its end can be told (``prerequisite_ended``);
* success removes the prerequisite's edges (the last one makes a dependent due);
  anything else that ends a prerequisite for good (dead letter, cancel, an
  at-most-once run that will not run again) moves its dependents to dead letters,
  and theirs, with the reason.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Final

#: Longest reason kept with a dependent's dead letter (nested reasons are cut).
MAX_REASON_LENGTH: Final = 2000


def summary(error: str) -> str:
    """The last non-blank line of ``error`` (a traceback's exception line)."""
    lines = [line for line in error.strip().splitlines() if line.strip()]
    return lines[-1].strip() if lines else "(no reason given)"


def failed_reason(prerequisite_id: int, error: str) -> str:
    """What a dependent's dead letter says when ``prerequisite_id`` ended for good
    with ``error`` (a dead letter's reason, or why it was cancelled)."""
    reason = f"prerequisite {prerequisite_id} failed: {summary(error)}"
    return reason[:MAX_REASON_LENGTH]


def did_not_run_reason(prerequisite_id: int, its_reason: str) -> str:
    """What a dependent of a dependent says: its prerequisite never ran. Too long (a
    deep chain), the middle goes: the nearest step and the root cause (at the end)
    stay."""
    head = f"prerequisite {prerequisite_id} did not run: "
    if len(head) + len(its_reason) <= MAX_REASON_LENGTH:
        return head + its_reason
    return head + "... " + its_reason[len(head) + len(its_reason) + 4 - MAX_REASON_LENGTH :]


CANCELLED: Final = "it was cancelled"
#: Why the dependents of an at-most-once prerequisite whose record expired end.
ABANDONED: Final = (
    "its worker stopped while it ran (at-most-once: it is not run again, and whether "
    "it succeeded is not known)"
)


def dependent_reasons(
    roots: Mapping[int, str], dependents_of: Callable[[int], Iterable[int]]
) -> dict[int, str]:
    """Every dependent of the ``roots`` (prerequisite id -> its error), transitively,
    with the reason its dead letter gets, nearest first (a dependent reached by
    several paths keeps the first reason found)."""
    reasons: dict[int, str] = {}
    frontier = [(root, failed_reason(root, error), True) for root, error in roots.items()]
    while frontier:
        later = []
        for prerequisite, reason, is_root in frontier:
            for dependent in dependents_of(prerequisite):
                if dependent in reasons or dependent in roots:
                    continue
                own = reason if is_root else did_not_run_reason(prerequisite, reason)
                reasons[dependent] = own
                later.append((dependent, own, False))
        frontier = later
    return reasons

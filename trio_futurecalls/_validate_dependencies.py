"""Checks of the dependency arguments: ``after=`` ids, and links inside a batch."""

from __future__ import annotations

from collections.abc import Sequence
from collections.abc import Set as AbstractSet
from typing import Final

from ._errors import InvalidArgumentError
from ._validate import check_id

#: Most prerequisites one call may name (a fan-in of more is better built in layers).
MAX_PREREQUISITES: Final = 1000


def check_after(after: object, what: str = "after") -> tuple[int, ...]:
    """Ids of prerequisites: a collection of call ids (not a str, not a single int),
    each checked by check_id; repeats are dropped (first kept), order otherwise kept."""
    if after is None:
        return ()
    if isinstance(after, str | bytes | bytearray | memoryview) or not isinstance(
        after, Sequence | AbstractSet
    ):
        raise InvalidArgumentError(
            f"{what} must be a list, tuple or set of call ids (not an iterator), "
            f"got {type(after).__name__}"
        )
    ids = tuple(dict.fromkeys(check_id(value, f"each id in {what}") for value in after))
    if len(ids) > MAX_PREREQUISITES:
        raise InvalidArgumentError(
            f"{what} names {len(ids)} calls; at most {MAX_PREREQUISITES} are allowed"
        )
    return ids


def check_after_batch(after_batch: object, position: int) -> tuple[int, ...]:
    """Positions of earlier calls of the same batch (0 <= p < ``position``)."""
    if not isinstance(after_batch, tuple):
        raise InvalidArgumentError(
            f"after_batch must be a tuple of positions, got {type(after_batch).__name__}"
        )
    for p in after_batch:
        if isinstance(p, bool) or not isinstance(p, int) or not 0 <= p < position:
            raise InvalidArgumentError(
                f"after_batch of call {position} of the batch must name earlier calls "
                f"(0 to {position - 1}), got {p!r}"
            )
    if len(set(after_batch)) != len(after_batch):
        raise InvalidArgumentError(f"after_batch of call {position} names a call twice")
    return after_batch


def check_no_key_with_after(unique_key: str | None) -> None:
    """A call that waits for others, or is in a batch with such calls, has no unique
    key (not supported yet)."""
    if unique_key is not None:
        raise InvalidArgumentError(
            "unique keys and dependencies (after=, chain) cannot be used together in one "
            "batch; not supported yet"
        )

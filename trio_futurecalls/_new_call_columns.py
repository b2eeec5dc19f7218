"""A batch of plain new calls kept as columns: ``schedule_many``'s common batch.

A plain call has no unique key, no prerequisites, no attempts and is no run of a
recurring schedule (only a name, a payload, a due time, an identifier and a priority).
``schedule_many`` builds such a batch column by column, from arguments it checked,
without a :class:`CheckedNewCall` per row: a frozen attrs instance costs more to build
than the rest of a row's checks. A store that knows this type reads the columns (the
PostgreSQL store passes them as its statement's arrays). To any other code it is a
sequence of :class:`CheckedNewCall`, built once, on first use.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from datetime import datetime
from typing import final, overload

from ._model import CheckedNewCall, NewCall


@final
class NewCallColumns(Sequence[NewCall]):
    """Plain new calls, checked, scheduled at ``scheduled_at`` (one time for the batch),
    as equally long tuples: row ``k`` is ``names[k]``, ``payloads[k]`` (JSON text),
    ``due_ats[k]``, ``identifiers[k]`` and ``priorities[k]``. Immutable."""

    __slots__ = (
        "_calls",
        "due_ats",
        "identifiers",
        "names",
        "payloads",
        "priorities",
        "scheduled_at",
    )

    names: tuple[str, ...]
    payloads: tuple[str, ...]
    due_ats: tuple[datetime, ...]
    identifiers: tuple[str | None, ...]
    priorities: tuple[int, ...]
    scheduled_at: datetime
    _calls: tuple[CheckedNewCall, ...] | None

    def __init__(
        self,
        names: Sequence[str],
        payloads: Sequence[str],
        due_ats: Sequence[datetime],
        identifiers: Sequence[str | None],
        priorities: Sequence[int],
        scheduled_at: datetime,
    ) -> None:
        """Columns of values already checked (only the library builds these), by
        keyword or in this order (``new_calls`` and ``__reduce__``)."""
        n = len(names)
        if not len(payloads) == len(due_ats) == len(identifiers) == len(priorities) == n:
            raise ValueError("the columns of a NewCallColumns must be equally long")
        set_ = object.__setattr__
        set_(self, "names", tuple(names))
        set_(self, "payloads", tuple(payloads))
        set_(self, "due_ats", tuple(due_ats))
        set_(self, "identifiers", tuple(identifiers))
        set_(self, "priorities", tuple(priorities))
        set_(self, "scheduled_at", scheduled_at)
        set_(self, "_calls", None)

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"NewCallColumns is immutable (cannot set {name})")

    def __delattr__(self, name: str) -> None:
        raise AttributeError(f"NewCallColumns is immutable (cannot delete {name})")

    def __reduce__(self) -> tuple[object, tuple[object, ...]]:
        """Copied, deep-copied and pickled as its columns (as a list of calls could be:
        the default would set the slots one by one, which ``__setattr__`` refuses)."""
        return NewCallColumns, (
            self.names,
            self.payloads,
            self.due_ats,
            self.identifiers,
            self.priorities,
            self.scheduled_at,
        )

    def earliest(self) -> datetime:
        """The earliest due time of the batch (not empty)."""
        return min(self.due_ats)

    def _rows(self) -> tuple[CheckedNewCall, ...]:
        calls = self._calls
        if calls is None:
            scheduled_at = self.scheduled_at
            calls = tuple(
                CheckedNewCall(
                    name=name,
                    payload=payload,
                    due_at=due_at,
                    identifier=identifier,
                    scheduled_at=scheduled_at,
                    priority=priority,
                )
                for name, payload, due_at, identifier, priority in zip(
                    self.names,
                    self.payloads,
                    self.due_ats,
                    self.identifiers,
                    self.priorities,
                    strict=True,
                )
            )
            object.__setattr__(self, "_calls", calls)
        return calls

    def __len__(self) -> int:
        return len(self.names)

    @overload
    def __getitem__(self, index: int) -> NewCall: ...

    @overload
    def __getitem__(self, index: slice) -> Sequence[NewCall]: ...

    def __getitem__(self, index: int | slice) -> NewCall | Sequence[NewCall]:
        return self._rows()[index]

    def __iter__(self) -> Iterator[NewCall]:
        return iter(self._rows())

    def __eq__(self, other: object) -> bool:
        """Equal to another batch (of either kind) of the same calls in the same order."""
        if isinstance(other, NewCallColumns):
            return (
                self.names == other.names
                and self.payloads == other.payloads
                and self.due_ats == other.due_ats
                and self.identifiers == other.identifiers
                and self.priorities == other.priorities
                and self.scheduled_at == other.scheduled_at
            )
        if isinstance(other, list | tuple):
            return list(self) == list(other)
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"NewCallColumns({list(self)!r})"

"""Unique keys within one batch: repeats of a (name, key) merged into one request.

A store that writes a whole batch in one statement cannot let two rows of it fight
over one key (PostgreSQL's ``ON CONFLICT DO UPDATE`` refuses to touch a row twice).
Within a batch a later request conflicts with the earlier one exactly as with a
pending call, so the repeats fold into the first request, in order: a later
"replace" brings its payload, due time and identifier (and makes the merged request
replace a pending holder too, unless the first said "error"); a later "ignore"
changes nothing. A later "error" never gets here (``StoreArgs.schedule`` refused the
batch). Every repeat gets the merged request's id.
"""

from __future__ import annotations

from collections.abc import Sequence

import attrs

from .._model import NewCall


def merge_repeated_keys(calls: Sequence[NewCall]) -> tuple[list[NewCall], list[int]]:
    """The requests to write (each (name, key) once) and, for each call of ``calls``,
    the position of the request that answers it."""
    merged: list[NewCall] = []
    answer: list[int] = []
    first: dict[tuple[str, str], int] = {}
    for call in calls:
        if call.unique_key is None:
            answer.append(len(merged))
            merged.append(call)
            continue
        key = (call.name, call.unique_key)
        position = first.get(key)
        if position is None:
            first[key] = len(merged)
            answer.append(len(merged))
            merged.append(call)
            continue
        answer.append(position)
        if call.on_conflict == "replace":
            earlier = merged[position]
            merged[position] = attrs.evolve(
                earlier,
                payload=call.payload,
                due_at=call.due_at,
                identifier=call.identifier,
                on_conflict="error" if earlier.on_conflict == "error" else "replace",
            )
    return merged, answer

"""Review of NewCallColumns: schedule_many's plain batch is still a plain value to the
code that receives it (a Store of one's own may copy, deep-copy or pickle the batch
it is handed, as it could the list it received before), and cannot be changed by
deleting its columns either."""

from __future__ import annotations

import copy
import pickle
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from trio_futurecalls._admin import check_target, new_calls
from trio_futurecalls._new_call_columns import NewCallColumns
from trio_futurecalls._store_args import StoreArgs

NOW = datetime(2030, 1, 1, tzinfo=UTC)

PLAIN: list[Any] = [
    ("job", {"a": [1, 2]}, 0),
    ("job", None, timedelta(minutes=5), "id-1"),
    ("other", "x", NOW + timedelta(days=2), None),
]


def plain_batch() -> NewCallColumns:
    batch = new_calls(PLAIN, NOW, check_target)
    assert type(batch) is NewCallColumns
    return batch


@pytest.mark.parametrize("materialized", [False, True])
@pytest.mark.parametrize(
    "duplicate",
    [copy.copy, copy.deepcopy, lambda batch: pickle.loads(pickle.dumps(batch))],
    ids=["copy", "deepcopy", "pickle"],
)
def test_a_batch_kept_as_columns_copies_and_pickles_as_the_list_did(
    duplicate: Any, materialized: bool
) -> None:
    batch = plain_batch()
    expected = list(batch) if materialized else None
    twin = duplicate(batch)
    assert type(twin) is NewCallColumns
    assert twin == batch
    assert list(twin) == list(batch)
    assert twin.names == batch.names
    assert twin.scheduled_at == batch.scheduled_at
    if expected is not None:
        assert list(twin) == expected
    # Still a batch the stores take as it is.
    assert StoreArgs.schedule(twin) is twin


@pytest.mark.parametrize("column", ["names", "payloads", "due_ats", "scheduled_at", "_calls"])
def test_the_columns_cannot_be_deleted(column: str) -> None:
    batch = plain_batch()
    with pytest.raises(AttributeError, match="immutable"):
        delattr(batch, column)
    assert len(list(batch)) == 3
    assert batch.names == ("job", "job", "other")

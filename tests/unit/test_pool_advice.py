"""Pool-size advice for the PostgreSQL store: never more than the server has room for."""

from __future__ import annotations

import pytest

from trio_futurecalls.stores.postgres import recommended_pool_size
from trio_futurecalls.stores.postgres._pool import ServerRoom, pool_size_advice

#: max_connections=100, 3 reserved, 12 taken by other clients: 85 for the store.
SHARED = ServerRoom(max_connections=100, reserved=3, others=12)


def test_server_room() -> None:
    assert SHARED.free == 85
    assert ServerRoom(max_connections=10, reserved=3, others=20).free == 0
    assert "max_connections=100, 3 reserved, 12 used by other clients" in SHARED.describe()


def test_recommended_pool_size_never_exceeds_the_servers_room() -> None:
    assert recommended_pool_size(10) == 12
    assert recommended_pool_size(500) == 502
    assert recommended_pool_size(500, server_room=85) == 84  # and the LISTEN connection
    assert recommended_pool_size(10, server_room=85) == 12
    assert recommended_pool_size(None, server_room=85) == 3
    assert recommended_pool_size(10, server_room=1) == 1


@pytest.mark.parametrize(
    ("pool", "limit", "room", "expected"),
    [
        (12, 10, None, None),
        (12, 10, SHARED, None),
        (84, 82, SHARED, None),
        (11, 10, None, "max_pool_size=11 is too small for max_concurrent=10"),
        (11, 10, SHARED, "use max_pool_size >= 12 (max_concurrent + 2)"),
        # The storm: the README's rule for 500 calls on a server that takes 100.
        (502, 500, SHARED, "use max_concurrent <= 82 with max_pool_size=84"),
        (85, 83, SHARED, "use max_concurrent <= 82 with max_pool_size=84"),
        (200, 10, SHARED, "max_pool_size=200 is more than the server can give"),
        (200, 10, SHARED, "use max_pool_size=84 (max_concurrent=10 needs 12)"),
        (12, None, None, "unlimited global concurrency"),
        (12, None, SHARED, "max_concurrent <= 82"),
        (12, 1, ServerRoom(max_connections=20, reserved=3, others=15), "not enough"),
    ],
)
def test_pool_size_advice(
    pool: int, limit: int | None, room: ServerRoom | None, expected: str | None
) -> None:
    advice = pool_size_advice(pool, limit, room)
    if expected is None:
        assert advice is None
    else:
        assert advice is not None
        assert expected in advice

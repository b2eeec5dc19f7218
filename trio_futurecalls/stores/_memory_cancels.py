"""The memory store's cancel requests and acks (``Store.request_cancel``).

The memory store treats its process as the cluster: a request is kept here as it
would be in a database's ``cancel_requests`` table, and the schedulers on the store
(each with its cancel watcher, ``_cancels.py``) read and ack it.
"""

from __future__ import annotations

import itertools
from datetime import datetime

from .._cancel_model import CancelRequest, check_request, readable_requests


class MemoryCancels:
    """Requests by id, and each one's acks (worker id -> found)."""

    def __init__(self) -> None:
        self.requests: dict[int, CancelRequest] = {}
        self.acks: dict[int, dict[str, int]] = {}
        self._ids = itertools.count(1)

    def add(
        self, call_id: int | None, identifier: str | None, now: datetime, expires_at: datetime
    ) -> CancelRequest:
        request = CancelRequest(
            id=next(self._ids),
            call_id=call_id,
            identifier=identifier,
            requested_at=now,
            expires_at=expires_at,
        )
        self.requests[request.id] = request
        self.acks[request.id] = {}
        return request

    def live(self, now: datetime) -> list[CancelRequest]:
        """The requests not expired by ``now``, by id; expired (and unreadable) ones go."""
        found = readable_requests(self.requests.items(), _checked, lambda item: repr(item[0]))
        alive = {r.id: r for r in found if r.expires_at > now}
        for request_id in [i for i in self.requests if i not in alive]:
            del self.requests[request_id]
            self.acks.pop(request_id, None)
        return sorted(alive.values(), key=lambda r: r.id)

    def ack(self, request_id: int, worker_id: str, found: int) -> None:
        if request_id in self.requests:
            self.acks.setdefault(request_id, {})[worker_id] = found

    def acks_of(self, request_id: int) -> dict[str, int]:
        return dict(self.acks.get(request_id, {}))


def _checked(item: tuple[int, CancelRequest]) -> CancelRequest:
    key, r = item
    checked = check_request(r.id, r.call_id, r.identifier, r.requested_at, r.expires_at)
    if checked.id != key:
        raise ValueError(f"the request {key!r} holds the id {checked.id!r}")
    return checked

"""Plain values exchanged between the engine and the stores."""

from __future__ import annotations

from datetime import datetime
from typing import Literal, TypeAlias, final

import attrs

#: What ``schedule`` does when a call with the same name and unique key is pending:
#: keep it and return its id ("ignore"), replace its payload, due time and identifier
#: ("replace"), or raise :class:`DuplicateCallError` ("error").
OnConflict: TypeAlias = Literal["ignore", "replace", "error"]


@attrs.frozen(kw_only=True)
class NewCall:
    """A call about to be stored: validated, payload already encoded as JSON text."""

    name: str
    payload: str
    due_at: datetime
    identifier: str | None = None
    scheduled_at: datetime
    #: Attempts already made (a retry of an at-most-once call is stored anew with these).
    attempts: int = 0
    #: At most one pending call per ``(name, unique_key)`` in a store (None: no key).
    unique_key: str | None = None
    #: What to do when a call with this name and key is pending already.
    on_conflict: OnConflict = "ignore"


@final
@attrs.frozen(kw_only=True)
class CheckedNewCall(NewCall):
    """A :class:`NewCall` the library built from arguments it checked (``schedule``,
    ``schedule_many``, ``schedule_call``): a store need not check it again. Frozen, so
    it cannot change after its checks; build a plain ``NewCall`` by hand."""


@attrs.frozen(kw_only=True)
class StoredCall:
    """A call as kept in a store (pending) or as handed back by a claim."""

    id: int
    name: str
    payload: str
    due_at: datetime
    identifier: str | None
    scheduled_at: datetime
    #: Attempts started so far; in a claimed call this includes the one starting now.
    attempts: int = 0
    #: The unique key a pending call holds; None once claimed (a claim frees the key:
    #: a claimed, retried or handed-back call has none).
    unique_key: str | None = None


@attrs.frozen(kw_only=True)
class Lease:
    """How a claim leases rows instead of deleting them (at-least-once delivery)."""

    #: Unique per scheduler; only the owner may renew, complete or release the row.
    owner: str
    #: Until when the rows are leased; afterwards any worker may claim them again.
    expires_at: datetime
    #: Names whose rows are leased; rows of other names are deleted as they are claimed.
    names: frozenset[str]


@attrs.frozen
class Claim:
    """What :meth:`Store.claim` hands back, in one round trip."""

    #: The calls taken, earliest due first; each now belongs to the claimer.
    calls: list[StoredCall]
    #: After the claim: the earliest due time among pending calls of the names that
    #: still have free slots (None when there is none, or no slot is left at all).
    next_due: datetime | None


@attrs.frozen(kw_only=True)
class DeadLetter:
    """A call that could not run and was kept, with the reason, instead of being dropped."""

    id: int
    call_id: int
    name: str
    payload: str
    due_at: datetime
    identifier: str | None
    scheduled_at: datetime
    failed_at: datetime
    error: str
    attempts: int


@attrs.frozen(kw_only=True)
class CallInfo:
    """What a running call knows about itself (``FutureCall.info``)."""

    id: int
    name: str
    identifier: str | None
    due_at: datetime
    scheduled_at: datetime
    started_at: datetime
    attempt: int = 1

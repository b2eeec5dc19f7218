"""Plain values exchanged between the engine and the stores."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal, TypeAlias, final

import attrs

#: What ``schedule`` does when a call with the same name and unique key is pending:
#: keep it and return its id ("ignore"), replace its payload, due time, identifier and
#: priority ("replace"), or raise :class:`DuplicateCallError` ("error").
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
    #: A run of a recurring schedule: the schedule's key and the tick it runs for.
    recurring_key: str | None = None
    tick_at: datetime | None = None
    #: At most one pending call per ``(name, unique_key)`` in a store (None: no key).
    unique_key: str | None = None
    #: What to do when a call with this name and key is pending already.
    on_conflict: OnConflict = "ignore"
    #: Among due calls with free slots, higher priority starts first (then earlier
    #: due time, then lower id); from MIN_PRIORITY to MAX_PRIORITY.
    priority: int = 0
    #: Ids of calls (pending, or running where the store can see it) that must succeed
    #: before this one may start; see ``Store.schedule``.
    after: tuple[int, ...] = ()
    #: Positions of earlier calls of the same ``Store.schedule`` batch that must
    #: succeed first (``Scheduler.chain`` links its steps with these).
    after_batch: tuple[int, ...] = ()


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
    #: A run of a recurring schedule: the schedule's key and the tick it runs for.
    recurring_key: str | None = None
    tick_at: datetime | None = None
    #: The unique key a pending call holds; None once claimed (a claim frees the key:
    #: a claimed, retried or handed-back call has none).
    unique_key: str | None = None
    #: Its priority (see :attr:`NewCall.priority`); kept through retries and hand-backs.
    priority: int = 0
    #: Other calls wait for this one to succeed (as claimed: an at-most-once call with
    #: dependents tells the store when it succeeded, ``Store.prerequisites_succeeded``).
    dependents: bool = False
    #: In ``Store.pending``: the prerequisites this call still waits for (it is not
    #: due before they have all succeeded, whatever its due time).
    waiting_for: tuple[int, ...] = ()


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

    #: The calls taken, in the order they should start: highest priority first, then
    #: earliest due, then lowest id; each now belongs to the claimer.
    calls: list[StoredCall]
    #: After the claim: the earliest due time among pending calls of the names that
    #: still have free slots (None when there is none, or no slot is left at all).
    next_due: datetime | None
    #: Ids of the calls that took a token of a cluster-wide concurrency limit (see
    #: :meth:`Store.claim`): their end must give it back (:meth:`Store.free_tokens`).
    holding: frozenset[int] = frozenset()


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
    #: For a run of a recurring schedule: the schedule's key and the tick it runs for
    #: (a run that stands for several missed ticks carries the latest).
    recurring_key: str | None = None
    tick_at: datetime | None = None


@attrs.frozen(kw_only=True)
class RecurringInfo:
    """A recurring schedule as stored: what runs, when, and what happened so far.

    Exactly one of :attr:`cron` and :attr:`every` is set. Times are aware UTC.
    """

    #: The schedule's unique name (``schedule_recurring(key=...)``).
    key: str
    #: The ``FutureCall`` name each run calls, and its payload as JSON text.
    name: str
    payload: str
    identifier: str | None = None
    #: A cron expression (five fields, or six with seconds first), read in ``timezone``.
    cron: str | None = None
    #: Seconds between ticks.
    every: float | None = None
    #: The IANA time zone cron fields follow (``every`` ignores it).
    timezone: str = "UTC"
    #: Optional bounds: no tick before ``start`` or after ``end``.
    start: datetime | None = None
    end: datetime | None = None
    #: What happens to ticks missed while no worker ran: "once", "skip" or "all".
    misfire: str = "once"
    #: "allow", or "skip": no new run while the previous run's row is in the store.
    overlap: str = "allow"
    #: The first tick of an ``every`` schedule (``start``, or one interval after it
    #: was registered); ticks fall on it plus whole intervals.
    anchor: datetime
    #: The next tick to run; None once ``end`` is passed (the schedule is finished).
    next_tick: datetime | None
    #: The tick of the latest run created, and that run's call id.
    last_tick: datetime | None = None
    last_call_id: int | None = None
    #: Runs created; ticks not run because of ``overlap="skip"``; ticks not run (or
    #: folded into one run) because of ``misfire``.
    runs: int = 0
    skipped_overlap: int = 0
    skipped_misfire: int = 0
    created_at: datetime
    updated_at: datetime

    @property
    def expression(self) -> str:
        """The schedule in words: the cron expression, or ``every N s``."""
        if self.cron is not None:
            return self.cron
        return f"every {self.every:g} s"


@attrs.frozen
class RecurringFire:
    """What :meth:`Store.fire_recurring` hands back."""

    #: Runs created by this fire (calls stored), in all schedules.
    runs: int
    #: The earliest next tick among all schedules after the fire (None: none left).
    next_tick: datetime | None
    #: True when a due schedule was skipped because another worker is firing it
    #: right now: look again shortly, in case that worker dies mid-way.
    contended: bool = False


@final
@attrs.frozen(kw_only=True)
class WorkerInfo:
    """A worker (a scheduler that executes calls) as registered in its store.

    Each such scheduler registers itself as it starts, renews its row with a heartbeat
    every ``worker_timeout / 3`` and deletes it as it shuts down. A worker not heard
    from by :attr:`expires_at` is dead: its row is no longer listed (and is deleted by
    the next heartbeat of any worker), and its cluster concurrency tokens are free.
    Times are aware UTC.
    """

    #: The scheduler's owner string (``host:pid:random``), the one its leases carry.
    id: str
    #: ``socket.gethostname()`` of its process, and its process id.
    host: str
    pid: int
    #: When the scheduler started (kept when it registers again after a lapse).
    started_at: datetime
    #: Its last successful heartbeat (or registration), and when its row expires
    #: unless renewed.
    heartbeat_at: datetime
    expires_at: datetime
    #: Calls it was running at its last heartbeat.
    running: int = 0
    #: Its limits, a JSON object: ``{"max_concurrent": int | None, "classes": {name:
    #: {"max_concurrent": int | None, "delivery": "at_most_once" | "at_least_once"}}}``;
    #: an adaptive limit (global or a class's) adds ``"adaptive": {"min": int, "max":
    #: int}``, and its ``max_concurrent`` is that ``max``.
    limits: dict[str, Any] = attrs.field(factory=dict)

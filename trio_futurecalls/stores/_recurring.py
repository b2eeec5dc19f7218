"""What every store does the same way with recurring schedules, in their transactions.

A store keeps schedules in its own table and locks them its own way; what to store
when a schedule is registered again (:func:`merge_registration`) and which runs a
fire creates (:func:`plan_runs`, :func:`after_fire`) is decided here, once.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import datetime

import attrs

from .._model import NewCall, RecurringInfo
from .._recurrence import Plan, plan_fire
from .._validate import MAX_ID, check_identifier, check_name, check_payload_text

_log = logging.getLogger("trio_futurecalls.store.recurring")

#: What a schedule does when it runs (changing it keeps the schedule's next tick).
_WHAT = ("name", "payload", "identifier", "misfire", "overlap")
#: When it runs (changing it starts the schedule's ticks afresh).
_WHEN = ("cron", "every", "timezone", "start", "end")


def merge_registration(
    existing: RecurringInfo | None, new: RecurringInfo, replace: bool
) -> RecurringInfo | None:
    """The schedule to store when ``new`` is registered over ``existing``; None when
    nothing changes (same definition, or ``replace`` is False).

    Registering the same definition again changes nothing, so every worker can
    register its schedules at start-up. A changed definition keeps the counters and
    the last run; a changed timing also takes ``new``'s anchor and next tick.
    """
    if existing is None:
        return new
    if not replace:
        return None
    same_what = all(getattr(existing, f) == getattr(new, f) for f in _WHAT)
    same_when = all(getattr(existing, f) == getattr(new, f) for f in _WHEN)
    # A schedule that was stopped (no next tick) although its definition still has
    # ticks to come (a worker could not plan it: no tzdata, say) is repaired by
    # registering it again.
    stopped = existing.next_tick is None and new.next_tick is not None
    if same_what and same_when and not stopped:
        return None
    changes = {f: getattr(new, f) for f in _WHAT + _WHEN}
    if not same_when or stopped:
        changes.update(anchor=new.anchor, next_tick=new.next_tick)
    return attrs.evolve(existing, updated_at=new.updated_at, **changes)


def plan_runs(
    info: RecurringInfo, now: datetime, previous_active: bool
) -> tuple[Plan, list[NewCall]]:
    """The plan of one fire of ``info`` and the calls it stores.

    A schedule that cannot be planned (a row another tool wrote: an unknown time
    zone, a cron expression or name the library does not accept) is logged and
    stopped (no next tick), never a failed fire for the other schedules.
    """
    try:
        check_name(info.name)
        check_payload_text(info.payload)
        check_identifier(info.identifier)
        plan = plan_fire(info, now, previous_active)
    except Exception as exc:
        _log.error(
            "recurring schedule %r cannot run and is stopped (no next tick): %s; "
            "register it again to repair it",
            info.key,
            exc,
        )
        return Plan([], None), []
    calls = [
        NewCall(
            name=info.name,
            payload=info.payload,
            due_at=tick,
            identifier=info.identifier,
            scheduled_at=now,
            recurring_key=info.key,
            tick_at=tick,
        )
        for tick in plan.runs
    ]
    return plan, calls


def after_fire(info: RecurringInfo, plan: Plan, ids: Sequence[int]) -> RecurringInfo:
    """``info`` once the runs of ``plan`` are stored under ``ids``."""
    if plan.skipped_misfire:
        _log.info(
            "recurring schedule %r: %d missed tick(s) not run (misfire=%r)",
            info.key,
            plan.skipped_misfire,
            info.misfire,
        )
    if plan.skipped_overlap:
        _log.info(
            "recurring schedule %r: %d tick(s) skipped, its previous run is not done "
            "(overlap='skip')",
            info.key,
            plan.skipped_overlap,
        )
    return attrs.evolve(
        info,
        next_tick=plan.next_tick,
        last_tick=plan.runs[-1] if plan.runs else info.last_tick,
        last_call_id=ids[-1] if ids else info.last_call_id,
        # Counters saturate (a row another tool wrote may hold the largest value).
        runs=min(info.runs + len(ids), MAX_ID),
        skipped_misfire=min(info.skipped_misfire + plan.skipped_misfire, MAX_ID),
        skipped_overlap=min(info.skipped_overlap + plan.skipped_overlap, MAX_ID),
    )

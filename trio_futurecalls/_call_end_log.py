"""One log line per finished call: its name, id, outcome and run time.

On the logger ``trio_futurecalls.call.end``: at INFO for the calls that ran to an
outcome (so an application that logs INFO sees each call once; raise this logger's
level to WARNING to drop them, as ``futurecalls worker --no-call-log`` does), with
the attempt, identifier, due time and a payload summary when it logs DEBUG.

A call that shutdown cancelled while it ran in at-most-once delivery is **lost** (its
row was deleted as it started, and it is not run again): that is a WARNING, with its
id and a payload summary, so an operator can run it again by hand. Calls cancelled on
request and leased calls interrupted by shutdown (they run again) have their own
warnings in ``_execution.py``.
"""

from __future__ import annotations

import logging
from typing import Final

from ._calllog import call_fields
from ._model import StoredCall
from ._outcome import Outcome
from ._redact import redact

#: The logger's name (the CLI switches it).
CALL_END_LOGGER: Final = "trio_futurecalls.call.end"
#: Longest payload summary, in characters.
SUMMARY_LENGTH: Final = 120

_log = logging.getLogger(CALL_END_LOGGER)

_WORDS: Final = {
    Outcome.SUCCEEDED: "succeeded",
    Outcome.FAILED: "failed",
    Outcome.FAILED_FOR_GOOD: "failed (no retry)",
    Outcome.TIMED_OUT: "timed out",
    Outcome.UNDECODABLE: "failed (payload does not decode)",
    Outcome.ABANDONED: "abandoned (its lease expired on its last attempt)",
    Outcome.LEASE_LOST: "lost its lease",
}


def payload_summary(payload: str) -> str:
    """The stored payload on one line, cut to SUMMARY_LENGTH, no password shown."""
    text = " ".join(redact(payload).split())
    return text if len(text) <= SUMMARY_LENGTH else text[: SUMMARY_LENGTH - 3] + "..."


def log_call_end(call: StoredCall, outcome: Outcome, seconds: float) -> None:
    """The INFO line of a call that ran to ``outcome`` in ``seconds`` (none for the
    outcomes that log their own warning: interrupted, cancelled on request)."""
    word = _WORDS.get(outcome)
    if word is None or not _log.isEnabledFor(logging.INFO):
        return
    detail = ""
    if _log.isEnabledFor(logging.DEBUG):
        detail = (
            f" (attempt {call.attempts}, identifier {call.identifier!r}, due "
            f"{call.due_at.isoformat()}, payload {payload_summary(call.payload)})"
        )
    _log.info(
        "call %s (id=%d) %s in %.3f s%s",
        call.name,
        call.id,
        word,
        seconds,
        detail,
        extra={**call_fields(call), "call_outcome": outcome.value, "call_run_seconds": seconds},
    )


def log_lost(call: StoredCall, seconds: float) -> None:
    """The WARNING of an at-most-once call that shutdown cancelled while it ran."""
    _log.warning(
        "call %s (id=%d%s) lost: it was cancelled by shutdown after %.3f s and, delivered "
        "at-most-once, is not run again; payload %s",
        call.name,
        call.id,
        "" if call.identifier is None else f", identifier {call.identifier!r}",
        seconds,
        payload_summary(call.payload),
        extra={**call_fields(call), "call_outcome": "lost", "call_run_seconds": seconds},
    )

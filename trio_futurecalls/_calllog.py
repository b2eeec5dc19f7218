"""What every log record about one call carries: structured fields and error text."""

from __future__ import annotations

import traceback

from ._model import StoredCall
from ._redact import redact


def call_fields(call: StoredCall) -> dict[str, object]:
    """Structured fields (``extra=``) of every log record about ``call``."""
    return {
        "call_name": call.name,
        "call_id": call.id,
        "call_identifier": call.identifier,
        "call_due_at": call.due_at.isoformat(),
        "call_attempt": call.attempts,
    }


def error_text(exc: BaseException, limit: int = 8000) -> str:
    """The traceback of ``exc`` as kept with a dead letter, cut in the middle if long,
    with passwords of connection strings in it hidden."""
    text = redact("".join(traceback.format_exception(exc)).strip())
    return text if len(text) <= limit else text[: limit // 2] + "\n...\n" + text[-limit // 2 :]

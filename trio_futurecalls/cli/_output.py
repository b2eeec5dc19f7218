"""What the commands print and log: tables, JSON, and the log formats (text or JSON lines)."""

from __future__ import annotations

import json
import logging
import re
import sys
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime
from typing import Final

from .. import MAX_PAYLOAD_DEPTH

_STANDARD_RECORD_FIELDS: Final = frozenset(
    vars(logging.LogRecord("x", logging.INFO, "x", 0, "x", None, None)).keys()
) | {"message", "asctime", "taskName"}


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, and structured extras."""

    def format(self, record: logging.LogRecord) -> str:
        data: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD_RECORD_FIELDS and not key.startswith("_"):
                data[key] = value
        if record.exc_info:
            data["exc_info"] = record.exc_text or self.formatException(record.exc_info)
        return json.dumps(data, default=str, ensure_ascii=False)


class HidePasswords(logging.Filter):
    """Rewrites each record before it is formatted: its message, traceback, stack and
    extra fields go through ``hide`` (no password shows in a log line)."""

    def __init__(self, hide: Callable[[str], str]) -> None:
        super().__init__()
        self._hide = hide

    def filter(self, record: logging.LogRecord) -> bool:
        hide = self._hide
        try:
            message = record.getMessage()
        except Exception:  # a bad format string: logging reports it; hide it all the same
            message = f"{record.msg!r} % {record.args!r}"
        record.msg, record.args = hide(message), None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = hide(record.exc_text)
        if record.stack_info:
            record.stack_info = hide(record.stack_info)
        for key, value in vars(record).items():
            if key not in _STANDARD_RECORD_FIELDS and isinstance(value, str):
                setattr(record, key, hide(value))
        return True


def setup_logging(verbose: bool, log_format: str, hide: Callable[[str], str]) -> None:
    handler = logging.StreamHandler(sys.stderr)
    if log_format == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.addFilter(HidePasswords(hide))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG if verbose else logging.INFO)


def print_table(headers: Sequence[str], rows: Iterable[Sequence[object]]) -> None:
    text_rows = [["" if v is None else str(v) for v in row] for row in rows]
    widths = [len(h) for h in headers]
    for row in text_rows:
        widths = [max(w, len(v)) for w, v in zip(widths, row, strict=True)]
    for row in [list(headers), *text_rows]:
        print("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip())


def shorten(text: str, width: int = 60) -> str:
    """One table cell: the first line of ``text``, at most ``width`` characters."""
    lines = text.strip().splitlines() or [""]
    line = lines[0] + (" ..." if len(lines) > 1 else "")
    return line if len(line) <= width else line[: width - 3] + "..."


def print_json(value: object) -> None:
    print(json.dumps(value, indent=2, ensure_ascii=False))


def json_or_text(text: str) -> object:
    """A stored payload as a JSON value; the raw text if it is not valid JSON, or is
    nested deeper than a call site accepts (another program wrote it): decoding or
    printing it could recurse too deep."""
    try:
        value = json.loads(text)
    except (ValueError, RecursionError):
        return text
    return value if _within_depth(value) else text


def _within_depth(value: object) -> bool:
    """Whether no list or object in ``value`` is nested MAX_PAYLOAD_DEPTH deep (walked
    without recursion)."""
    stack = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, list | dict):
            if depth >= MAX_PAYLOAD_DEPTH:
                return False
            children = item.values() if isinstance(item, dict) else item
            stack.extend((child, depth + 1) for child in children)
    return True


def iso(value: datetime) -> str:
    return value.astimezone(UTC).isoformat()


def iso_seconds(value: datetime) -> str:
    """An exact time for a table cell: UTC, to the second."""
    return value.astimezone(UTC).replace(microsecond=0).isoformat()


def span(seconds: float) -> str:
    """A length of time as people say it, in one unit, rounded: ``45 s``, ``5 min``,
    ``3 h``, ``2 d`` (days from 48 h on)."""
    seconds = abs(seconds)
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if round(seconds) >= size * (2 if unit == "d" else 1):
            return f"{round(seconds / size)} {unit}"
    return f"{round(seconds)} s"


def relative(when: datetime, now: datetime) -> str:
    """A due time relative to ``now``: ``in 5 min``, ``3 h overdue``, ``now``."""
    seconds = (when - now).total_seconds()
    if abs(seconds) < 1:
        return "now"
    return f"in {span(seconds)}" if seconds > 0 else f"{span(seconds)} overdue"


def ago(when: datetime, now: datetime) -> str:
    """A past time relative to ``now``: ``5 min ago`` (``in 2 s`` if clocks differ)."""
    seconds = (now - when).total_seconds()
    if abs(seconds) < 1:
        return "now"
    return f"{span(seconds)} ago" if seconds > 0 else f"in {span(seconds)}"


#: A traceback's exception line (``ValueError: ...``, ``mod.CustomError``), once the
#: indentation and the ``|`` of an exception group's frames are stripped.
_EXCEPTION_LINE: Final = re.compile(
    r"^(?:\w+\.)*[A-Za-z_]\w*(?:Error|Exception|Group|Exit|Interrupt|Cancelled|Warning)"
    r"(?::.*)?$"
)


def last_line(text: str, width: int = 80) -> str:
    """One table cell for an error: the last exception line of a traceback (the
    error that ended the call, with the first line of its message); the first line
    of a message the library wrote (``timed out after 5 s ...``); at most ``width``
    characters."""
    lines = [line.strip().lstrip("|").strip() for line in text.strip().splitlines()]
    lines = [line for line in lines if line]
    found = [i for i, line in enumerate(lines) if _EXCEPTION_LINE.match(line)]
    if lines and "Traceback (most recent call last)" not in lines[0]:
        line = lines[0] + (" ..." if len(lines) > 1 else "")
    elif found:
        line = lines[found[-1]]
        if found[-1] + 1 < len(lines) and not lines[found[-1] + 1].startswith("+"):
            line += " ..."  # the message goes on
    else:
        line = lines[-1] if lines else ""
    return line if len(line) <= width else line[: width - 3] + "..."

"""What the commands print and log: tables, JSON, and the log formats (text or JSON lines)."""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime
from typing import Final

from .. import MAX_PAYLOAD_DEPTH
from .._human import ago as ago
from .._human import iso_seconds as iso_seconds
from .._human import last_line as last_line
from .._human import relative as relative
from .._human import span as span

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

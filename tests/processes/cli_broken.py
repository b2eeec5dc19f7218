"""A calls module whose import raises (``futurecalls worker cli_broken:CALLS``): the CLI
must name the module and the line, and suggest ``-v`` for the traceback."""

from __future__ import annotations

SETTINGS: dict[str, str] = {}

raise RuntimeError("SMTP_HOST is not set")  # what a module reading its settings may do

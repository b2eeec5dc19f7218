"""The README's table of ``open_scheduler`` keywords lists every SchedulerOptions field."""

from __future__ import annotations

import re
from pathlib import Path

import attrs

from trio_futurecalls import SchedulerOptions

README = Path(__file__).parents[2] / "README.md"


def test_every_scheduler_option_has_a_row_in_the_readme() -> None:
    text = README.read_text(encoding="utf-8")
    section = text.split("### Every `open_scheduler` keyword", 1)[1].split("At a glance", 1)[0]
    rows = re.findall(r"^\| `(\w+)=` \|", section, flags=re.MULTILINE)
    assert rows == [field.name for field in attrs.fields(SchedulerOptions)]

"""Optional dependencies load only when used: a fresh interpreter imports the package
(and the CLI) without asyncpg, trio-asyncio, prometheus_client or Hypercorn."""

from __future__ import annotations

import subprocess
import sys

OPTIONAL = ("asyncpg", "trio_asyncio", "prometheus_client", "hypercorn")

CODE = f"""
import sys
import trio_futurecalls
import trio_futurecalls.cli
print(sorted({{m.split(".")[0] for m in sys.modules}} & {set(OPTIONAL)!r}))
"""


def test_importing_the_package_loads_no_optional_dependency() -> None:
    done = subprocess.run(
        [sys.executable, "-c", CODE], capture_output=True, text=True, check=True, timeout=60
    )
    assert done.stdout.strip() == "[]", done.stdout

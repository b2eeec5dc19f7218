"""What importing the library loads: optional dependencies only where they are used.

Each test runs a fresh interpreter, so that modules imported by other tests do not count.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

EXTRA_MESSAGE = (
    "the PostgreSQL store needs asyncpg and trio-asyncio: pip install 'trio_futurecalls[postgres]'"
)


def run_python(code: str, *, missing: str | None = None) -> str:
    """Run ``code`` in a new interpreter, where the module ``missing`` (if given)
    cannot be imported, as if not installed; return its output (it must succeed)."""
    if missing is not None:
        code = f"import sys\nsys.modules[{missing!r}] = None\n{code}"
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip()


OPTIONAL = ("asyncpg", "trio_asyncio", "prometheus_client", "hypercorn")


def test_the_library_never_imports_an_optional_dependency() -> None:
    """Not the PostgreSQL driver, the bridge, nor the Prometheus exporter's parts."""
    out = run_python(
        "import sys\n"
        "import trio_futurecalls, trio_futurecalls.testing, trio_futurecalls.cli\n"
        "import trio_futurecalls.stores.memory, trio_futurecalls.stores.sqlite\n"
        f"print(sorted({{m.split('.')[0] for m in sys.modules}} & {set(OPTIONAL)!r}))\n"
    )
    assert out == "[]"


def test_the_postgres_names_at_the_top_import_the_driver_only_when_used() -> None:
    out = run_python(
        "import sys\n"
        "from trio_futurecalls import open_store, schedule_call\n"
        "import trio_futurecalls\n"
        "names = dir(trio_futurecalls)\n"
        "print('asyncpg' in sys.modules, 'trio_asyncio' in sys.modules, end=' ')\n"
        "from trio_futurecalls import open_postgres_store\n"
        "print('asyncpg' in sys.modules, 'open_postgres_store' in names)\n"
    )
    assert out == "False False True True"


@pytest.mark.parametrize("missing", ["asyncpg", "trio_asyncio"])
def test_without_the_postgres_extra(missing: str) -> None:
    """The library works; the PostgreSQL store's ImportError names the extra."""
    out = run_python(
        "import trio\n"
        "from trio_futurecalls import MemoryStore, open_scheduler\n"
        "async def main():\n"
        "    async with open_scheduler(MemoryStore(), []):\n"
        "        pass\n"
        "trio.run(main)\n"
        "try:\n"
        "    import trio_futurecalls.stores.postgres\n"
        "except ImportError as exc:\n"
        "    print(exc.name, exc, sep='|')\n"
        "try:\n"
        "    from trio_futurecalls import open_postgres_store\n"
        "except ImportError as exc:\n"
        "    print(exc.name, exc, sep='|')\n",
        missing=missing,
    )
    assert out == f"{missing}|{EXTRA_MESSAGE}\n{missing}|{EXTRA_MESSAGE}"

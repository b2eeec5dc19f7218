"""The dashboard's dependencies are an extra: the library and the CLI never import
them, and the dashboard's ImportError names the extra. Fresh interpreters, so that
modules other tests imported do not count."""

from __future__ import annotations

import subprocess
import sys

import pytest


def run_python(code: str) -> str:
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip()


def test_library_and_cli_do_not_import_the_dashboard_parts() -> None:
    out = run_python(
        "import sys\n"
        "import trio_futurecalls, trio_futurecalls.cli\n"
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'starlette', 'jinja2'}))\n"
    )
    assert out == "[]"


@pytest.mark.parametrize("missing", ["starlette", "jinja2", "hypercorn"])
def test_import_error_names_the_extra(missing: str) -> None:
    out = run_python(
        f"import sys\nsys.modules[{missing!r}] = None\n"
        "try:\n"
        "    import trio_futurecalls.dashboard\n"
        "except ImportError as exc:\n"
        "    print(exc)\n"
    )
    assert "install the `dashboard` extra" in out

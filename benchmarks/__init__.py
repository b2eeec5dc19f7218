"""Benchmarks of trio_futurecalls (issue 5). Run ``python -m benchmarks --help``.

Every workload runs the real engine (``open_scheduler``) over a real store (memory,
SQLite, PostgreSQL), repeats ``--repeat`` times and reports the median with the min and
max across repeats. Results are printed as a markdown table and written as JSON (with
the machine, versions and git commit) to ``benchmarks/results/``. Targets live here,
in :mod:`benchmarks._targets`, never in the test suite.
"""

"""The targets of issues 5 and 16, in one place (never in the test suite).

Issue 16's are ratios to a ceiling measured in the same run: see ``_compare.py``.
"""

from __future__ import annotations

from typing import Final

from benchmarks._harness import Target

#: Drain throughput of 20,000 due no-op calls (global and class limit 50).
DRAIN_RATE: Final = {
    "postgres": Target(">=", 15_000, ">= 15,000/s"),
    "sqlite": Target(">=", 5_000, ">= 5,000/s"),
}
#: The memory store's drain, as a fraction of the bare Trio ceiling.
MEMORY_DRAIN_OF_TRIO_CEILING: Final = Target(">=", 0.5, ">= 0.5")
#: Sleepy calls (limit 100): ideal time / actual time.
SLEEPY_EFFICIENCY: Final = Target(">=", 0.95, ">= 0.95")
#: Lateness (start - due) of calls scheduled by another process, PostgreSQL.
LATENESS_P99_MS: Final = {"postgres": Target("<=", 10.0, "<= 10 ms")}
#: Scheduling rate on PostgreSQL.
SCHEDULE_ONE_RATE: Final = {"postgres": Target(">=", 4_000, ">= 4,000/s")}
SCHEDULE_BATCH_RATE: Final = {"postgres": Target(">=", 100_000, ">= 100,000/s")}
#: Scale: drain rate with 1M future rows over the same drain on an empty table.
SCALE_RATIO: Final = Target(">=", 0.8, ">= 0.8")
SCALE_RSS_MIB: Final = Target("<", 150.0, "< 150 MiB")
#: CPU-heavy calls (issue 14): PROCESS over TASK time, and tiny calls' lateness then.
CPU_PROCESS_OF_TASK: Final = Target("<=", 0.6, "<= 0.6")
CPU_TINY_P99_MS: Final = Target("<=", 20.0, "<= 20 ms")
#: Adaptive concurrency (issue 14): Adaptive(1, 64)'s throughput over the best fixed
#: limit's, and how long the limit takes to settle in each phase.
ADAPTIVE_OF_BEST_FIXED: Final = Target(">=", 0.9, ">= 0.9")
ADAPTIVE_SETTLE_S: Final = Target("<=", 10.0, "<= 10 s")
#: Issue 16 (worker side): ratios to ceilings measured in the same run.
DRAIN_OF_TRIO_CEILING: Final = Target(">=", 0.5, ">= 0.5")
AT_LEAST_ONCE_OF_AT_MOST_ONCE: Final = Target(">=", 0.6, ">= 0.6")
SLEEPY_OF_TRIO_LOOP: Final = Target(">=", 0.95, ">= 0.95")

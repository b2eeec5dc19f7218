"""``python -m benchmarks``: run the benchmark suite (see ``--help``)."""

from benchmarks._cli import main

raise SystemExit(main())

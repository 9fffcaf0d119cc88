"""Every benchmark, one after the other, each printing its own figures and ratios.

    .venv/bin/python bench/run_all.py [--quick] [--only ingest,api_load]

``--quick`` passes ``--quick`` to the benchmarks that take it (smaller runs, same comparisons).
Results and the commands that produced them: docs/performance.md.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent

# name -> (script, takes --quick)
BENCHMARKS: dict[str, tuple[str, bool]] = {
    "probe_capacity": ("probe_capacity.py", True),
    "ingest": ("ingest.py", True),
    "api_load": ("api_load.py", True),
    "sla_queries": ("sla_queries.py", False),
    "fleet": ("fleet.py", True),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="smaller runs")
    parser.add_argument("--only", help=f"comma-separated, among: {', '.join(BENCHMARKS)}")
    args = parser.parse_args()
    names = args.only.split(",") if args.only else list(BENCHMARKS)
    unknown = [n for n in names if n not in BENCHMARKS]
    if unknown:
        parser.error(f"unknown benchmark(s): {', '.join(unknown)}")
    failed = []
    for name in names:
        script, quick = BENCHMARKS[name]
        argv = [sys.executable, str(HERE / script), *(["--quick"] if args.quick and quick else [])]
        print(f"\n### {name}: {' '.join(argv[1:])}", flush=True)
        started = time.monotonic()
        code = subprocess.run(argv, check=False).returncode
        print(f"### {name}: exit {code} after {time.monotonic() - started:.0f} s", flush=True)
        if code != 0:
            failed.append(name)
    if failed:
        sys.exit(f"failed: {', '.join(failed)}")


if __name__ == "__main__":
    main()

"""Run every benchmark script in turn, each in its own process, and sum up.

``python -m benchmarks.run_all --quick`` runs each script's small CI mode (a few
minutes in all). Without ``--quick`` each script runs at the size its row in the
README reports, which takes hours on a 2-core machine; ``--only`` and ``--skip``
pick scripts by name. ``bench_batch`` reads the trained models of ``./data``
(``make demo`` first), ``bench_movielens`` and ``bench_telco`` read
``../shared/data``, and the Spark side of ``bench_als`` needs ``uv sync --extra
spark`` and Java (it says so and skips that side otherwise).

Run from the repository root: ``make bench ARGS=--quick`` or
``python -m benchmarks.run_all --help``.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = (
    "bench_warehouse",
    "bench_features",
    "bench_serving",
    "bench_batch",
    "bench_als",
    "bench_retrain",
    "bench_movielens",
    "bench_telco",
)


def run(script: str, quick: bool) -> tuple[int, float]:
    """Run one script with its output passed through; exit status and seconds."""
    command = [sys.executable, "-m", f"benchmarks.{script}"]
    if quick:
        command.append("--quick")
    print(f"\n=== python {' '.join(command[1:])}", flush=True)
    started = time.perf_counter()
    done = subprocess.run(command, cwd=PROJECT_ROOT, check=False)
    return done.returncode, time.perf_counter() - started


def main() -> int:
    """Run the chosen scripts and print one line per script at the end."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small CI mode of each")
    parser.add_argument("--only", nargs="+", choices=SCRIPTS, help="run just these")
    parser.add_argument("--skip", nargs="+", choices=SCRIPTS, default=[])
    args = parser.parse_args()

    chosen = [s for s in args.only or SCRIPTS if s not in args.skip]
    results = {script: run(script, args.quick) for script in chosen}

    print("\nsummary:")
    for script, (status, seconds) in results.items():
        verdict = "ok" if status == 0 else f"FAILED (exit {status})"
        print(f"  {script:<16} {seconds:8.1f} s  {verdict}")
    return 0 if all(status == 0 for status, _ in results.values()) else 1


if __name__ == "__main__":
    sys.exit(main())

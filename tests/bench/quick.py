"""Running a benchmark script's ``--quick`` mode in a child process, for the tests."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from serving.cli import PROJECT_ROOT, service_environment

QUICK_RUN_TIMEOUT_SECONDS = 600


def run_quick_mode(module: str, data_dir: Path, *extra: str) -> str:
    """Run ``python -m benchmarks.<module> --quick`` on ``data_dir``; its output.

    The child gets the service's environment with ``PRECISION_DATA_DIR`` set, and
    a failed run fails the calling test with the end of what it printed.
    """
    env = service_environment() | {"PRECISION_DATA_DIR": str(data_dir)}
    done = subprocess.run(
        [sys.executable, "-m", f"benchmarks.{module}", "--quick", *extra],
        cwd=PROJECT_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=QUICK_RUN_TIMEOUT_SECONDS,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done.stdout

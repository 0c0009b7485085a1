"""The benchmark scripts still run: each one's ``--quick`` mode, in a child process.

Only that they finish and print their figures is checked here; the figures
themselves are read by people, never asserted on.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.bench.quick import run_quick_mode

pytestmark = pytest.mark.slow


def run_quick(module: str, tmp_path: Path, *extra: str) -> str:
    """Run ``python -m benchmarks.<module> --quick`` and return what it printed."""
    return run_quick_mode(module, tmp_path / "data", *extra)


def test_warehouse_benchmark_prints_generate_and_build_figures(tmp_path) -> None:
    printed = run_quick("bench_warehouse", tmp_path)

    assert re.search(r"2,000 cards: generate\s+[\d.]+ s", printed)
    assert re.search(r"materialize\s+[\d.]+ s", printed)
    assert re.search(r"peak RSS\s+\d+ MiB", printed)


def test_feature_benchmark_prints_retrieval_and_read_figures(tmp_path) -> None:
    printed = run_quick("bench_features", tmp_path)

    assert "identical" in printed.lower()
    assert re.search(r"p99", printed)
    assert re.search(r"p50: layout [\d.]+x faster than stock alone", printed)


def test_run_all_runs_the_chosen_scripts_and_sums_them_up(tmp_path) -> None:
    """A script that needs no data from outside the project (Telco once did)."""
    printed = run_quick("run_all", tmp_path, "--only", "bench_als")

    assert "=== python -m benchmarks.bench_als --quick" in printed
    assert re.search(r"summary:\n\s+bench_als\s+[\d.]+ s\s+ok", printed)


def test_serving_benchmark_prints_segment_preview_figures(tmp_path) -> None:
    printed = run_quick("bench_serving", tmp_path, "--segments-only")

    assert re.search(r"ours \(cell index\)\s+p50", printed)
    assert re.search(r"ratio pandas/ours: p50 \d+x, p95 \d+x", printed)


def test_retrain_benchmark_prints_its_stage_table(tmp_path) -> None:
    printed = run_quick("bench_retrain", tmp_path, "--data-dir", str(tmp_path / "r"))

    assert re.search(r"2,000 cards, [\d,]+ events", printed)
    assert re.search(r"build features\s+[\d.]+\s+[\d.]+", printed)
    assert re.search(r"retrain \(features \+ training\): [\d.]+ min wall", printed)

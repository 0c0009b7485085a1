"""The ALS benchmark and its synthetic card x offer matrices.

The benchmark runs in its quick mode as a real subprocess; the Spark side runs only
where pyspark and Java are both present. No test looks at the timings.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from benchmarks.bench_als import spark_unavailable
from benchmarks.synthetic_interactions import hold_out, make_card_offers
from features.errors import InputError

PROJECT_ROOT = Path(__file__).resolve().parents[2]


def run_benchmark(tmp_path: Path, *options: str) -> dict:
    """Run the benchmark script in quick mode and return its JSON figures."""
    json_path = tmp_path / "als.json"
    command = [sys.executable, "-m", "benchmarks.bench_als", "--quick"]
    completed = subprocess.run(
        [*command, "--json", str(json_path), *options],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert "ours (ALSRecommender)" in completed.stdout
    return json.loads(json_path.read_text())


def test_generator_stores_exactly_the_requested_interactions() -> None:
    data = make_card_offers(cards=500, offers=80, interactions=6_000, seed=3)

    matrix = data.card_offers
    assert matrix.shape == (500, 80)
    assert matrix.format == "csr"
    assert matrix.nnz == 6_000
    assert np.diff(matrix.indptr).min() >= 1
    assert matrix.data.min() >= 1.0
    assert data.appeal(np.arange(4)).shape == (4, 80)


def test_generator_is_deterministic_by_seed() -> None:
    first = make_card_offers(cards=300, offers=50, interactions=3_000, seed=11)
    second = make_card_offers(cards=300, offers=50, interactions=3_000, seed=11)
    other = make_card_offers(cards=300, offers=50, interactions=3_000, seed=12)

    assert (first.card_offers != second.card_offers).nnz == 0
    assert (first.card_offers != other.card_offers).nnz > 0


def test_generator_plants_tastes_that_predict_choices() -> None:
    data = make_card_offers(cards=400, offers=100, interactions=8_000, seed=5)

    appeal = data.appeal(np.arange(400))
    chosen = data.card_offers.toarray() > 0
    assert appeal[chosen].mean() > appeal[~chosen].mean() + 1.0


@pytest.mark.parametrize(
    ("cards", "offers", "interactions", "message"),
    [
        (100, 10, 50, "at least one interaction per card"),
        (10, 5, 51, "at most cards x offers"),
        (0, 5, 10, "expected positive cards"),
    ],
    ids=["fewer-than-cards", "more-than-the-matrix-holds", "no-cards"],
)
def test_generator_refuses_impossible_sizes(
    cards: int, offers: int, interactions: int, message: str
) -> None:
    with pytest.raises(InputError, match=message):
        make_card_offers(cards=cards, offers=offers, interactions=interactions)


def test_hold_out_splits_entries_without_losing_any() -> None:
    matrix = make_card_offers(cards=400, offers=60, interactions=5_000).card_offers

    train, held_out = hold_out(matrix, evaluated_cards=100, share=0.2, seed=1)

    assert train.nnz + held_out.nnz == matrix.nnz
    assert abs(train + held_out - matrix).max() == 0
    assert train.multiply(held_out).nnz == 0
    evaluated = np.flatnonzero(np.diff(held_out.indptr))
    assert 0 < evaluated.size <= 100
    assert np.diff(train.indptr)[evaluated].min() >= 1


def test_quick_benchmark_reports_our_fits_and_skips_spark_unless_asked(
    tmp_path: Path,
) -> None:
    report = run_benchmark(tmp_path)

    ours = report["ours"]
    assert len(ours["fit_seconds"]) == report["settings"]["repeats"]
    assert ours["min_seconds"] <= ours["median_seconds"] <= ours["max_seconds"]
    assert report["spark"]["skipped"] == "not asked (--with-spark)"
    assert report["spark_over_ours"] is None

    references = report["reference_recall_at_10"]
    assert references["popularity"] < ours["recall_at_10"]
    assert ours["recall_at_10"] <= references["planted_oracle"] + 0.05
    assert ours["recall_at_10"] == pytest.approx(
        references["ours_through_recommend"], abs=0.01
    )


@pytest.mark.slow
def test_quick_benchmark_with_spark_reaches_comparable_recall(tmp_path: Path) -> None:
    reason = spark_unavailable()
    if reason is not None:
        pytest.skip(f"Spark side of the ALS benchmark cannot run: {reason}")

    report = run_benchmark(tmp_path, "--with-spark", "--spark-memory", "1g")

    ours, spark = report["ours"], report["spark"]
    assert spark["skipped"] is None
    assert len(spark["fit_seconds"]) == 1
    assert report["spark_over_ours"] > 0
    assert abs(spark["recall_at_10"] - ours["recall_at_10"]) < 0.05
    assert spark["recall_at_10"] > report["reference_recall_at_10"]["popularity"]

"""The MovieLens benchmark in its quick setting: it runs and beats most-popular."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from benchmarks.bench_movielens import DEFAULT_DATA, fold_of_rating, main

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def quick_result(tmp_path_factory) -> dict:
    if not (DEFAULT_DATA / "u.data").exists():
        pytest.skip(f"MovieLens-100k is not at {DEFAULT_DATA}; the benchmark needs it")
    out = tmp_path_factory.mktemp("movielens") / "figures.json"
    result = main(["--quick", "--data", str(DEFAULT_DATA), "--json", str(out)])
    assert Path(out).exists()
    return result


def test_quick_benchmark_beats_most_popular_by_a_margin(quick_result) -> None:
    rows = quick_result["rows"]
    final = next(row for name, row in rows.items() if name.startswith("final"))

    assert final["ndcg@10"] > rows["most popular"]["ndcg@10"] + 0.1
    assert rows["ALS"]["ndcg@10"] > rows["most popular"]["ndcg@10"]


def test_quick_benchmark_reports_both_map_definitions(quick_result) -> None:
    for metrics in quick_result["rows"].values():
        # dividing by every relevant item can only lower average precision
        assert metrics["map_by_relevant@10"] <= metrics["map@10"]
        assert metrics["users"] > 900


def test_quick_benchmark_uses_the_published_split_sizes(quick_result) -> None:
    split = quick_result["split"]

    assert split["train"] + split["test"] == 100_000
    assert split["train"] == pytest.approx(75_000, rel=0.01)


def test_folds_deal_each_item_ratings_evenly() -> None:
    ratings = pd.DataFrame({"item": np.repeat([0, 1, 2], [8, 5, 1])})

    folds = fold_of_rating(ratings, n_folds=4)
    counts = pd.crosstab(ratings["item"], folds)

    assert (counts.max(axis=1) - counts.min(axis=1) <= 1).all()
    assert sorted(counts.loc[0]) == [2, 2, 2, 2]
    np.testing.assert_array_equal(folds, fold_of_rating(ratings, n_folds=4))

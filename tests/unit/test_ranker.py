"""The LambdaRank re-ranker and the LightGBM traps it guards against."""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
import pytest

from features.errors import InputError
from training.ranker import LambdaRankReranker

QUERIES, CANDIDATES = 40, 8


def candidate_rows(seed: int = 0) -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
    """Candidates sorted by query; the grade follows ``signal`` with some noise."""
    rng = np.random.default_rng(seed)
    rows = QUERIES * CANDIDATES
    features = pd.DataFrame(
        {
            "signal": rng.normal(size=rows),
            "noise": rng.normal(size=rows),
            "popularity": rng.integers(0, 50, size=rows).astype(float),
        }
    )
    grades = np.digitize(
        features["signal"] + 0.3 * rng.normal(size=rows), [0, 0.8, 1.5]
    )
    queries = np.repeat([f"card-{q:03d}" for q in range(QUERIES)], CANDIDATES)
    return features, grades, queries


def small_ranker(**overrides) -> LambdaRankReranker:
    settings = {"n_estimators": 30, "min_child_samples": 5, "num_leaves": 7}
    settings.update(overrides)
    return LambdaRankReranker(**settings)


def test_shuffled_training_rows_give_the_same_model() -> None:
    """Groups are built after sorting, so row order cannot move candidates."""
    features, grades, queries = candidate_rows()
    order = np.random.default_rng(7).permutation(len(features))

    in_order = small_ranker().fit(features, grades, queries)
    shuffled = small_ranker().fit(
        features.iloc[order].reset_index(drop=True), grades[order], queries[order]
    )

    np.testing.assert_array_equal(
        in_order.predict(features), shuffled.predict(features)
    )
    assert in_order.booster_.model_to_string() == shuffled.booster_.model_to_string()


def test_reordered_columns_give_the_same_scores() -> None:
    features, grades, queries = candidate_rows()
    ranker = small_ranker().fit(features, grades, queries)

    reordered = features[["popularity", "signal", "noise"]].assign(extra=1.0)

    np.testing.assert_array_equal(ranker.predict(features), ranker.predict(reordered))


def test_missing_feature_column_is_refused() -> None:
    features, grades, queries = candidate_rows()
    ranker = small_ranker().fit(features, grades, queries)

    with pytest.raises(InputError, match=r"missing \['noise'\]"):
        ranker.predict(features.drop(columns="noise"))


def test_labels_above_the_gain_table_are_refused_before_training() -> None:
    features, grades, queries = candidate_rows()
    grades = grades.copy()
    grades[:3] = 9

    with pytest.raises(InputError, match=r"at most max_label=3.*3 rows up to 9"):
        small_ranker().fit(features, grades, queries)


def test_labels_above_the_gain_table_can_be_clipped(caplog) -> None:
    features, grades, queries = candidate_rows()
    high = grades.copy()
    high[grades == 3] = 40

    with caplog.at_level(logging.WARNING, logger="training.ranker"):
        clipped = small_ranker(label_policy="clip").fit(features, high, queries)
    plain = small_ranker().fit(features, grades, queries)

    assert "clipped" in caplog.text
    np.testing.assert_array_equal(clipped.predict(features), plain.predict(features))


@pytest.mark.parametrize(
    ("grades", "message"),
    [(0.5, "whole relevance grades"), (-1, "0 or more"), (np.nan, "whole relevance")],
    ids=["fractional", "negative", "missing"],
)
def test_malformed_labels_are_refused(grades, message) -> None:
    features, labels, queries = candidate_rows()
    labels = labels.astype(float)
    labels[0] = grades

    with pytest.raises(InputError, match=message):
        small_ranker().fit(features, labels, queries)


def test_misaligned_rows_are_refused() -> None:
    features, grades, queries = candidate_rows()

    with pytest.raises(InputError, match="one entry per row"):
        small_ranker().fit(features, grades[:-1], queries)


def test_same_seed_gives_the_same_scores() -> None:
    features, grades, queries = candidate_rows()

    first = small_ranker(feature_fraction=0.7).fit(features, grades, queries)
    second = small_ranker(feature_fraction=0.7).fit(features, grades, queries)

    np.testing.assert_array_equal(first.predict(features), second.predict(features))


def test_ranker_orders_unseen_queries_by_the_signal() -> None:
    features, grades, queries = candidate_rows(seed=0)
    unseen, unseen_grades, _ = candidate_rows(seed=1)

    ranker = small_ranker().fit(features, grades, queries)
    scores = ranker.predict(unseen)

    correlation = np.corrcoef(scores, unseen_grades)[0, 1]
    assert correlation > 0.6
    assert ranker.feature_importance().index[0] == "signal"


def test_validation_set_stops_early_at_the_best_round() -> None:
    features, grades, queries = candidate_rows(seed=0)
    valid = candidate_rows(seed=1)

    ranker = small_ranker(n_estimators=200, early_stopping_rounds=5).fit(
        features, grades, queries, validation=valid
    )

    assert 1 <= ranker.best_iteration_ < 200

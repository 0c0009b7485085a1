"""Ranking metrics pinned to small worked examples."""

from __future__ import annotations

from math import log2

import numpy as np
import pytest
from scipy import sparse

from features.errors import InputError
from training.ranking_metrics import (
    catalogue_coverage,
    hit_rate_at_k,
    map_at_k,
    ndcg_at_k,
    precision_at_k,
    ranking_report,
    recall_at_k,
)

N_ITEMS = 25


def relevant_matrix(rows: list[list[int]]) -> sparse.csr_matrix:
    users = [user for user, items in enumerate(rows) for _ in items]
    items = [item for row in rows for item in row]
    values = np.ones(len(items))
    return sparse.csr_matrix((values, (users, items)), shape=(len(rows), N_ITEMS))


# User A: 3 relevant items, hits at ranks 1 and 3.
# User B: 7 relevant items (more than k), hits at ranks 1 and 3.
# User C: nothing relevant; left out of every mean.
RECOMMENDED = np.array(
    [[1, 2, 3, 4, 5], [10, 11, 12, 13, 14], [1, 2, 3, 4, 5]], dtype=np.int64
)
RELEVANT = relevant_matrix([[1, 3, 6], [10, 12, 20, 21, 22, 23, 24], []])
K = 5

DCG = 1 / log2(2) + 1 / log2(4)
IDCG_3 = 1 / log2(2) + 1 / log2(3) + 1 / log2(4)
IDCG_5 = IDCG_3 + 1 / log2(5) + 1 / log2(6)
AP_SUM = 1 / 1 + 2 / 3


def test_precision_divides_by_k() -> None:
    assert precision_at_k(RECOMMENDED, RELEVANT, K) == pytest.approx(0.4)


def test_recall_divides_by_number_of_relevant_items() -> None:
    assert recall_at_k(RECOMMENDED, RELEVANT, K) == pytest.approx((2 / 3 + 2 / 7) / 2)


def test_ndcg_uses_ideal_of_min_relevant_and_k() -> None:
    expected = (DCG / IDCG_3 + DCG / IDCG_5) / 2

    assert ndcg_at_k(RECOMMENDED, RELEVANT, K) == pytest.approx(expected)
    assert expected == pytest.approx(0.606329, abs=1e-6)


def test_map_standard_divides_by_min_relevant_and_k() -> None:
    expected = (AP_SUM / 3 + AP_SUM / 5) / 2

    assert map_at_k(RECOMMENDED, RELEVANT, K) == pytest.approx(expected)
    assert expected == pytest.approx(0.444444, abs=1e-6)


def test_map_microsoft_recommenders_divides_by_number_of_relevant_items() -> None:
    expected = (AP_SUM / 3 + AP_SUM / 7) / 2

    assert map_at_k(RECOMMENDED, RELEVANT, K, "relevant") == pytest.approx(expected)
    assert expected == pytest.approx(0.396825, abs=1e-6)


def test_hit_rate_counts_users_with_any_hit() -> None:
    recommended = np.array([[1, 2], [20, 21], [0, 9]])
    relevant = relevant_matrix([[2], [7], [9, 0]])

    assert hit_rate_at_k(recommended, relevant, 2) == pytest.approx(2 / 3)
    assert hit_rate_at_k(recommended, relevant, 1) == pytest.approx(1 / 3)


def test_coverage_counts_distinct_items_shown() -> None:
    assert catalogue_coverage(RECOMMENDED, N_ITEMS, K) == pytest.approx(10 / 25)
    assert catalogue_coverage(RECOMMENDED, N_ITEMS, 1) == pytest.approx(2 / 25)


def test_perfect_ranking_scores_one() -> None:
    recommended = np.array([[3, 4, 9], [7, 8, 0]])
    relevant = relevant_matrix([[3, 4], [7, 8, 0]])

    assert ndcg_at_k(recommended, relevant, 3) == pytest.approx(1.0)
    assert map_at_k(recommended, relevant, 3) == pytest.approx(1.0)
    assert precision_at_k(recommended, relevant, 3) == pytest.approx(5 / 6)


def test_empty_slots_never_count_as_hits() -> None:
    # -1 must not be read as the previous user's last item (24).
    recommended = np.array([[24, -1], [-1, -1]])
    relevant = relevant_matrix([[24], [24]])

    assert hit_rate_at_k(recommended, relevant, 2) == pytest.approx(0.5)
    assert catalogue_coverage(recommended, N_ITEMS, 2) == pytest.approx(1 / 25)


def test_report_holds_every_metric_at_k() -> None:
    report = ranking_report(RECOMMENDED, RELEVANT, K)

    assert report["ndcg@5"] == pytest.approx(ndcg_at_k(RECOMMENDED, RELEVANT, K))
    assert report["map_by_relevant@5"] == pytest.approx(0.396825, abs=1e-6)
    assert report["users"] == 2


@pytest.mark.parametrize(
    ("recommended", "relevant", "k", "message"),
    [
        (np.array([1, 2]), RELEVANT, 1, "2-d array"),
        (RECOMMENDED, RELEVANT[:2], 1, "one row per row of recommended"),
        (RECOMMENDED, RELEVANT, 6, "k must be between 1 and the 5"),
        (RECOMMENDED.astype(float), RELEVANT, 1, "integer item ids"),
        (RECOMMENDED + 30, RELEVANT, 1, "below the 25 item columns"),
    ],
    ids=["one-dimensional", "misaligned", "k-too-large", "float-ids", "unknown-item"],
)
def test_bad_inputs_are_refused(recommended, relevant, k, message) -> None:
    with pytest.raises(InputError, match=message):
        ndcg_at_k(recommended, relevant, k)


def test_unknown_map_normalisation_is_refused() -> None:
    with pytest.raises(InputError, match="normalisation must be"):
        map_at_k(RECOMMENDED, RELEVANT, K, "k")  # type: ignore[arg-type]

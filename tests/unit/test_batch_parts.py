"""Parts of the batch top-k path against their straightforward counterparts.

Trees specialised per offer score every row exactly as the full booster does, and
the redeemed-offer flags read every cell as the per-card rules read it.
"""

from __future__ import annotations

import lightgbm as lgb
import numpy as np
import pandas as pd
import pytest

from training.batch import _redeemed_matrix, predict_by_offer, specialised_trees
from training.rules import redeemed_ids

# Values of the offer-constant column: missing, zero, below LightGBM's zero
# threshold (either sign), and ordinary numbers on both sides of the splits.
OFFER_VALUES = np.array([np.nan, 0.0, 1e-40, -1e-40, 0.25, 0.5, 1.0, 2.0, 3.0, -1.0])
ROUNDS = 25


def _booster(params: dict, seed: int = 0) -> lgb.Booster:
    """A small regression booster whose trees split on column 0 often."""
    rng = np.random.default_rng(seed)
    features = rng.normal(size=(3_000, 4))
    offer = rng.integers(0, len(OFFER_VALUES), size=len(features))
    features[:, 0] = OFFER_VALUES[offer]
    features[rng.random(len(features)) < 0.1, 2] = np.nan
    features[rng.random(len(features)) < 0.2, 3] = 0.0
    target = (
        np.nan_to_num(features[:, 0], nan=-2.0) * 2
        + np.nan_to_num(features[:, 2])
        + (features[:, 3] == 0)
        + rng.normal(scale=0.1, size=len(features))
    )
    settings = {
        "objective": "regression",
        "num_leaves": 7,
        "min_data_in_leaf": 5,
        "verbosity": -1,
        "num_threads": 1,
        "seed": seed,
        **params,
    }
    return lgb.train(settings, lgb.Dataset(features, target), num_boost_round=ROUNDS)


def _leaves(booster: lgb.Booster) -> int:
    return sum(tree["num_leaves"] for tree in booster.dump_model()["tree_info"])


def _rows(seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Rows to score, column 0 holding the value of each row's offer."""
    rng = np.random.default_rng(seed)
    item = rng.integers(0, len(OFFER_VALUES), size=2_000)
    rows = rng.normal(size=(len(item), 4))
    rows[:, 0] = OFFER_VALUES[item]
    rows[rng.random(len(item)) < 0.1, 2] = np.nan
    rows[rng.random(len(item)) < 0.2, 3] = 0.0
    return rows, item


@pytest.mark.parametrize(
    "params",
    [{}, {"zero_as_missing": True}, {"use_missing": False}],
    ids=["nan-missing", "zero-missing", "no-missing"],
)
def test_specialised_trees_give_the_boosters_scores_bit_for_bit(params):
    booster = _booster(params)
    rows, item = _rows()

    trees = specialised_trees(booster, ROUNDS, {0: OFFER_VALUES}, len(OFFER_VALUES))

    assert trees is not None
    assert all(_leaves(part) < _leaves(booster) for part in trees.boosters)
    expected = booster.predict(rows, num_iteration=ROUNDS)
    np.testing.assert_array_equal(predict_by_offer(trees, rows, item), expected)


def test_specialised_trees_keep_only_the_first_iterations():
    booster = _booster({})
    rows, item = _rows()

    trees = specialised_trees(booster, 10, {0: OFFER_VALUES}, len(OFFER_VALUES))

    assert trees is not None
    expected = booster.predict(rows, num_iteration=10)
    np.testing.assert_array_equal(predict_by_offer(trees, rows, item), expected)


def test_offers_with_the_same_decisions_share_a_booster():
    booster = _booster({})
    values = np.array([0.5, 0.5, 2.0])

    trees = specialised_trees(booster, ROUNDS, {0: values}, len(values))

    assert trees is not None
    assert trees.group[0] == trees.group[1]
    assert len(trees.boosters) <= 2


def test_no_specialisation_when_no_split_reads_a_constant():
    booster = _booster({})
    never_split = 9

    assert specialised_trees(booster, ROUNDS, {}, len(OFFER_VALUES)) is None
    assert (
        specialised_trees(
            booster, ROUNDS, {never_split: OFFER_VALUES}, len(OFFER_VALUES)
        )
        is None
    )


def test_redeemed_flags_read_cells_as_the_per_card_rules_do():
    offer_ids = np.array(["o1", "o2", "o3", "7"], dtype=object)
    cells = pd.Series(
        [
            ["o1", "o3"],
            "o2",
            None,
            np.nan,
            np.array(["o3", "unknown"]),
            [],
            ("o2", "o2"),
            [7],
        ],
        dtype=object,
    )

    flags = _redeemed_matrix(cells, offer_ids).toarray() > 0

    expected = np.array(
        [[offer in redeemed_ids(cell) for offer in offer_ids] for cell in cells]
    )
    np.testing.assert_array_equal(flags, expected)

"""Needs model and its baselines on synthetic card holders with known propensities."""

from __future__ import annotations

import pickle

import numpy as np
import pandas as pd
import pytest
from sklearn.base import clone

from features.errors import InputError, NotReadyError
from training.baselines import CategoryPriorBaseline, LogisticNeedsBaseline
from training.needs import NeedsModel, split_for_calibration
from training.needs_metrics import expected_calibration_error, roc_auc

NEEDS = ["study_in_taiwan", "business_networking", "senior_return_visits"]


def synthetic_needs(
    n: int, seed: int = 0
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Card holder features, sampled need labels and the true propensities."""
    rng = np.random.default_rng(seed)
    age = rng.integers(16, 85, n).astype(float)
    visits = rng.poisson(1.5, n).astype(float)
    post = rng.choice(["tokyo", "la", "paris"], n)
    X = pd.DataFrame(
        {
            "card_key": [f"k{i:05d}" for i in range(n)],
            "event_timestamp": pd.Timestamp("2026-01-01", tz="UTC")
            + pd.to_timedelta(rng.integers(0, 365, n), "D"),
            "age": age,
            "service_visits_90d": visits,
            "post_id": post,
        }
    )
    logits = {
        "study_in_taiwan": 2.0 - 0.12 * (age - 16),
        "business_networking": -1.5 + 0.8 * (post == "la") + 0.4 * visits,
        "senior_return_visits": -6.0 + 0.09 * age,
    }
    truth = pd.DataFrame(
        {need: 1 / (1 + np.exp(-logit)) for need, logit in logits.items()}
    )
    labels = (rng.random(truth.shape) < truth.to_numpy()).astype(int)
    return X, pd.DataFrame(labels, columns=NEEDS), truth


@pytest.fixture(scope="module")
def data() -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    return synthetic_needs(3000)


@pytest.fixture(scope="module")
def fitted(data: tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]) -> NeedsModel:
    X, Y, _ = data
    return NeedsModel(n_estimators=60, num_leaves=15).fit(X.iloc[:2000], Y.iloc[:2000])


def test_propensities_have_one_column_per_need_and_the_same_index(
    fitted: NeedsModel, data: tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]
) -> None:
    X = data[0].iloc[2000:]

    scores = fitted.predict_proba(X)

    assert list(scores.columns) == NEEDS
    assert scores.index.equals(X.index)
    assert ((scores >= 0) & (scores <= 1)).all().all()
    assert fitted.needs_ == NEEDS


def test_keys_and_timestamps_are_never_features(fitted: NeedsModel) -> None:
    assert fitted.feature_names_ == ["age", "service_visits_90d", "post_id"]


def test_reordered_columns_give_the_same_scores(
    fitted: NeedsModel, data: tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]
) -> None:
    X = data[0].iloc[2000:2100]
    reordered = X[list(reversed(X.columns))].assign(unused=1.0)

    pd.testing.assert_frame_equal(
        fitted.predict_proba(X), fitted.predict_proba(reordered)
    )


def test_missing_feature_is_refused_by_name(
    fitted: NeedsModel, data: tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]
) -> None:
    with pytest.raises(InputError, match="missing \\['age'\\]"):
        fitted.predict_proba(data[0].drop(columns="age"))


def test_unseen_post_scores_like_a_missing_post(
    fitted: NeedsModel, data: tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]
) -> None:
    X = data[0].iloc[:5]

    unseen = fitted.predict_proba(X.assign(post_id="reykjavik"))
    missing = fitted.predict_proba(X.assign(post_id=None))

    assert np.isfinite(unseen.to_numpy()).all()
    pd.testing.assert_frame_equal(unseen, missing)


def test_single_row_scores_equal_batch_scores(
    fitted: NeedsModel, data: tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]
) -> None:
    X = data[0].iloc[2000:2100].copy()
    X.loc[X.index[:3], "post_id"] = ["reykjavik", None, np.nan]

    batch = fitted.predict_proba(X)
    one_by_one = pd.concat([fitted.predict_proba(X.iloc[[i]]) for i in range(len(X))])

    pd.testing.assert_frame_equal(batch, one_by_one)


def test_same_seed_same_model(
    data: tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame],
) -> None:
    X, Y, _ = data
    params = {"n_estimators": 20, "feature_fraction": 0.7, "random_state": 7}

    first = NeedsModel(**params).fit(X, Y).predict_proba(X)
    second = NeedsModel(**params).fit(X, Y).predict_proba(X)

    pd.testing.assert_frame_equal(first, second)


def test_calibration_brings_propensities_to_observed_rates() -> None:
    X, Y, _ = synthetic_needs(6000, seed=1)
    fit, calib, holdout = slice(0, 3000), slice(3000, 4500), slice(4500, 6000)
    params = {"n_estimators": 300, "num_leaves": 63, "min_child_samples": 2}

    raw = NeedsModel(calibration="none", **params).fit(
        X.iloc[fit], Y.iloc[fit], X.iloc[calib], Y.iloc[calib]
    )
    calibrated = NeedsModel(calibration="isotonic", **params).fit(
        X.iloc[fit], Y.iloc[fit], X.iloc[calib], Y.iloc[calib]
    )
    platt = NeedsModel(calibration="sigmoid", **params).fit(
        X.iloc[fit], Y.iloc[fit], X.iloc[calib], Y.iloc[calib]
    )

    def ece(model: NeedsModel) -> float:
        scores = model.predict_proba(X.iloc[holdout])
        return float(
            np.mean(
                [
                    expected_calibration_error(Y.iloc[holdout][n], scores[n])
                    for n in NEEDS
                ]
            )
        )

    assert ece(calibrated) < ece(raw)
    assert ece(platt) < ece(raw)
    assert ece(calibrated) < 0.05


def test_model_ranks_close_to_the_true_propensities(
    fitted: NeedsModel, data: tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]
) -> None:
    X, Y, truth = data
    holdout = slice(2000, 3000)

    scores = fitted.predict_proba(X.iloc[holdout])

    for need in NEEDS:
        model_auc = roc_auc(Y.iloc[holdout][need], scores[need])
        oracle_auc = roc_auc(Y.iloc[holdout][need], truth.iloc[holdout][need])
        assert model_auc > oracle_auc - 0.05, need


def test_calibration_set_is_the_latest_rows_by_time(
    data: tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame],
) -> None:
    X, Y, _ = data

    X_fit, Y_fit, X_calib, Y_calib = split_for_calibration(
        X, Y, 0.25, "event_timestamp"
    )

    assert len(X_calib) == 750 and len(X_fit) == 2250
    assert X_fit["event_timestamp"].max() <= X_calib["event_timestamp"].min()
    assert Y_calib.index.equals(X_calib.index)
    assert Y_fit.index.equals(X_fit.index)


def test_time_column_orders_the_calibration_split_but_is_not_a_feature(
    data: tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame],
) -> None:
    X, Y, _ = data
    X = X.assign(cutoff_day=np.arange(len(X)) % 30)

    model = NeedsModel(n_estimators=5, time_column="cutoff_day").fit(X, Y)

    assert "cutoff_day" not in model.feature_names_


def test_a_need_with_one_class_scores_its_base_rate(
    data: tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame],
) -> None:
    X, Y, _ = data
    Y = Y.assign(jobs_in_taiwan=0)

    scores = NeedsModel(n_estimators=5).fit(X, Y).predict_proba(X.iloc[:3])

    assert scores["jobs_in_taiwan"].tolist() == [0.0, 0.0, 0.0]


@pytest.mark.parametrize(
    ("params", "name"),
    [
        ({"n_estimators": 0}, "n_estimators"),
        ({"calibration": "beta"}, "calibration"),
        ({"calibration_fraction": 1.0}, "calibration_fraction"),
    ],
    ids=["no-trees", "unknown-calibration", "all-rows-for-calibration"],
)
def test_bad_parameters_are_refused_at_fit(
    params: dict[str, object],
    name: str,
    data: tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame],
) -> None:
    X, Y, _ = data
    with pytest.raises(InputError, match=name):
        NeedsModel(**params).fit(X, Y)


def test_bad_labels_are_refused(
    data: tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame],
) -> None:
    X, Y, _ = data

    with pytest.raises(InputError, match="0 or 1"):
        NeedsModel().fit(X, Y.assign(study_in_taiwan=2))
    with pytest.raises(InputError, match="same index"):
        NeedsModel().fit(X, Y.iloc[:10])
    with pytest.raises(InputError, match="both X_calib and Y_calib"):
        NeedsModel().fit(X, Y, X_calib=X)


def test_unfitted_model_is_not_ready(
    data: tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame],
) -> None:
    with pytest.raises(NotReadyError, match="call fit"):
        NeedsModel().predict_proba(data[0])


def test_feature_importances_per_need_sum_to_one(fitted: NeedsModel) -> None:
    table = fitted.feature_importances()

    assert list(table.index) == fitted.feature_names_
    assert list(table.columns) == NEEDS
    np.testing.assert_allclose(table.sum().to_numpy(), 1.0)
    assert table.loc["age", "study_in_taiwan"] > table.loc["post_id", "study_in_taiwan"]


def test_model_survives_pickling_and_cloning(
    fitted: NeedsModel, data: tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]
) -> None:
    X = data[0].iloc[:20]

    restored = pickle.loads(pickle.dumps(fitted))
    fresh = clone(fitted)

    pd.testing.assert_frame_equal(restored.predict_proba(X), fitted.predict_proba(X))
    assert fresh.get_params() == fitted.get_params()
    assert not hasattr(fresh, "boosters_")


def test_category_prior_scores_the_post_rate_and_falls_back_to_global() -> None:
    X = pd.DataFrame({"post_id": ["tokyo", "tokyo", "la", "la", "la", "paris"]})
    Y = pd.DataFrame({"jobs_in_taiwan": [1, 0, 1, 1, 1, 0]})

    baseline = CategoryPriorBaseline(min_rows=2).fit(X, Y)
    scores = baseline.predict_proba(pd.DataFrame({"post_id": ["la", "tokyo", "paris"]}))

    assert scores["jobs_in_taiwan"].tolist() == pytest.approx([1.0, 0.5, 4 / 6])


def test_category_prior_needs_the_post_column() -> None:
    with pytest.raises(InputError, match="'post_id'"):
        CategoryPriorBaseline().fit(
            pd.DataFrame({"age": [1]}), pd.DataFrame({"a": [1]})
        )


def test_logistic_baseline_handles_missing_and_unseen_values(
    data: tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame],
) -> None:
    X, Y, _ = data
    X = X.copy()
    X.loc[X.index[:50], "age"] = np.nan

    baseline = LogisticNeedsBaseline().fit(X.iloc[:2000], Y.iloc[:2000])
    scores = baseline.predict_proba(X.iloc[2000:].assign(post_id="reykjavik"))

    assert list(scores.columns) == NEEDS
    assert np.isfinite(scores.to_numpy()).all()
    assert baseline.feature_names_ == ["age", "service_visits_90d", "post_id"]


def test_needs_model_beats_the_baselines_on_a_nonlinear_need() -> None:
    X, Y, _ = synthetic_needs(4000, seed=2)
    age = X["age"]
    Y["youth_programmes"] = ((age > 25) & (age < 40)).astype(int)
    train, holdout = slice(0, 3000), slice(3000, 4000)

    models = {
        "needs": NeedsModel(n_estimators=50),
        "logistic": LogisticNeedsBaseline(),
        "prior": CategoryPriorBaseline(),
    }
    aucs = {
        name: roc_auc(
            Y.iloc[holdout]["youth_programmes"],
            model.fit(X.iloc[train], Y.iloc[train]).predict_proba(X.iloc[holdout])[
                "youth_programmes"
            ],
        )
        for name, model in models.items()
    }

    assert aucs["needs"] > aucs["logistic"] > 0.0
    assert aucs["needs"] > aucs["prior"]


def test_early_stopping_keeps_only_the_useful_trees(
    data: tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame],
) -> None:
    X, Y, _ = data
    noise = Y.assign(study_in_taiwan=np.random.default_rng(5).integers(0, 2, len(Y)))

    stopped = NeedsModel(n_estimators=300, early_stopping_rounds=10).fit(X, noise)
    full = NeedsModel(n_estimators=30).fit(X, noise)

    assert stopped.n_trees_[0] < 300
    assert full.n_trees_ == [30, 30, 30]
    assert np.isfinite(stopped.predict_proba(X.iloc[:5]).to_numpy()).all()


def test_needs_sharing_one_binned_dataset_train_the_boosters_of_separate_ones(
    data: tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    X, Y, _ = data
    Y = Y.assign(jobs_in_taiwan=0)  # a one-class need in between is skipped
    params = {"n_estimators": 15, "feature_fraction": 0.7, "min_child_samples": 30}
    shared = NeedsModel(**params).fit(X, Y)

    # The straightforward path: a fresh dataset (and fresh bins) for every need.
    def fresh(
        model: NeedsModel, matrix: np.ndarray, y: np.ndarray, binned: dict
    ) -> object:
        return model._dataset(matrix, y)

    monkeypatch.setattr(NeedsModel, "_labelled", fresh)
    separate = NeedsModel(**params).fit(X, Y)

    for one, other in zip(shared.boosters_, separate.boosters_, strict=True):
        if one is None or other is None:
            assert one is None and other is None
        else:
            assert one.model_to_string() == other.model_to_string()
    pd.testing.assert_frame_equal(shared.predict_proba(X), separate.predict_proba(X))

"""Needs metrics pinned on small worked examples."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pandas as pd
import pytest

from features.errors import InputError
from training.needs_metrics import (
    MACRO,
    REPORT_COLUMNS,
    SingleClassWarning,
    brier,
    calibration_bins,
    expected_calibration_error,
    lift_top_decile,
    needs_report,
    pr_auc,
    roc_auc,
)

Y_TRUE = [0, 0, 1, 1]
Y_PRED = [0.1, 0.4, 0.35, 0.8]


def test_roc_auc_counts_correctly_ordered_pairs() -> None:
    # Pairs (positive, negative): (0.35, 0.1) ok, (0.35, 0.4) wrong, 0.8 beats both.
    assert roc_auc(Y_TRUE, Y_PRED) == pytest.approx(3 / 4)


def test_pr_auc_is_average_precision() -> None:
    # Ranked: 0.8 (hit, precision 1), 0.4 (miss), 0.35 (hit, precision 2/3).
    assert pr_auc(Y_TRUE, Y_PRED) == pytest.approx((1 + 2 / 3) / 2)


def test_brier_is_mean_squared_gap() -> None:
    expected = (0.1**2 + 0.4**2 + 0.65**2 + 0.2**2) / 4
    assert brier(Y_TRUE, Y_PRED) == pytest.approx(expected)


def test_ece_with_equal_width_bins() -> None:
    # Two bins: [0, 0.5) holds 0.1, 0.4, 0.35 (rate 1/3, mean 0.85/3), [0.5, 1]
    # holds 0.8 (rate 1).
    expected = 3 / 4 * abs(1 / 3 - 0.85 / 3) + 1 / 4 * abs(1 - 0.8)
    ece = expected_calibration_error(Y_TRUE, Y_PRED, n_bins=2, strategy="uniform")
    assert ece == pytest.approx(expected)


def test_ece_with_equal_mass_bins() -> None:
    # Sorted: 0.1 (0), 0.35 (1) | 0.4 (0), 0.8 (1): each bin has rate 1/2.
    expected = 0.5 * abs(0.5 - 0.225) + 0.5 * abs(0.5 - 0.6)
    ece = expected_calibration_error(Y_TRUE, Y_PRED, n_bins=2, strategy="quantile")
    assert ece == pytest.approx(expected)


def test_perfectly_calibrated_bins_have_zero_ece() -> None:
    y_true = [0, 0, 0, 1] * 5 + [1, 1, 1, 0] * 5
    y_pred = [0.25] * 20 + [0.75] * 20
    assert expected_calibration_error(y_true, y_pred, n_bins=10) == pytest.approx(0)


def test_propensity_of_one_falls_in_the_last_bin() -> None:
    table = calibration_bins([1, 0], [1.0, 0.0], n_bins=4)
    assert table["bin"].tolist() == [0, 3]


def test_lift_in_the_top_decile() -> None:
    # 20 rows, 4 positives (rate 0.2); top 2 rows hold 1 positive (rate 0.5).
    y_true = [1, 0] + [1, 1, 1] + [0] * 15
    y_pred = list(np.linspace(1.0, 0.05, 20))
    assert lift_top_decile(y_true, y_pred) == pytest.approx(0.5 / 0.2)


def test_single_class_gives_nan_with_a_warning() -> None:
    with pytest.warns(SingleClassWarning, match="single class"):
        value = roc_auc([0, 0, 0], [0.1, 0.2, 0.3])
    assert math.isnan(value)


def test_report_has_needs_and_macro_rows() -> None:
    y_true = pd.DataFrame({"a": Y_TRUE, "b": [1, 0, 1, 0]})
    y_pred = pd.DataFrame({"b": [0.9, 0.1, 0.6, 0.4], "a": Y_PRED, "c": 0.5})

    report = needs_report(y_true, y_pred, n_bins=2)

    assert list(report.index) == ["a", "b", MACRO]
    assert list(report.columns) == list(REPORT_COLUMNS)
    assert report.loc["a", "roc_auc"] == pytest.approx(0.75)
    assert report.loc["b", "roc_auc"] == pytest.approx(1.0)
    assert report.loc[MACRO, "roc_auc"] == pytest.approx(0.875)


def test_report_survives_a_single_class_need() -> None:
    y_true = pd.DataFrame({"a": Y_TRUE, "rare": [0, 0, 0, 0]})
    y_pred = pd.DataFrame({"a": Y_PRED, "rare": [0.1, 0.0, 0.2, 0.1]})

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        report = needs_report(y_true, y_pred)

    assert any("'rare'" in str(w.message) for w in caught)
    assert math.isnan(report.loc["rare", "roc_auc"])
    assert report.loc["rare", "brier"] == pytest.approx(0.015)
    assert report.loc[MACRO, "roc_auc"] == pytest.approx(0.75)


def test_report_refuses_missing_needs_and_misaligned_rows() -> None:
    y_true = pd.DataFrame({"a": Y_TRUE, "b": Y_TRUE})

    with pytest.raises(InputError, match="missing \\['b'\\]"):
        needs_report(y_true, pd.DataFrame({"a": Y_PRED}))
    with pytest.raises(InputError, match="index"):
        needs_report(
            y_true, pd.DataFrame({"a": Y_PRED, "b": Y_PRED}, index=[9, 8, 7, 6])
        )

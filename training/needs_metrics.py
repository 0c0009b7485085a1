"""How good are need propensities: ranking, calibration and lift, per need.

Every metric takes the true 0/1 outcomes of one need and the propensities a model
gave, and :func:`needs_report` puts them side by side for all needs plus their
macro average (the unweighted mean over needs that have a value).

Definitions:

- ``roc_auc``: area under the ROC curve (probability that a random user of the
  service is scored above a random non-user; ties count half).
- ``pr_auc``: average precision, the step-wise area under the precision-recall
  curve, as in scikit-learn's ``average_precision_score``.
- ``brier``: mean squared difference between propensity and outcome.
- ``ece``: expected calibration error, ``sum_b (n_b / n) * |rate_b - mean_b|`` over
  bins of propensity. ``uniform`` bins split [0, 1] into equal widths (bin ``i``
  holds ``i/B <= p < (i+1)/B``, the last bin includes 1); ``quantile`` bins hold
  (almost) equal numbers of rows: rows sorted by propensity (stable) are cut into
  ``B`` consecutive runs of sizes differing by at most one. Empty bins add nothing.
- ``lift_top_decile``: outcome rate among the top 10 % of rows by propensity
  (``ceil(n / 10)`` rows, ties broken by row order) divided by the overall rate.

ROC-AUC, PR-AUC and lift need both outcomes present; a need whose holdout has a
single class gets NaN for them, with a :class:`SingleClassWarning`.
"""

from __future__ import annotations

import logging
import math
import warnings
from collections.abc import Callable

import numpy as np
import pandas as pd
from sklearn.metrics import average_precision_score, roc_auc_score

from features.errors import InputError

logger = logging.getLogger(__name__)

BIN_STRATEGIES = ("uniform", "quantile")
MACRO = "macro"
METRIC_COLUMNS = ("roc_auc", "pr_auc", "brier", "ece", "lift_top_decile")
REPORT_COLUMNS = (*METRIC_COLUMNS, "prevalence", "mean_propensity", "n")


class SingleClassWarning(UserWarning):
    """A need's holdout has only users or only non-users of the service.

    Ranking metrics are undefined there; widen the holdout window or drop the need
    from the report.
    """


def _as_arrays(y_true: object, y_pred: object) -> tuple[np.ndarray, np.ndarray]:
    truth = np.asarray(y_true, dtype=np.float64).ravel()
    scores = np.asarray(y_pred, dtype=np.float64).ravel()
    if truth.shape != scores.shape:
        raise InputError(
            f"expected outcomes and propensities of the same length, got "
            f"{truth.size} and {scores.size}; align them by card first"
        )
    if np.isnan(scores).any() or np.isnan(truth).any():
        raise InputError(
            "expected no missing outcomes or propensities, got NaN; drop or fill "
            "those rows before scoring"
        )
    return truth, scores


def _has_both_classes(truth: np.ndarray, metric: str) -> bool:
    if truth.size and 0 < truth.sum() < truth.size:
        return True
    warnings.warn(
        f"{metric} needs users and non-users of the service, got a single class "
        f"in {truth.size} rows; reporting NaN",
        SingleClassWarning,
        stacklevel=3,
    )
    return False


def roc_auc(y_true: object, y_pred: object) -> float:
    """Area under the ROC curve; NaN (with a warning) for a single class."""
    truth, scores = _as_arrays(y_true, y_pred)
    if not _has_both_classes(truth, "roc_auc"):
        return math.nan
    return float(roc_auc_score(truth, scores))


def pr_auc(y_true: object, y_pred: object) -> float:
    """Average precision; NaN (with a warning) for a single class."""
    truth, scores = _as_arrays(y_true, y_pred)
    if not _has_both_classes(truth, "pr_auc"):
        return math.nan
    return float(average_precision_score(truth, scores))


def brier(y_true: object, y_pred: object) -> float:
    """Mean squared difference between propensity and outcome."""
    truth, scores = _as_arrays(y_true, y_pred)
    if truth.size == 0:
        return math.nan
    return float(np.mean((scores - truth) ** 2))


def bin_ids(y_pred: np.ndarray, n_bins: int, strategy: str) -> np.ndarray:
    """The bin of each propensity under the given strategy (see module doc)."""
    if n_bins < 1 or strategy not in BIN_STRATEGIES:
        raise InputError(
            f"expected n_bins >= 1 and strategy in {BIN_STRATEGIES}, got "
            f"{n_bins} and {strategy!r}; pick for example 10 and 'uniform'"
        )
    if strategy == "uniform":
        return np.minimum((y_pred * n_bins).astype(np.int64), n_bins - 1).clip(0)

    order = np.argsort(y_pred, kind="stable")
    ids = np.empty(y_pred.size, dtype=np.int64)
    ids[order] = (np.arange(y_pred.size) * n_bins) // max(y_pred.size, 1)
    return ids


def calibration_bins(
    y_true: object, y_pred: object, n_bins: int = 10, strategy: str = "uniform"
) -> pd.DataFrame:
    """Reliability table: mean propensity against observed rate per bin.

    Args:
        y_true: 0/1 outcomes of one need.
        y_pred: propensities of the same rows.
        n_bins: number of bins.
        strategy: ``"uniform"`` (equal width) or ``"quantile"`` (equal mass).

    Returns:
        One row per non-empty bin with columns ``bin``, ``count``,
        ``mean_propensity`` and ``observed_rate``.
    """
    truth, scores = _as_arrays(y_true, y_pred)
    frame = pd.DataFrame(
        {"bin": bin_ids(scores, n_bins, strategy), "p": scores, "y": truth}
    )
    table = frame.groupby("bin", sort=True).agg(
        count=("y", "size"), mean_propensity=("p", "mean"), observed_rate=("y", "mean")
    )
    return table.reset_index()


def expected_calibration_error(
    y_true: object, y_pred: object, n_bins: int = 10, strategy: str = "uniform"
) -> float:
    """Count-weighted mean gap between observed rate and mean propensity."""
    table = calibration_bins(y_true, y_pred, n_bins, strategy)
    if table.empty:
        return math.nan
    gaps = (table["observed_rate"] - table["mean_propensity"]).abs()
    return float((gaps * table["count"]).sum() / table["count"].sum())


def lift_top_decile(y_true: object, y_pred: object) -> float:
    """Outcome rate in the top 10 % by propensity over the overall rate."""
    truth, scores = _as_arrays(y_true, y_pred)
    if not _has_both_classes(truth, "lift_top_decile"):
        return math.nan
    n_top = math.ceil(truth.size / 10)
    top = np.argsort(-scores, kind="stable")[:n_top]
    return float(truth[top].mean() / truth.mean())


def need_metrics(
    y_true: object, y_pred: object, n_bins: int = 10, strategy: str = "uniform"
) -> dict[str, float]:
    """Every report metric for one need."""
    truth, scores = _as_arrays(y_true, y_pred)
    metrics: dict[str, Callable[[], float]] = {
        "roc_auc": lambda: roc_auc(truth, scores),
        "pr_auc": lambda: pr_auc(truth, scores),
        "brier": lambda: brier(truth, scores),
        "ece": lambda: expected_calibration_error(truth, scores, n_bins, strategy),
        "lift_top_decile": lambda: lift_top_decile(truth, scores),
    }
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", SingleClassWarning)
        values = {name: compute() for name, compute in metrics.items()}
    if caught:
        warnings.warn(
            f"single class in {truth.size} holdout rows: roc_auc, pr_auc and "
            "lift_top_decile are NaN",
            SingleClassWarning,
            stacklevel=2,
        )
    values["prevalence"] = float(truth.mean()) if truth.size else math.nan
    values["mean_propensity"] = float(scores.mean()) if scores.size else math.nan
    values["n"] = float(truth.size)
    return values


def needs_report(
    y_true: pd.DataFrame,
    y_pred: pd.DataFrame,
    n_bins: int = 10,
    strategy: str = "uniform",
) -> pd.DataFrame:
    """Metrics per need and their macro average.

    Args:
        y_true: 0/1 outcomes, one column per need id.
        y_pred: propensities with (at least) the same columns and the same index.
        n_bins: bins of the expected calibration error.
        strategy: ``"uniform"`` or ``"quantile"`` bins for the calibration error.

    Returns:
        Rows are the need ids of ``y_true`` then ``"macro"``; columns are
        :data:`REPORT_COLUMNS`. The macro row is the mean over needs, ignoring
        NaN; its ``n`` is the number of rows per need.
    """
    missing = [need for need in y_true.columns if need not in y_pred.columns]
    if missing:
        raise InputError(
            f"expected propensities for every need in the outcomes, missing "
            f"{missing}; score all needs or drop them from the outcomes"
        )
    if not y_pred.index.equals(y_true.index):
        raise InputError(
            f"expected propensities with the outcomes' index ({len(y_true)} rows), "
            f"got a different index ({len(y_pred)} rows); reindex them first"
        )

    rows = {}
    for need in y_true.columns:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", SingleClassWarning)
            rows[need] = need_metrics(y_true[need], y_pred[need], n_bins, strategy)
        if caught:
            warnings.warn(
                f"need {need!r} has a single class in the holdout; its roc_auc, "
                "pr_auc and lift_top_decile are NaN",
                SingleClassWarning,
                stacklevel=2,
            )

    report = pd.DataFrame.from_dict(rows, orient="index", columns=list(REPORT_COLUMNS))
    report.loc[MACRO] = report.mean(axis=0, skipna=True)
    report.index.name = "need_id"
    return report

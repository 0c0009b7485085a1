"""Figures a data scientist looks at after a training run (matplotlib, no GUI).

Each function draws one figure from plain frames and saves it as PNG; nothing here
reads MLflow or the warehouse. :func:`write_all` writes the whole set into a folder
that the pipeline logs as run artifacts.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from features.schema import NEED_CATEGORIES

logger = logging.getLogger(__name__)

DPI = 110
CALIBRATION_BINS = 10
TOP_FEATURES = 20


def calibration_curves(
    outcomes: pd.DataFrame, propensities: pd.DataFrame, path: Path
) -> Path:
    """Observed rate against mean propensity per decile of propensity, per need."""
    needs = list(outcomes.columns)
    columns = 4
    rows = int(np.ceil(len(needs) / columns))
    figure = Figure(figsize=(12, 3 * rows))
    axes = figure.subplots(rows, columns, squeeze=False)
    for axis, need in zip(axes.ravel(), needs, strict=False):
        predicted = propensities[need].to_numpy()
        observed = outcomes[need].to_numpy()
        edges = np.linspace(0, max(predicted.max(), 1e-9), CALIBRATION_BINS + 1)
        bins = np.clip(np.digitize(predicted, edges[1:-1]), 0, CALIBRATION_BINS - 1)
        frame = pd.DataFrame({"bin": bins, "p": predicted, "y": observed})
        means = frame.groupby("bin").mean()
        top = max(means["p"].max(), means["y"].max(), 0.05)
        axis.plot([0, top], [0, top], linestyle=":", color="grey")
        axis.plot(means["p"], means["y"], marker="o")
        axis.set_title(NEED_CATEGORIES.get(need, need), fontsize=9)
        axis.set_xlabel("mean propensity", fontsize=8)
        axis.set_ylabel("observed rate", fontsize=8)
    for axis in axes.ravel()[len(needs) :]:
        axis.set_visible(False)
    figure.suptitle("Calibration on the holdout")
    return _save(figure, path)


def cumulative_gain(
    outcomes: pd.DataFrame, propensities: pd.DataFrame, path: Path
) -> Path:
    """Share of users reached against share of card holders contacted, per need."""
    figure = Figure(figsize=(7, 5))
    axis = figure.subplots()
    for need in outcomes.columns:
        order = np.argsort(-propensities[need].to_numpy(), kind="stable")
        hits = outcomes[need].to_numpy()[order]
        if hits.sum() == 0:
            continue
        reached = np.concatenate([[0], np.cumsum(hits) / hits.sum()])
        contacted = np.linspace(0, 1, len(reached))
        axis.plot(contacted, reached, linewidth=1, label=need)
    axis.plot([0, 1], [0, 1], linestyle=":", color="grey", label="random")
    axis.set_xlabel("share of card holders contacted (by propensity)")
    axis.set_ylabel("share of the need's users reached")
    axis.set_title("Cumulative gain per need")
    axis.legend(fontsize=6, ncol=2)
    return _save(figure, path)


def feature_importance(importance: pd.Series, title: str, path: Path) -> Path:
    """The largest feature importances as horizontal bars."""
    top = importance.sort_values(ascending=False).head(TOP_FEATURES)[::-1]
    figure = Figure(figsize=(7, 0.3 * len(top) + 1.5))
    axis = figure.subplots()
    axis.barh(top.index.astype(str), top.to_numpy())
    axis.set_xlabel("share of gain")
    axis.set_title(title)
    return _save(figure, path)


def metric_by_need(needs_table: pd.DataFrame, metric: str, path: Path) -> Path:
    """One metric per need for every scorer, side by side."""
    frame = needs_table[needs_table["metric"] == metric]
    wide = frame.pivot_table(index="need_id", columns="scorer", values="value")
    figure = Figure(figsize=(10, 5))
    axis = figure.subplots()
    wide.plot.bar(ax=axis, width=0.8)
    axis.set_ylabel(metric)
    axis.set_title(f"Needs {metric} by category: model, baselines, oracle")
    axis.tick_params(axis="x", labelsize=7, labelrotation=60)
    return _save(figure, path)


def offers_comparison(offers_table: pd.DataFrame, k: int, path: Path) -> Path:
    """Offer ranking metrics at k for the model, baselines and the oracle."""
    frame = offers_table[offers_table["metric"] != "users"]
    wide = frame.pivot_table(index="metric", columns="scorer", values="value")
    figure = Figure(figsize=(9, 5))
    axis = figure.subplots()
    wide.plot.bar(ax=axis, width=0.8)
    axis.set_ylabel(f"value at k={k}")
    axis.set_title("Offers on the holdout after business rules")
    axis.tick_params(axis="x", labelrotation=0)
    return _save(figure, path)


def write_all(
    folder: Path,
    *,
    outcomes: pd.DataFrame,
    propensities: pd.DataFrame,
    needs_table: pd.DataFrame,
    offers_table: pd.DataFrame,
    needs_importance: pd.DataFrame,
    offers_importance: pd.Series,
    k: int,
) -> list[Path]:
    """Write every figure of a training run into ``folder``.

    Returns:
        The written PNG files.
    """
    mean_importance = needs_importance.mean(axis=1)
    offers_share = offers_importance / max(float(offers_importance.sum()), 1e-12)
    return [
        calibration_curves(outcomes, propensities, folder / "needs_calibration.png"),
        cumulative_gain(outcomes, propensities, folder / "needs_gain.png"),
        feature_importance(
            mean_importance,
            "Needs model: feature importance (mean over needs)",
            folder / "needs_feature_importance.png",
        ),
        metric_by_need(needs_table, "roc_auc", folder / "needs_roc_auc_by_need.png"),
        feature_importance(
            offers_share,
            "Offer re-ranker: feature importance",
            folder / "offers_feature_importance.png",
        ),
        offers_comparison(offers_table, k, folder / "offers_vs_baselines.png"),
    ]


def _save(figure: Figure, path: Path) -> Path:
    figure.tight_layout()
    figure.savefig(path, dpi=DPI)
    logger.debug("wrote %s", path)
    return path

"""Baselines the needs model must beat, with the same fit / predict_proba API.

- :class:`CategoryPriorBaseline`: each need's rate among card holders of the same
  post in the training window, falling back to the global rate.
- :class:`LogisticNeedsBaseline`: one logistic regression per need on the same
  features, with median-imputed standardised numbers and one-hot categories.
"""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator
from sklearn.compose import ColumnTransformer
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from features.errors import InputError, NotReadyError
from features.schema import POST_ID
from training.needs import (
    DEFAULT_DROP_COLUMNS,
    feature_columns,
    is_categorical,
    validate_labels,
)

logger = logging.getLogger(__name__)


def _check_fitted(model: BaseEstimator, attribute: str) -> None:
    if not hasattr(model, attribute):
        raise NotReadyError(
            f"expected a fitted {type(model).__name__}, got one that was never "
            "fitted; call fit(X, Y) first"
        )


class CategoryPriorBaseline(BaseEstimator):
    """Rate of each need among card holders of the same post.

    Args:
        group_column: the column that names a card holder's post.
        min_rows: a post with fewer training rows than this scores the global rate.
        prior_weight: pseudo-rows of the global rate mixed into each post's rate
            (0 keeps the plain post rate).

    Attributes:
        needs_: need ids, in label order.
        global_rates_: each need's rate over all training rows.
        group_rates_: rows are posts, columns are needs.
    """

    def __init__(
        self, group_column: str = POST_ID, min_rows: int = 1, prior_weight: float = 0.0
    ) -> None:
        self.group_column = group_column
        self.min_rows = min_rows
        self.prior_weight = prior_weight

    def fit(self, X: pd.DataFrame, Y: pd.DataFrame) -> CategoryPriorBaseline:
        """Count each need's rate per post and overall.

        Args:
            X: features holding :attr:`group_column`.
            Y: one 0/1 column per need, same index as ``X``.

        Returns:
            The fitted baseline.
        """
        if self.min_rows < 1 or self.prior_weight < 0:
            raise InputError(
                f"expected min_rows >= 1 and prior_weight >= 0, got {self.min_rows} "
                f"and {self.prior_weight}; use for example 1 and 0.0"
            )
        self._check_group_column(X)
        validate_labels(Y, X)

        self.needs_ = [str(need) for need in Y.columns]
        self.global_rates_ = Y.mean().astype(np.float64)
        groups = X[self.group_column].astype(object).to_numpy()
        sums = Y.groupby(groups).sum().astype(np.float64)
        counts = Y.groupby(groups).size().astype(np.float64)
        rates = (sums + self.prior_weight * self.global_rates_).div(
            counts + self.prior_weight, axis=0
        )
        self.group_rates_ = rates.loc[counts >= self.min_rows]
        self.group_rates_.columns = self.needs_
        return self

    def predict_proba(self, X: pd.DataFrame) -> pd.DataFrame:
        """Each row's post rate per need (global rate for unknown posts).

        Returns:
            One column per need id, same index as ``X``.
        """
        _check_fitted(self, "group_rates_")
        self._check_group_column(X)
        rates = self.group_rates_.reindex(X[self.group_column].astype(object))
        filled = rates.fillna(
            pd.Series(self.global_rates_.to_numpy(), index=self.needs_)
        )
        return pd.DataFrame(filled.to_numpy(), index=X.index, columns=self.needs_)

    def _check_group_column(self, X: pd.DataFrame) -> None:
        if self.group_column not in X.columns:
            raise InputError(
                f"expected a {self.group_column!r} column for the category prior, "
                f"got {list(X.columns)[:10]}; add it or set group_column"
            )


class LogisticNeedsBaseline(BaseEstimator):
    """One logistic regression per need on the needs features.

    Args:
        C: inverse regularisation strength.
        max_iter: solver iterations at most.
        min_frequency: categories rarer than this share go to one "rare" column.
        drop_columns: columns that are never features (keys, timestamps).

    Attributes:
        needs_: need ids, in label order.
        feature_names_: feature columns.
        pipelines_: one fitted pipeline per need (``None`` when its training
            labels had a single class; that need scores its base rate).
        base_rates_: each need's training rate.
    """

    def __init__(
        self,
        C: float = 1.0,  # noqa: N803 - scikit-learn name
        max_iter: int = 1000,
        min_frequency: float = 0.001,
        drop_columns: tuple[str, ...] = DEFAULT_DROP_COLUMNS,
    ) -> None:
        self.C = C
        self.max_iter = max_iter
        self.min_frequency = min_frequency
        self.drop_columns = drop_columns

    def fit(self, X: pd.DataFrame, Y: pd.DataFrame) -> LogisticNeedsBaseline:
        """Fit the preprocessing and one regression per need.

        Returns:
            The fitted baseline.
        """
        if self.C <= 0 or self.max_iter < 1:
            raise InputError(
                f"expected C > 0 and max_iter >= 1, got {self.C} and {self.max_iter}; "
                "use for example 1.0 and 1000"
            )
        validate_labels(Y, X)
        self.feature_names_ = feature_columns(X, self.drop_columns)
        self.needs_ = [str(need) for need in Y.columns]
        self.base_rates_ = Y.mean().to_numpy(dtype=np.float64)

        features = self._features(X)
        self.pipelines_: list[Pipeline | None] = []
        for need in Y.columns:
            labels = Y[need].to_numpy()
            if np.unique(labels).size < 2:
                logger.warning(
                    "need %s has a single class; it scores its base rate", need
                )
                self.pipelines_.append(None)
                continue
            pipeline = self._pipeline(features)
            self.pipelines_.append(pipeline.fit(features, labels))
        return self

    def predict_proba(self, X: pd.DataFrame) -> pd.DataFrame:
        """Probability of every need for every row of ``X``.

        Returns:
            One column per need id, same index as ``X``.
        """
        _check_fitted(self, "pipelines_")
        missing = [name for name in self.feature_names_ if name not in X.columns]
        if missing:
            raise InputError(
                f"expected the feature columns the baseline was fitted on; missing "
                f"{missing[:10]}; pass a frame that has them"
            )
        features = self._features(X)
        out = np.empty((len(X), len(self.needs_)), dtype=np.float64)
        for position, pipeline in enumerate(self.pipelines_):
            if pipeline is None:
                out[:, position] = self.base_rates_[position]
            else:
                out[:, position] = pipeline.predict_proba(features)[:, 1]
        return pd.DataFrame(out, index=X.index, columns=self.needs_)

    def _features(self, X: pd.DataFrame) -> pd.DataFrame:
        features = X[self.feature_names_].copy()
        for name in self.feature_names_:
            if is_categorical(features[name]):
                features[name] = (
                    features[name].astype(object).where(features[name].notna(), None)
                )
            else:
                features[name] = pd.to_numeric(features[name]).astype(np.float64)
        return features

    def _pipeline(self, features: pd.DataFrame) -> Pipeline:
        categorical = [n for n in features.columns if is_categorical(features[n])]
        numeric = [n for n in features.columns if n not in categorical]
        preprocess = ColumnTransformer(
            [
                (
                    "numeric",
                    make_pipeline(SimpleImputer(strategy="median"), StandardScaler()),
                    numeric,
                ),
                (
                    "categorical",
                    make_pipeline(
                        SimpleImputer(strategy="constant", fill_value="missing"),
                        OneHotEncoder(
                            handle_unknown="infrequent_if_exist",
                            min_frequency=self.min_frequency,
                        ),
                    ),
                    categorical,
                ),
            ]
        )
        regression = LogisticRegression(C=self.C, max_iter=self.max_iter)
        return make_pipeline(preprocess, regression)

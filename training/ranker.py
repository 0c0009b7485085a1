"""LightGBM LambdaRank re-ranker over candidate (query, item) rows.

A query is whatever one ranked list belongs to (a card holder at a time, a MovieLens
user). Three LightGBM habits are guarded here:

* LightGBM reads query groups as sizes of consecutive row runs; rows that are not
  contiguous per query would silently attach candidates to the wrong query. ``fit``
  sorts rows into a canonical order (query, then label and feature values), so a
  shuffled frame trains exactly the same model as a sorted one.
* A booster scores a frame by column position; ``predict`` selects the columns by
  the names the model was trained on, so column order does not matter.
* Relevance labels above the ``label_gain`` table fail mid-training; labels are
  checked (or clipped) against ``max_label`` before LightGBM sees them.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
import pandas as pd

from features.errors import InputError

logger = logging.getLogger(__name__)

LabelPolicy = Literal["raise", "clip"]


class LambdaRankReranker:
    """Learning-to-rank re-ranker (LambdaMART, Burges 2010) on LightGBM.

    Args:
        n_estimators: boosting rounds (the most, when early stopping is used).
        learning_rate: shrinkage per round.
        num_leaves: leaves per tree.
        min_child_samples: rows a leaf needs at least.
        feature_fraction: share of features sampled per tree.
        lambda_l2: L2 penalty on leaf values.
        max_label: the highest relevance grade; ``label_gain`` is ``2**g - 1`` for
            grades 0..max_label.
        label_policy: ``"raise"`` refuses labels above ``max_label``; ``"clip"``
            lowers them to ``max_label`` with a warning in the log.
        eval_at: cut-off of the NDCG watched for early stopping.
        early_stopping_rounds: rounds without improvement on the validation set
            before stopping; used only when ``fit`` gets a validation set.
        random_state: seed of every LightGBM random choice.
        num_threads: LightGBM threads; fixed so that results repeat.
        params: further LightGBM parameters, applied last.
    """

    def __init__(
        self,
        n_estimators: int = 300,
        learning_rate: float = 0.05,
        num_leaves: int = 31,
        min_child_samples: int = 20,
        feature_fraction: float = 1.0,
        lambda_l2: float = 0.0,
        max_label: int = 3,
        label_policy: LabelPolicy = "raise",
        eval_at: int = 10,
        early_stopping_rounds: int = 50,
        random_state: int = 42,
        num_threads: int = 1,
        params: dict[str, Any] | None = None,
    ) -> None:
        self.n_estimators = n_estimators
        self.learning_rate = learning_rate
        self.num_leaves = num_leaves
        self.min_child_samples = min_child_samples
        self.feature_fraction = feature_fraction
        self.lambda_l2 = lambda_l2
        self.max_label = max_label
        self.label_policy = label_policy
        self.eval_at = eval_at
        self.early_stopping_rounds = early_stopping_rounds
        self.random_state = random_state
        self.num_threads = num_threads
        self.params = params

    def fit(
        self,
        features: pd.DataFrame,
        labels: Sequence[float] | np.ndarray | pd.Series,
        query_ids: Sequence[Any] | np.ndarray | pd.Series,
        validation: tuple[pd.DataFrame, Any, Any] | None = None,
    ) -> LambdaRankReranker:
        """Train on candidate rows in any order.

        Args:
            features: one row per candidate; every column is a feature (numeric or
                pandas categorical).
            labels: relevance grade per row, integers from 0 to ``max_label``.
            query_ids: the query (card holder, user) each row belongs to.
            validation: optional ``(features, labels, query_ids)`` for early stopping.

        Returns:
            The fitted re-ranker.

        Raises:
            InputError: for misaligned inputs, bad labels or bad parameters.
        """
        import lightgbm as lgb

        self._check_params()
        train_set = self._dataset(features, labels, query_ids, lgb)
        self.feature_names_ = list(features.columns)

        valid_sets, callbacks = [], [lgb.log_evaluation(period=0)]
        if validation is not None:
            valid_frame, valid_labels, valid_queries = validation
            valid_frame = self._select_columns(valid_frame)
            valid_sets = [
                self._dataset(valid_frame, valid_labels, valid_queries, lgb, train_set)
            ]
            callbacks.append(
                lgb.early_stopping(self.early_stopping_rounds, verbose=False)
            )

        started = time.perf_counter()
        self.booster_ = lgb.train(
            self._lightgbm_params(),
            train_set,
            num_boost_round=self.n_estimators,
            valid_sets=valid_sets,
            callbacks=callbacks,
        )
        self.best_iteration_ = self.booster_.best_iteration or self.n_estimators
        logger.debug(
            "trained LambdaRank on %d rows in %.2f s (%d rounds)",
            len(features),
            time.perf_counter() - started,
            self.best_iteration_,
        )
        return self

    def predict(self, features: pd.DataFrame) -> np.ndarray:
        """Score candidate rows, in the order given.

        Columns are picked by the model's own feature names, so their order in
        ``features`` does not matter and extra columns are ignored.

        Args:
            features: candidate rows holding at least the trained feature columns.

        Returns:
            One score per row; higher ranks first within a query.
        """
        if not hasattr(self, "booster_"):
            raise InputError(
                "LambdaRankReranker must be fitted before predict; it is not fitted; "
                "call fit first"
            )
        frame = self._select_columns(features)
        return self.booster_.predict(frame, num_iteration=self.best_iteration_)

    def feature_importance(self, kind: str = "gain") -> pd.Series:
        """Importance per feature (``"gain"`` or ``"split"``), largest first."""
        values = self.booster_.feature_importance(
            importance_type=kind, iteration=self.best_iteration_
        )
        return pd.Series(values, index=self.feature_names_).sort_values(ascending=False)

    def _check_params(self) -> None:
        if self.label_policy not in ("raise", "clip"):
            raise InputError(
                f"label_policy must be 'raise' or 'clip'; got {self.label_policy!r}; "
                "pick one"
            )
        if not isinstance(self.max_label, int) or not 1 <= self.max_label <= 30:
            raise InputError(
                f"max_label must be an integer from 1 to 30; got {self.max_label!r}; "
                "use the highest relevance grade of the labels"
            )
        if not isinstance(self.n_estimators, int) or self.n_estimators < 1:
            raise InputError(
                f"n_estimators must be a positive integer; got {self.n_estimators!r}"
                "; fix it"
            )

    def _lightgbm_params(self) -> dict[str, Any]:
        params: dict[str, Any] = {
            "objective": "lambdarank",
            "metric": "ndcg",
            "eval_at": [self.eval_at],
            "label_gain": [float(2**grade - 1) for grade in range(self.max_label + 1)],
            "learning_rate": self.learning_rate,
            "num_leaves": self.num_leaves,
            "min_child_samples": self.min_child_samples,
            "feature_fraction": self.feature_fraction,
            "lambda_l2": self.lambda_l2,
            "seed": self.random_state,
            "deterministic": True,
            "force_row_wise": True,
            "num_threads": self.num_threads,
            "verbosity": -1,
        }
        params.update(self.params or {})
        return params

    def _dataset(
        self,
        features: pd.DataFrame,
        labels: Any,
        query_ids: Any,
        lgb: Any,
        reference: Any = None,
    ) -> Any:
        """A LightGBM dataset with rows in canonical order and contiguous groups."""
        frame, grades, queries = self._check_rows(features, labels, query_ids)
        order = _canonical_order(frame, grades, queries)
        sorted_queries = queries[order]
        _, group_sizes = np.unique(sorted_queries, return_counts=True)

        return lgb.Dataset(
            frame.iloc[order].reset_index(drop=True),
            label=grades[order],
            group=group_sizes,
            reference=reference,
            free_raw_data=False,
        )

    def _check_rows(
        self, features: pd.DataFrame, labels: Any, query_ids: Any
    ) -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
        """Aligned features, bounded integer grades and integer query codes."""
        if not isinstance(features, pd.DataFrame):
            raise InputError(
                "features must be a pandas DataFrame with named columns; got "
                f"{type(features).__name__}; build a frame so columns match by name"
            )
        grades = np.asarray(labels, dtype=np.float64)
        queries = np.asarray(query_ids)
        if not len(features) == len(grades) == len(queries):
            raise InputError(
                "features, labels and query_ids must have one entry per row; got "
                f"{len(features)}, {len(grades)} and {len(queries)}; align them"
            )
        return (
            features,
            self._bounded_labels(grades),
            pd.factorize(queries, sort=True)[0],
        )

    def _bounded_labels(self, grades: np.ndarray) -> np.ndarray:
        """Integer grades inside ``[0, max_label]``, or a clear error."""
        if not np.isfinite(grades).all() or (grades != np.round(grades)).any():
            raise InputError(
                "labels must be whole relevance grades (0, 1, 2, ...); got "
                "fractional or missing values; round or fill the labels"
            )
        if (grades < 0).any():
            raise InputError(
                f"labels must be 0 or more; got a minimum of {grades.min():g}; "
                "use 0 for irrelevant candidates"
            )
        too_high = grades > self.max_label
        if too_high.any() and self.label_policy == "raise":
            raise InputError(
                f"labels must be at most max_label={self.max_label} (LightGBM's "
                f"label_gain range); got {int(too_high.sum())} rows up to "
                f"{grades.max():g}; raise max_label or set label_policy='clip'"
            )
        if too_high.any():
            logger.warning(
                "clipped %d labels above max_label=%d",
                int(too_high.sum()),
                self.max_label,
            )
        return np.minimum(grades, self.max_label).astype(np.int32)

    def _select_columns(self, features: pd.DataFrame) -> pd.DataFrame:
        missing = [name for name in self.feature_names_ if name not in features.columns]
        if missing:
            raise InputError(
                f"features must hold the trained columns {self.feature_names_}; "
                f"missing {missing}; build the same features as at training time"
            )
        return features[self.feature_names_]


def _canonical_order(
    features: pd.DataFrame, grades: np.ndarray, queries: np.ndarray
) -> np.ndarray:
    """Row order that depends on the rows' content only, never on the input order.

    Rows are sorted by query, then by a hash of their feature values, then by label.
    The hash (rather than the label or a feature) orders candidates within a query
    so that LightGBM's tie handling, which keeps tied rows in input order, is not
    correlated with the label or with any one feature.
    """
    row_hash = pd.util.hash_pandas_object(features, index=False).to_numpy()
    return np.lexsort((grades, row_hash, queries))

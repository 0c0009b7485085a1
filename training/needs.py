"""Calibrated need propensities: one LightGBM classifier per need category.

For every need category the model answers: how likely is this card holder to use
that service in the next 30 days? Each need gets its own binary LightGBM booster,
trained on the earlier part of the training window; its raw scores are then
calibrated on a later part, so that a propensity of 0.3 means that about 30 % of
such card holders use the service. A segment's expected responders is then the sum
of its propensities.

The model takes plain pandas frames: feature columns in, one 0/1 label column per
need out. Columns are always selected by the model's own feature names, never by
position, and string columns become categories whose levels are fixed at fit time
(an unseen level scores as missing).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import lightgbm as lgb
import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator
from sklearn.isotonic import IsotonicRegression
from sklearn.linear_model import LogisticRegression

from features.errors import InputError, NotReadyError
from features.schema import CARD_KEY, CARD_NUMBER, EVENT_TIMESTAMP

logger = logging.getLogger(__name__)

CALIBRATION_METHODS = ("isotonic", "sigmoid", "none")
DEFAULT_DROP_COLUMNS = (CARD_KEY, CARD_NUMBER, EVENT_TIMESTAMP)
MIN_CALIBRATION_ROWS = 20
SMALL_FRAME_ROWS = 64  # up to this many rows, categories are looked up in a dict
_LOGIT_CLIP = 1e-6


@dataclass(frozen=True)
class FeatureEncoding:
    """How a feature frame becomes the float matrix the boosters read.

    Attributes:
        names: feature columns in model order.
        categories: for each categorical column, its levels as seen at fit time.
        codes: the same levels as plain dictionaries, for small frames where a
            dictionary lookup is cheaper than a pandas index.
    """

    names: tuple[str, ...]
    categories: dict[str, pd.Index]
    codes: dict[str, dict[str, int]] = field(default_factory=dict)

    @property
    def categorical_positions(self) -> list[int]:
        """Positions of the categorical columns in :attr:`names`."""
        return [i for i, name in enumerate(self.names) if name in self.categories]

    def matrix(self, X: pd.DataFrame) -> np.ndarray:
        """Encode ``X`` as a float64 matrix, selecting columns by name.

        Categorical levels become their fit-time codes; an unseen level becomes
        NaN, which the boosters treat as missing.

        Raises:
            InputError: when a feature column the model was fitted on is absent.
        """
        missing = [name for name in self.names if name not in X.columns]
        if missing:
            raise InputError(
                f"expected the feature columns the model was fitted on; missing "
                f"{missing[:10]} (of {len(self.names)}); pass a frame that has them"
            )

        out = np.empty((len(X), len(self.names)), dtype=np.float64)
        numeric = [n for n in self.names if n not in self.categories]
        if numeric:
            out[:, self.numeric_positions] = _numeric_block(X, numeric)
        for position in self.categorical_positions:
            out[:, position] = self._category_codes(X[self.names[position]])
        return out

    def _category_codes(self, column: pd.Series) -> np.ndarray:
        """Fit-time codes of a categorical column; NaN for unseen or missing."""
        name = str(column.name)
        values = column.to_numpy(dtype=object)
        missing = pd.isna(values)
        if len(values) <= SMALL_FRAME_ROWS and name in self.codes:
            lookup = self.codes[name]
            return np.array(
                [
                    np.nan if gone else lookup.get(str(value), np.nan)
                    for value, gone in zip(values, missing, strict=True)
                ],
                dtype=np.float64,
            )
        texts = np.where(missing, "", values.astype(str))
        codes = self.categories[name].get_indexer(texts).astype(np.float64)
        codes[(codes < 0) | missing] = np.nan
        return codes

    @property
    def numeric_positions(self) -> list[int]:
        """Positions of the numeric columns in :attr:`names`."""
        return [i for i, name in enumerate(self.names) if name not in self.categories]


def _numeric_block(X: pd.DataFrame, names: list[str]) -> np.ndarray:
    """The numeric feature columns as one float matrix, converted in one step."""
    block = X[names]
    if all(
        pd.api.types.is_numeric_dtype(dtype) or pd.api.types.is_bool_dtype(dtype)
        for dtype in block.dtypes
    ):
        return block.to_numpy(dtype=np.float64, na_value=np.nan)
    return np.column_stack([_numeric_values(block[name], name) for name in names])


def _numeric_values(column: pd.Series, name: str) -> np.ndarray:
    """The float values of a numeric or boolean column (missing as NaN)."""
    try:
        return pd.to_numeric(column, errors="raise").to_numpy(
            dtype=np.float64, na_value=np.nan
        )
    except (TypeError, ValueError) as error:
        raise InputError(
            f"feature {name!r} was numeric when the model was fitted, got values "
            f"such as {column.head(3).tolist()}; send numbers for this feature"
        ) from error


def is_categorical(column: pd.Series) -> bool:
    """Whether a feature column is treated as categorical (strings, categories)."""
    return (
        isinstance(column.dtype, pd.CategoricalDtype)
        or pd.api.types.is_object_dtype(column.dtype)
        or pd.api.types.is_string_dtype(column.dtype)
    )


def feature_columns(
    X: pd.DataFrame, drop: Sequence[str] = DEFAULT_DROP_COLUMNS
) -> list[str]:
    """The columns of ``X`` that serve as model features.

    Keys (card key, card number), the event timestamp, any other listed column and
    every date-time column are left out: they identify a row or place it in time,
    and must not be learned from.

    Args:
        X: the feature frame.
        drop: column names that are never features.

    Returns:
        Feature column names in the frame's order.
    """
    dropped = set(drop)
    return [
        str(name)
        for name in X.columns
        if name not in dropped
        and not pd.api.types.is_datetime64_any_dtype(X[name].dtype)
    ]


def fit_encoding(X: pd.DataFrame, names: Sequence[str]) -> FeatureEncoding:
    """Fix the categorical levels of ``X`` for the given feature columns."""
    categories = {}
    for name in names:
        column = X[name]
        if is_categorical(column):
            levels = pd.Index(sorted(column.dropna().astype(str).unique()))
            categories[name] = levels.astype(object)
    codes = {
        name: {level: i for i, level in enumerate(levels)}
        for name, levels in categories.items()
    }
    return FeatureEncoding(names=tuple(names), categories=categories, codes=codes)


def validate_labels(Y: pd.DataFrame, X: pd.DataFrame, what: str = "Y") -> None:
    """Check that ``Y`` holds one 0/1 column per need for the rows of ``X``.

    Raises:
        InputError: when shapes, index or values do not fit.
    """
    if not isinstance(Y, pd.DataFrame) or Y.shape[1] == 0:
        raise InputError(
            f"expected {what} as a DataFrame with one 0/1 column per need, got "
            f"{type(Y).__name__}; build one column per need id"
        )
    if len(Y) != len(X) or not Y.index.equals(X.index):
        raise InputError(
            f"expected {what} to have the same index as the features ({len(X)} "
            f"rows), got {len(Y)} rows with a different index; align them first"
        )
    values = Y.to_numpy()
    if pd.isna(values).any() or not np.isin(values, (0, 1)).all():
        bad = Y.columns[~Y.isin([0, 1]).all()].tolist()
        raise InputError(
            f"expected {what} labels of 0 or 1 only, got other values or missing "
            f"values in {bad}; fill missing labels and binarise them"
        )


def split_for_calibration(
    X: pd.DataFrame,
    Y: pd.DataFrame,
    fraction: float,
    time_column: str | None,
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Carve the latest ``fraction`` of rows off as a calibration set.

    With a time column, rows are ordered by it (stable) and the latest ones are
    held out; without one, the frame is taken to be in time order already and its
    last rows are held out.

    Returns:
        ``X_fit, Y_fit, X_calib, Y_calib``.
    """
    if time_column is not None:
        if time_column not in X.columns:
            raise InputError(
                f"expected time column {time_column!r} in the features, got "
                f"columns {list(X.columns)[:10]}; pass time_column=None or add it"
            )
        order = np.argsort(X[time_column].to_numpy(), kind="stable")
    else:
        order = np.arange(len(X))

    n_calib = round(len(X) * fraction)
    fit_rows, calib_rows = order[: len(X) - n_calib], order[len(X) - n_calib :]
    return (
        X.iloc[fit_rows],
        Y.iloc[fit_rows],
        X.iloc[calib_rows],
        Y.iloc[calib_rows],
    )


@dataclass(frozen=True)
class Calibrator:
    """A monotone map from a booster's raw probability to a calibrated one.

    Isotonic calibrators keep the step points and interpolate; sigmoid (Platt)
    calibrators keep a slope and intercept on the raw score's logit; ``none``
    passes the raw probability through.
    """

    method: str
    x: np.ndarray
    y: np.ndarray
    slope: float = 1.0
    intercept: float = 0.0

    def __call__(self, raw: np.ndarray) -> np.ndarray:
        """Calibrated propensities for raw booster probabilities."""
        if self.method == "isotonic":
            return np.interp(raw, self.x, self.y)
        if self.method == "sigmoid":
            margin = self.slope * _logit(raw) + self.intercept
            return 1.0 / (1.0 + np.exp(-margin))
        return raw


def _logit(p: np.ndarray) -> np.ndarray:
    clipped = np.clip(p, _LOGIT_CLIP, 1.0 - _LOGIT_CLIP)
    return np.log(clipped / (1.0 - clipped))


def fit_calibrator(raw: np.ndarray, y: np.ndarray, method: str) -> Calibrator:
    """Fit a calibrator of the given method on held-out raw scores and labels.

    A calibration set with fewer than :data:`MIN_CALIBRATION_ROWS` rows or a single
    class cannot tell how scores map to rates; the raw scores then pass through.
    """
    identity = Calibrator("none", np.empty(0), np.empty(0))
    if method == "none":
        return identity
    if len(y) < MIN_CALIBRATION_ROWS or np.unique(y).size < 2:
        logger.warning(
            "calibration set has %d rows and %d classes; propensities stay "
            "uncalibrated for this need",
            len(y),
            np.unique(y).size,
        )
        return identity

    if method == "isotonic":
        iso = IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip")
        iso.fit(raw, y)
        return Calibrator("isotonic", iso.X_thresholds_, iso.y_thresholds_)

    platt = LogisticRegression(C=1e6, max_iter=1000)
    platt.fit(_logit(raw).reshape(-1, 1), y)
    return Calibrator(
        "sigmoid",
        np.empty(0),
        np.empty(0),
        slope=float(platt.coef_[0, 0]),
        intercept=float(platt.intercept_[0]),
    )


class NeedsModel(BaseEstimator):
    """Calibrated propensity per need category, one LightGBM booster per need.

    Args:
        n_estimators: boosting rounds per need.
        learning_rate: shrinkage of each tree.
        num_leaves: maximum leaves per tree.
        min_child_samples: minimum rows in a leaf.
        feature_fraction: share of features each tree may use.
        reg_lambda: L2 regularisation of leaf values.
        calibration: ``"isotonic"``, ``"sigmoid"`` (Platt) or ``"none"``.
        calibration_fraction: share of the latest training rows held out for
            calibration when no calibration set is passed to :meth:`fit`.
        time_column: column that orders rows in time; used only to carve the
            calibration set, never as a feature. Without it, rows are taken to be
            in time order.
        drop_columns: columns that are never features (keys, timestamps).
        early_stopping_rounds: when set, each booster stops adding trees once its
            log-loss on the calibration set has not improved for this many rounds
            (the calibration set then also chooses the number of trees).
        random_state: seed of every booster.
        num_threads: threads LightGBM uses; fixed so results repeat.

    Attributes:
        needs_: need ids, in the order of the label columns.
        feature_names_: feature columns, in model order.
        encoding_: how features become the boosters' input matrix.
        boosters_: one LightGBM booster per need (``None`` for a need whose
            training labels had a single class; it scores its base rate).
        n_trees_: trees each booster uses (0 for a need without a booster).
        calibrators_: one calibrator per need.
        base_rates_: positive rate of each need in the fitting rows.
    """

    def __init__(
        self,
        n_estimators: int = 200,
        learning_rate: float = 0.05,
        num_leaves: int = 31,
        min_child_samples: int = 20,
        feature_fraction: float = 0.9,
        reg_lambda: float = 1.0,
        calibration: str = "isotonic",
        calibration_fraction: float = 0.2,
        time_column: str | None = None,
        drop_columns: tuple[str, ...] = DEFAULT_DROP_COLUMNS,
        early_stopping_rounds: int | None = None,
        random_state: int = 0,
        num_threads: int = 1,
    ) -> None:
        self.n_estimators = n_estimators
        self.learning_rate = learning_rate
        self.num_leaves = num_leaves
        self.min_child_samples = min_child_samples
        self.feature_fraction = feature_fraction
        self.reg_lambda = reg_lambda
        self.calibration = calibration
        self.calibration_fraction = calibration_fraction
        self.time_column = time_column
        self.drop_columns = drop_columns
        self.early_stopping_rounds = early_stopping_rounds
        self.random_state = random_state
        self.num_threads = num_threads

    def fit(
        self,
        X: pd.DataFrame,
        Y: pd.DataFrame,
        X_calib: pd.DataFrame | None = None,
        Y_calib: pd.DataFrame | None = None,
    ) -> NeedsModel:
        """Train one booster per need on ``X, Y`` and calibrate it.

        Args:
            X: features, one row per card holder and cut-off time.
            Y: labels, one 0/1 column per need id, same index as ``X``.
            X_calib: features of a calibration set later in time than ``X``.
                When omitted, the latest ``calibration_fraction`` of ``X`` is
                carved off (by ``time_column`` if set, else by row order).
            Y_calib: labels of the calibration set.

        Returns:
            The fitted model.
        """
        self._validate_params()
        validate_labels(Y, X)
        X_fit, Y_fit, X_calib, Y_calib = self._calibration_split(X, Y, X_calib, Y_calib)

        drop = (*self.drop_columns, *([self.time_column] if self.time_column else []))
        names = feature_columns(X_fit, drop)
        if not names:
            raise InputError(
                f"expected at least one feature column, got only {list(X.columns)}; "
                "pass the feature service's columns"
            )
        self.encoding_ = fit_encoding(X_fit, names)
        self.feature_names_ = list(names)
        self.needs_ = [str(need) for need in Y.columns]

        started = time.perf_counter()
        matrix_fit = self.encoding_.matrix(X_fit)
        matrix_calib = self.encoding_.matrix(X_calib) if len(X_calib) else None
        self.boosters_: list[lgb.Booster | None] = []
        self.calibrators_: list[Calibrator] = []
        self.base_rates_ = Y_fit.mean().to_numpy(dtype=np.float64)
        binned: dict[str, lgb.Dataset] = {}
        for position, need in enumerate(Y.columns):
            booster = self._fit_booster(
                matrix_fit,
                Y_fit[need].to_numpy(),
                matrix_calib,
                Y_calib[need],
                binned,
            )
            self.boosters_.append(booster)
            self.calibrators_.append(
                self._fit_need_calibrator(position, matrix_calib, Y_calib[need])
            )
        self.n_trees_ = [
            0 if booster is None else booster.num_trees() for booster in self.boosters_
        ]
        logger.debug(
            "fitted %d need models on %d rows in %.2f s",
            len(self.needs_),
            len(X_fit),
            time.perf_counter() - started,
        )
        return self

    def predict_proba(self, X: pd.DataFrame) -> pd.DataFrame:
        """Calibrated propensity of every need for every row of ``X``.

        Args:
            X: features; columns are selected by name, extra columns are ignored.

        Returns:
            One column per need id, same index as ``X``, values in [0, 1].
        """
        matrix = self._encoded(X)
        return pd.DataFrame(
            self.predict_matrix(matrix), index=X.index, columns=self.needs_
        )

    def predict_matrix(self, matrix: np.ndarray) -> np.ndarray:
        """Calibrated propensities for an already encoded feature matrix.

        Args:
            matrix: output of ``encoding_.matrix(X)``.

        Returns:
            Array of shape (rows, needs).
        """
        out = np.empty((matrix.shape[0], len(self.needs_)), dtype=np.float64)
        for position, booster in enumerate(self.boosters_):
            if booster is None:
                raw = np.full(matrix.shape[0], self.base_rates_[position])
            else:
                raw = booster.predict(matrix, num_threads=self.num_threads)
            out[:, position] = self.calibrators_[position](raw)
        return out

    def feature_importances(self, importance_type: str = "gain") -> pd.DataFrame:
        """Importance of each feature for each need.

        Args:
            importance_type: ``"gain"`` (total loss reduction) or ``"split"``.

        Returns:
            Rows are feature names, columns are need ids; each column sums to 1
            (0 for a need without a booster).
        """
        self._check_fitted()
        table = pd.DataFrame(0.0, index=self.feature_names_, columns=self.needs_)
        for need, booster in zip(self.needs_, self.boosters_, strict=True):
            if booster is None:
                continue
            values = booster.feature_importance(importance_type=importance_type)
            total = values.sum()
            table[need] = values / total if total > 0 else values
        table.index.name = "feature"
        return table

    def _validate_params(self) -> None:
        stop = self.early_stopping_rounds
        checks = {
            "n_estimators": (self.n_estimators >= 1, "1 or more"),
            "learning_rate": (self.learning_rate > 0, "above 0"),
            "num_leaves": (self.num_leaves >= 2, "2 or more"),
            "min_child_samples": (self.min_child_samples >= 1, "1 or more"),
            "feature_fraction": (0 < self.feature_fraction <= 1, "in (0, 1]"),
            "reg_lambda": (self.reg_lambda >= 0, "0 or more"),
            "calibration": (
                self.calibration in CALIBRATION_METHODS,
                f"one of {list(CALIBRATION_METHODS)}",
            ),
            "calibration_fraction": (0 < self.calibration_fraction < 1, "in (0, 1)"),
            "num_threads": (self.num_threads >= 1, "1 or more"),
            "early_stopping_rounds": (stop is None or stop >= 1, "None or 1 or more"),
        }
        for name, (ok, allowed) in checks.items():
            if not ok:
                raise InputError(
                    f"expected NeedsModel parameter {name!r} {allowed}, got "
                    f"{getattr(self, name)!r}; pass {name} {allowed} to NeedsModel"
                )

    def _calibration_split(
        self,
        X: pd.DataFrame,
        Y: pd.DataFrame,
        X_calib: pd.DataFrame | None,
        Y_calib: pd.DataFrame | None,
    ) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame, pd.DataFrame]:
        if (X_calib is None) != (Y_calib is None):
            raise InputError(
                "expected both X_calib and Y_calib or neither, got only one; "
                "pass both to calibrate on your own held-out set"
            )
        if X_calib is None or Y_calib is None:
            return split_for_calibration(
                X, Y, self.calibration_fraction, self.time_column
            )
        validate_labels(Y_calib, X_calib, what="Y_calib")
        if list(Y_calib.columns) != list(Y.columns):
            raise InputError(
                f"expected Y_calib columns {list(Y.columns)}, got "
                f"{list(Y_calib.columns)}; use the same needs in the same order"
            )
        return X, Y, X_calib, Y_calib

    def _booster_params(self) -> dict[str, object]:
        return {
            "objective": "binary",
            "learning_rate": self.learning_rate,
            "num_leaves": self.num_leaves,
            "min_data_in_leaf": self.min_child_samples,
            "feature_fraction": self.feature_fraction,
            "lambda_l2": self.reg_lambda,
            "seed": self.random_state,
            "deterministic": True,
            "force_row_wise": True,
            "num_threads": self.num_threads,
            "verbosity": -1,
        }

    def _fit_booster(
        self,
        matrix: np.ndarray,
        y: np.ndarray,
        matrix_calib: np.ndarray | None,
        y_calib: pd.Series,
        binned: dict[str, lgb.Dataset] | None = None,
    ) -> lgb.Booster | None:
        if np.unique(y).size < 2:
            logger.warning(
                "a need has a single class in %d training rows; it scores its "
                "base rate",
                len(y),
            )
            return None
        if self.early_stopping_rounds is None or matrix_calib is None:
            dataset = self._labelled(matrix, y, {} if binned is None else binned)
            return lgb.train(
                self._booster_params(), dataset, num_boost_round=self.n_estimators
            )
        dataset = self._dataset(matrix, y)

        valid = self._dataset(matrix_calib, y_calib.to_numpy(), reference=dataset)
        booster = lgb.train(
            {**self._booster_params(), "metric": "binary_logloss"},
            dataset,
            num_boost_round=self.n_estimators,
            valid_sets=[valid],
            callbacks=[lgb.early_stopping(self.early_stopping_rounds, verbose=False)],
        )
        best = booster.best_iteration or booster.current_iteration()
        return lgb.Booster(model_str=booster.model_to_string(num_iteration=best))

    def _labelled(
        self, matrix: np.ndarray, y: np.ndarray, binned: dict[str, lgb.Dataset]
    ) -> lgb.Dataset:
        """The training matrix as a LightGBM dataset labelled with ``y``.

        The features are binned once per fit and kept in ``binned``; later needs
        only swap the labels. Binning reads the feature values alone, so every
        need trains on the same bins it would get from a dataset of its own.
        """
        dataset = binned.get("train")
        if dataset is None:
            dataset = binned["train"] = self._dataset(matrix, y)
        else:
            dataset.set_label(y)
        return dataset

    def _dataset(
        self, matrix: np.ndarray, y: np.ndarray, reference: lgb.Dataset | None = None
    ) -> lgb.Dataset:
        return lgb.Dataset(
            matrix,
            label=y,
            reference=reference,
            feature_name=[f"f{i}" for i in range(matrix.shape[1])],
            categorical_feature=self.encoding_.categorical_positions,
            params={"verbosity": -1},
            free_raw_data=True,
        )

    def _fit_need_calibrator(
        self, position: int, matrix: np.ndarray | None, y: pd.Series
    ) -> Calibrator:
        booster = self.boosters_[position]
        if matrix is None or booster is None:
            return fit_calibrator(np.empty(0), np.empty(0), "none")
        raw = booster.predict(matrix, num_threads=self.num_threads)
        return fit_calibrator(raw, y.to_numpy(), self.calibration)

    def _encoded(self, X: pd.DataFrame) -> np.ndarray:
        self._check_fitted()
        return self.encoding_.matrix(X)

    def _check_fitted(self) -> None:
        if not hasattr(self, "boosters_"):
            raise NotReadyError(
                "expected a fitted NeedsModel, got one that was never fitted; "
                "call fit(X, Y) first"
            )

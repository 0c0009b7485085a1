"""Candidate generators for the offer model: popularity, ALS, EASE, RP3beta, a blend.

Every recommender is an estimator: parameters are stored as given in ``__init__`` and
checked in ``fit``; learned state ends in an underscore; ``fit`` returns ``self``.
They share one API over a user x item CSR matrix (rows are users, columns are items;
mapping card keys and offer ids to rows and columns is the caller's job):

* ``fit(user_items)``
* ``recommend(user_ids, user_items, n, filter_already_liked=True)`` returns item ids
  and scores shaped (len(user_ids), n), best first; empty slots (fewer than ``n``
  items left) hold id -1 and score NaN.
* ``score_items(user_ids, item_ids, user_items=None)`` scores given (user, item) pairs,
  a feature for the re-ranker.

Weights per interaction kind (impression, click, redemption) are the caller's choice:
the matrix values are used as given. A user without interactions gets no output from
the personalised models (``ColdStartError``); the caller serves it from the cold-start
path, for example :class:`PopularityRecommender`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence

import numpy as np
from scipy import sparse

from features.errors import InputError, PrecisionError

logger = logging.getLogger(__name__)

SCORE_BATCH_USERS = 2048  # users scored per dense block in recommend


class ColdStartError(InputError):
    """A personalised recommender was asked about users with no interactions."""

    code = "cold_start"


class ModelFitError(PrecisionError):
    """Fitting produced unusable state (NaN or infinite factors or weights)."""

    code = "model_fit_error"


def has_history(user_ids: np.ndarray, user_items: sparse.csr_matrix) -> np.ndarray:
    """Which users have at least one non-zero interaction in ``user_items``.

    Args:
        user_ids: row indices of ``user_items``.
        user_items: user x item interaction matrix.

    Returns:
        A boolean array aligned with ``user_ids``; the caller routes ``False`` rows to
        the cold-start path.
    """
    matrix = check_user_items(user_items)
    ids = _check_user_ids(user_ids, matrix.shape[0])
    return _row_nonzero_counts(matrix)[ids] > 0


def check_user_items(
    user_items: object, n_items: int | None = None, name: str = "user_items"
) -> sparse.csr_matrix:
    """Refuse anything but a finite, non-negative user x item CSR matrix.

    implicit (since 0.5) and this module expect rows to be users. A CSC matrix (what
    ``csr.T`` returns) or a matrix whose column count differs from the fitted catalogue
    would swap factors or break the already-seen filter, so both are refused.

    Args:
        user_items: the matrix to check.
        n_items: the number of item columns the model was fitted with, if known.
        name: argument name used in error messages.

    Returns:
        The same matrix as ``scipy.sparse.csr_matrix``.

    Raises:
        InputError: naming what was expected, what arrived and how to fix it.
    """
    if not sparse.issparse(user_items) or user_items.format != "csr":
        kind = getattr(user_items, "format", type(user_items).__name__)
        raise InputError(
            f"{name} must be a scipy CSR matrix with users as rows and items as "
            f"columns; got {kind!r}; build it with scipy.sparse.csr_matrix"
            "((weights, (user_rows, item_columns)), shape=(users, items)) and do not "
            "transpose it"
        )
    if n_items is not None and user_items.shape[1] != n_items:
        raise InputError(
            f"{name} must have {n_items} item columns, as when the model was fitted; "
            f"got shape {user_items.shape}; pass users as rows and the fitted "
            "catalogue as columns (a transposed matrix has the shapes swapped)"
        )
    values = user_items.data
    if not np.issubdtype(values.dtype, np.number):
        raise InputError(
            f"{name} must hold numeric weights; got dtype {values.dtype}; "
            "convert the interaction weights to float"
        )
    if not np.all(np.isfinite(values)) or (values < 0).any():
        raise InputError(
            f"{name} must hold finite, non-negative weights; got "
            f"{int((~np.isfinite(values)).sum())} non-finite and "
            f"{int((values < 0).sum())} negative values; fix the interaction weights"
        )
    return sparse.csr_matrix(user_items)


class _Recommender:
    """Shared top-n machinery; subclasses provide ``_fit`` and ``_score_block``."""

    n_users_: int
    n_items_: int

    def fit(self, user_items: sparse.csr_matrix) -> _Recommender:
        """Learn from a user x item interaction matrix.

        Args:
            user_items: CSR matrix, users as rows and items as columns; values are
                interaction weights.

        Returns:
            The fitted recommender.
        """
        matrix = check_user_items(user_items)
        self._check_params()

        started = time.perf_counter()
        self.n_users_, self.n_items_ = matrix.shape
        self.user_items_ = matrix
        self._fit(matrix)
        logger.debug(
            "fitted %s on %d x %d in %.2f s",
            type(self).__name__,
            matrix.shape[0],
            matrix.shape[1],
            time.perf_counter() - started,
        )
        return self

    def recommend(
        self,
        user_ids: np.ndarray,
        user_items: sparse.csr_matrix,
        n: int,
        filter_already_liked: bool = True,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top ``n`` items for each user, best first.

        Args:
            user_ids: row indices of ``user_items`` to recommend for.
            user_items: user x item matrix of the current interactions (all users,
                not only ``user_ids``); its rows drive the already-seen filter and,
                for item-based models, the scores.
            n: number of items per user.
            filter_already_liked: leave out items the user already interacted with.

        Returns:
            Item ids (int64) and scores (float32), each shaped (len(user_ids), n).
            Empty slots hold id -1 and score NaN.

        Raises:
            ColdStartError: for users the model cannot personalise for.
            InputError: for a malformed matrix, user ids or ``n``.
        """
        self._check_fitted()
        matrix = check_user_items(user_items, self.n_items_)
        ids = _check_user_ids(user_ids, matrix.shape[0])
        if not isinstance(n, int | np.integer) or n < 1:
            raise InputError(
                f"n must be a positive number of items; got {n!r}; ask for 1 or more"
            )
        self._check_history(ids, matrix)

        all_ids = np.full((len(ids), n), -1, dtype=np.int64)
        all_scores = np.full((len(ids), n), np.nan, dtype=np.float32)
        for start in range(0, len(ids), SCORE_BATCH_USERS):
            block = ids[start : start + SCORE_BATCH_USERS]
            scores = self._score_block(block, matrix).astype(np.float32, copy=False)
            if filter_already_liked:
                _mask_seen(scores, matrix[block])
            top_ids, top_scores = _top_n(scores, n)
            all_ids[start : start + len(block)] = top_ids
            all_scores[start : start + len(block)] = top_scores
        return all_ids, all_scores

    def score_items(
        self,
        user_ids: np.ndarray,
        item_ids: np.ndarray,
        user_items: sparse.csr_matrix | None = None,
    ) -> np.ndarray:
        """Score given (user, item) pairs.

        Args:
            user_ids: user row per pair.
            item_ids: item column per pair, aligned with ``user_ids``.
            user_items: current interactions; the fitted matrix when omitted.

        Returns:
            One float32 score per pair.

        Raises:
            ColdStartError: for users the model cannot personalise for.
            InputError: for misaligned or out-of-range ids.
        """
        self._check_fitted()
        matrix = self.user_items_ if user_items is None else user_items
        matrix = check_user_items(matrix, self.n_items_)
        users = _check_user_ids(user_ids, matrix.shape[0])
        items = _check_item_ids(item_ids, self.n_items_)
        if len(users) != len(items):
            raise InputError(
                "user_ids and item_ids must be aligned pairs of equal length; got "
                f"{len(users)} users and {len(items)} items; pass one user per item"
            )
        self._check_history(np.unique(users), matrix)

        scores = np.empty(len(users), dtype=np.float32)
        unique_users, position = np.unique(users, return_inverse=True)
        for start in range(0, len(unique_users), SCORE_BATCH_USERS):
            block = unique_users[start : start + SCORE_BATCH_USERS]
            block_scores = self._score_block(block, matrix)
            in_block = (position >= start) & (position < start + len(block))
            rows = position[in_block] - start
            scores[in_block] = block_scores[rows, items[in_block]]
        return scores

    def _check_params(self) -> None:
        """Validate hyper-parameters; subclasses extend."""

    def _check_fitted(self) -> None:
        if not hasattr(self, "n_items_"):
            raise InputError(
                f"{type(self).__name__} must be fitted before use; it is not fitted; "
                "call fit(user_items) first"
            )

    def _check_history(
        self, user_ids: np.ndarray, user_items: sparse.csr_matrix
    ) -> None:
        """Raise ColdStartError when the model cannot score some users."""

    def _fit(self, user_items: sparse.csr_matrix) -> None:
        raise NotImplementedError

    def _score_block(
        self, user_ids: np.ndarray, user_items: sparse.csr_matrix
    ) -> np.ndarray:
        raise NotImplementedError


class PopularityRecommender(_Recommender):
    """The same ranking for everyone: items by their total interaction weight.

    The cold-start path and the "most popular" baseline. With ``binary=True`` it counts
    users per item instead of summing weights.

    Args:
        binary: count each (user, item) pair once, whatever its weight.
    """

    def __init__(self, binary: bool = True) -> None:
        self.binary = binary

    def _fit(self, user_items: sparse.csr_matrix) -> None:
        counted = user_items.copy()
        counted.eliminate_zeros()
        if self.binary:
            counted.data = np.ones_like(counted.data)
        self.item_popularity_ = (
            np.asarray(counted.sum(axis=0)).ravel().astype(np.float32)
        )

    def _score_block(
        self, user_ids: np.ndarray, user_items: sparse.csr_matrix
    ) -> np.ndarray:
        scores = self.item_popularity_
        return np.broadcast_to(scores, (len(user_ids), self.n_items_)).copy()


class ALSRecommender(_Recommender):
    """Implicit-feedback matrix factorisation (Hu, Koren and Volinsky, 2008).

    Wraps ``implicit.cpu.als.AlternatingLeastSquares`` (always the CPU solver, so
    results do not depend on a GPU being present). The confidence of an observed
    pair is ``alpha * weight``, not the paper's ``1 + alpha * weight``: implicit
    scales the matrix by ``alpha`` and uses it as the confidence, while unobserved
    pairs keep confidence 1. Weights with ``alpha * weight`` below 1 therefore count
    less than an unobserved pair.

    Args:
        factors: latent dimensions.
        regularization: L2 penalty on the factors.
        alpha: confidence scale applied to the interaction weights.
        iterations: alternating sweeps.
        random_state: seed of the factor initialisation.
        num_threads: solver threads; 0 uses every core.
    """

    def __init__(
        self,
        factors: int = 64,
        regularization: float = 0.05,
        alpha: float = 1.0,
        iterations: int = 15,
        random_state: int = 42,
        num_threads: int = 0,
    ) -> None:
        self.factors = factors
        self.regularization = regularization
        self.alpha = alpha
        self.iterations = iterations
        self.random_state = random_state
        self.num_threads = num_threads

    def _check_params(self) -> None:
        _require_positive_int("factors", self.factors)
        _require_positive_int("iterations", self.iterations)
        _require_non_negative("regularization", self.regularization)
        # alpha = 0 would zero every confidence, so implicit reads each
        # interaction as a dislike.
        _require_positive("alpha", self.alpha, "try 1 to 40")

    def _fit(self, user_items: sparse.csr_matrix) -> None:
        from implicit.cpu.als import AlternatingLeastSquares
        from threadpoolctl import threadpool_limits

        with threadpool_limits(1, "blas"):
            model = AlternatingLeastSquares(
                factors=self.factors,
                regularization=self.regularization,
                alpha=self.alpha,
                iterations=self.iterations,
                random_state=self.random_state,
                num_threads=self.num_threads,
            )
            model.fit(user_items.astype(np.float32), show_progress=False)

        self.user_factors_ = np.asarray(model.user_factors)
        self.item_factors_ = np.asarray(model.item_factors)
        if not (
            np.isfinite(self.user_factors_).all()
            and np.isfinite(self.item_factors_).all()
        ):
            raise ModelFitError(
                "ALS factors must be finite after fitting; got NaN or infinite values; "
                "raise regularization or lower alpha"
            )
        self.user_has_history_ = _row_nonzero_counts(user_items) > 0

    def _check_history(
        self, user_ids: np.ndarray, user_items: sparse.csr_matrix
    ) -> None:
        unknown = user_ids[user_ids >= self.n_users_]
        known = user_ids[user_ids < self.n_users_]
        cold = np.concatenate([unknown, known[~self.user_has_history_[known]]])
        # Users who first interacted after fit stay cold until the next fit.
        _raise_cold(type(self).__name__, cold, "had no interactions when it was fitted")

    def _score_block(
        self, user_ids: np.ndarray, user_items: sparse.csr_matrix
    ) -> np.ndarray:
        return self.user_factors_[user_ids] @ self.item_factors_.T


class _ItemItemRecommender(_Recommender):
    """Models that score a user from their current row of ``user_items``."""

    def _check_history(
        self, user_ids: np.ndarray, user_items: sparse.csr_matrix
    ) -> None:
        empty = user_ids[_row_nonzero_counts(user_items)[user_ids] == 0]
        _raise_cold(type(self).__name__, empty, "have no interactions in user_items")


class EASERecommender(_ItemItemRecommender):
    """Embarrassingly shallow autoencoder: closed-form item-item weights (Steck, 2019).

    ``B = I - P / diag(P)`` with ``P = (X'X + l2 I)^-1`` and a zero diagonal; a user's
    scores are their interaction row times ``B``. Memory and time grow with the square
    and cube of the catalogue: meant for up to a few thousand items (offers).

    Args:
        l2: regularisation added to the diagonal of the Gram matrix.
        binary: fit and score on 0/1 interactions instead of the weights.
    """

    def __init__(self, l2: float = 500.0, binary: bool = False) -> None:
        self.l2 = l2
        self.binary = binary

    def _check_params(self) -> None:
        _require_positive("l2", self.l2, "try 100 to 1000")

    def _fit(self, user_items: sparse.csr_matrix) -> None:
        matrix = self._prepare(user_items)
        gram = (matrix.T @ matrix).toarray().astype(np.float64)
        gram[np.diag_indices_from(gram)] += self.l2

        precision = np.linalg.inv(gram)
        weights = -precision / np.diag(precision)
        weights[np.diag_indices_from(weights)] = 0.0
        if not np.isfinite(weights).all():
            raise ModelFitError(
                "EASE weights must be finite after fitting; got NaN or infinite "
                "values; raise l2"
            )
        self.item_weights_ = weights.astype(np.float32)

    def _score_block(
        self, user_ids: np.ndarray, user_items: sparse.csr_matrix
    ) -> np.ndarray:
        rows = self._prepare(user_items[user_ids])
        return np.asarray(rows @ self.item_weights_)

    def _prepare(self, user_items: sparse.csr_matrix) -> sparse.csr_matrix:
        matrix = user_items.astype(np.float32)
        matrix.eliminate_zeros()
        if self.binary:
            matrix.data = np.ones_like(matrix.data)
        return matrix


class RP3betaRecommender(_ItemItemRecommender):
    """Random walks of three steps, item to user to item (Paudel et al., 2017).

    The transition from item ``i`` to item ``j`` is the chance of walking from ``i``
    to a user who took it and on to ``j``, each step drawn by interaction weight and
    raised to ``alpha``; dividing by the popularity of ``j`` raised to ``beta`` keeps
    the most popular offers from winning every list. A user's scores are their
    interaction row times the transition matrix (a square of the catalogue size).

    Args:
        alpha: exponent on each step's transition probability.
        beta: popularity penalty on the target item; 0 leaves it out.
    """

    def __init__(self, alpha: float = 0.8, beta: float = 0.4) -> None:
        self.alpha = alpha
        self.beta = beta

    def _check_params(self) -> None:
        _require_non_negative("beta", self.beta)
        _require_positive("alpha", self.alpha, "try 0.5 to 1")

    def _fit(self, user_items: sparse.csr_matrix) -> None:
        matrix = user_items.astype(np.float64)
        matrix.eliminate_zeros()
        user_to_item = _row_normalised(matrix).power(self.alpha)
        item_to_user = _row_normalised(matrix.T.tocsr()).power(self.alpha)

        weights = (item_to_user @ user_to_item).toarray()
        popularity = np.asarray(matrix.sum(axis=0)).ravel()
        weights /= np.maximum(popularity, 1e-12)[None, :] ** self.beta
        weights[np.diag_indices_from(weights)] = 0.0
        if not np.isfinite(weights).all():
            raise ModelFitError(
                "RP3beta weights must be finite after fitting; got NaN or infinite "
                "values; lower beta"
            )
        self.item_weights_ = weights.astype(np.float32)

    def _score_block(
        self, user_ids: np.ndarray, user_items: sparse.csr_matrix
    ) -> np.ndarray:
        rows = user_items[user_ids].astype(np.float32)
        return np.asarray(rows @ self.item_weights_)


class BlendRecommender(_Recommender):
    """A weighted sum of other recommenders' per-user standardised scores.

    Each component's scores are centred and scaled per user over the catalogue, so
    components on different scales can be mixed. A user any component cannot score
    is cold for the blend.

    Args:
        components: unfitted recommenders; ``fit`` fits each on the same matrix.
        weights: one weight per component.
    """

    def __init__(
        self, components: Sequence[_Recommender], weights: Sequence[float]
    ) -> None:
        self.components = components
        self.weights = weights

    def _check_params(self) -> None:
        if len(self.components) == 0 or len(self.components) != len(self.weights):
            raise InputError(
                "components and weights must be non-empty and of equal length; got "
                f"{len(self.components)} components and {len(self.weights)} weights; "
                "give one weight per component"
            )

    def _fit(self, user_items: sparse.csr_matrix) -> None:
        self.components_ = [component.fit(user_items) for component in self.components]

    def _check_history(
        self, user_ids: np.ndarray, user_items: sparse.csr_matrix
    ) -> None:
        for component in self.components_:
            component._check_history(user_ids, user_items)

    def _score_block(
        self, user_ids: np.ndarray, user_items: sparse.csr_matrix
    ) -> np.ndarray:
        blended = np.zeros((len(user_ids), self.n_items_), dtype=np.float64)
        for component, weight in zip(self.components_, self.weights, strict=True):
            scores = component._score_block(user_ids, user_items).astype(np.float64)
            centred = scores - scores.mean(axis=1, keepdims=True)
            spread = centred.std(axis=1, keepdims=True)
            blended += weight * centred / np.where(spread > 0, spread, 1.0)
        return blended


def _row_of_entry(matrix: sparse.csr_matrix) -> np.ndarray:
    """The row of every stored entry of a CSR matrix."""
    return np.repeat(np.arange(matrix.shape[0]), np.diff(matrix.indptr))


def _row_nonzero_counts(user_items: sparse.csr_matrix) -> np.ndarray:
    """Non-zero entries per row (explicit zeros do not count as interactions)."""
    nonzero = user_items.data != 0
    rows = _row_of_entry(user_items)[nonzero]
    return np.bincount(rows, minlength=user_items.shape[0])


def _row_normalised(matrix: sparse.csr_matrix) -> sparse.csr_matrix:
    """Each row divided by its sum; empty rows stay empty."""
    sums = np.asarray(matrix.sum(axis=1)).ravel()
    scale = np.divide(1.0, sums, out=np.zeros_like(sums), where=sums > 0)
    return sparse.csr_matrix(sparse.diags(scale) @ matrix)


def _mask_seen(scores: np.ndarray, rows: sparse.csr_matrix) -> None:
    """Set the scores of already-seen items to minus infinity, in place."""
    seen = rows.data != 0
    scores[_row_of_entry(rows)[seen], rows.indices[seen]] = -np.inf


def _top_n(scores: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Best ``n`` columns per row; ties go to the lower item id; -inf slots empty."""
    n_rows, n_items = scores.shape
    width = min(n, n_items)
    if width < n_items:
        candidates = np.argpartition(-scores, width - 1, axis=1)[:, :width]
    else:
        candidates = np.broadcast_to(np.arange(n_items), (n_rows, n_items))
    candidate_scores = np.take_along_axis(scores, candidates, axis=1)

    order = np.lexsort((candidates, -candidate_scores), axis=1)
    ids = np.take_along_axis(candidates, order, axis=1).astype(np.int64)
    top_scores = np.take_along_axis(candidate_scores, order, axis=1)

    ids = np.where(np.isneginf(top_scores), -1, ids)
    top_scores = np.where(np.isneginf(top_scores), np.nan, top_scores)
    if width < n:
        ids = np.pad(ids, ((0, 0), (0, n - width)), constant_values=-1)
        top_scores = np.pad(
            top_scores, ((0, 0), (0, n - width)), constant_values=np.nan
        )
    return ids, top_scores


def _check_user_ids(user_ids: np.ndarray, n_rows: int) -> np.ndarray:
    """Integer row indices inside the matrix."""
    return _check_indices(
        user_ids,
        n_rows,
        name="user_ids",
        what="row indices",
        within="rows of user_items",
        remedy_kind="map card keys to rows first",
        remedy_range="pass the full user x item matrix",
    )


def _check_item_ids(item_ids: np.ndarray, n_items: int) -> np.ndarray:
    """Integer column indices inside the fitted catalogue."""
    return _check_indices(
        item_ids,
        n_items,
        name="item_ids",
        what="column indices",
        within="fitted catalogue",
        remedy_kind="map offer ids to columns first",
        remedy_range="refit after the catalogue grows",
    )


def _check_indices(
    values: np.ndarray,
    bound: int,
    *,
    name: str,
    what: str,
    within: str,
    remedy_kind: str,
    remedy_range: str,
) -> np.ndarray:
    """Integer indices in ``[0, bound)`` as int64, or an error naming ``name``."""
    ids = np.asarray(values)
    if ids.ndim != 1 or (ids.size and not np.issubdtype(ids.dtype, np.integer)):
        raise InputError(
            f"{name} must be a 1-d array of integer {what}; got shape {ids.shape} "
            f"and dtype {ids.dtype}; {remedy_kind}"
        )
    if ids.size and (ids.min() < 0 or ids.max() >= bound):
        raise InputError(
            f"{name} must lie in [0, {bound}) ({within}); got values from "
            f"{ids.min()} to {ids.max()}; {remedy_range}"
        )
    return ids.astype(np.int64)


def _raise_cold(model: str, cold: np.ndarray, why: str) -> None:
    if len(cold) == 0:
        return
    rows = np.unique(cold)
    shown = ", ".join(str(user) for user in rows[:5])
    more = ", ..." if len(rows) > 5 else ""
    raise ColdStartError(
        f"{model} needs users with interactions; {len(cold)} user(s) {why} "
        f"(rows {shown}{more}); route them to the cold-start path "
        "(PopularityRecommender) with has_history()"
    )


def _require_positive_int(name: str, value: object) -> None:
    if not isinstance(value, int | np.integer) or isinstance(value, bool) or value < 1:
        raise InputError(
            f"{name} must be a positive integer; got {value!r}; set {name} to 1 or more"
        )


def _require_non_negative(name: str, value: object) -> None:
    if not isinstance(value, int | float) or isinstance(value, bool) or value < 0:
        raise InputError(
            f"{name} must be a non-negative number; got {value!r}; set {name} to 0 "
            "or more"
        )


def _require_positive(name: str, value: object, hint: str) -> None:
    if not isinstance(value, int | float) or isinstance(value, bool) or value <= 0:
        raise InputError(f"{name} must be a positive number; got {value!r}; {hint}")

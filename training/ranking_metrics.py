"""Top-k ranking metrics, vectorised over users.

Every metric takes the same two inputs:

* ``recommended``: an integer array shaped (users, at least k) of item column indices,
  best first. A negative id marks an empty slot (fewer than k candidates) and never
  counts as a hit.
* ``relevant``: a user x item sparse matrix whose row ``u`` holds the items that user
  ``u`` of ``recommended`` found relevant in the evaluation window (any non-zero
  counts, whatever its value).

Users with no relevant item are left out of every mean, as in the Microsoft
Recommenders evaluation, which joins predictions to the users present in the test
set. Item ids are column indices; mapping them to offer ids is the caller's job.
"""

from __future__ import annotations

import logging
from typing import Literal

import numpy as np
from scipy import sparse

from features.errors import InputError

logger = logging.getLogger(__name__)

MapNormalisation = Literal["min_relevant_k", "relevant"]


def hit_matrix(
    recommended: np.ndarray, relevant: sparse.spmatrix, k: int
) -> np.ndarray:
    """Which of the first ``k`` recommended items are relevant.

    Args:
        recommended: item ids per user, best first; negative ids are empty slots.
        relevant: user x item matrix of relevant items, one row per user.
        k: cut-off.

    Returns:
        A boolean array shaped (users, k).

    Raises:
        InputError: when the shapes disagree or ``k`` is out of range.
    """
    top = _check_inputs(recommended, relevant, k)
    rows = sparse.csr_matrix(relevant, copy=True)
    rows.eliminate_zeros()
    rows.sum_duplicates()
    rows.sort_indices()

    n_items = rows.shape[1]
    user_of_entry = np.repeat(np.arange(rows.shape[0]), np.diff(rows.indptr))
    relevant_keys = user_of_entry.astype(np.int64) * n_items + rows.indices

    users = np.arange(top.shape[0], dtype=np.int64)[:, None]
    wanted_keys = users * n_items + top.astype(np.int64)
    hits = np.isin(wanted_keys, relevant_keys)
    return hits & (top >= 0)


def relevant_counts(relevant: sparse.spmatrix) -> np.ndarray:
    """Number of relevant items per user (non-zero entries per row)."""
    rows = sparse.csr_matrix(relevant, copy=True)
    rows.eliminate_zeros()
    rows.sum_duplicates()
    return np.diff(rows.indptr)


def precision_at_k(recommended: np.ndarray, relevant: sparse.spmatrix, k: int) -> float:
    """Mean share of the k slots that hold a relevant item.

    The denominator is ``k`` even when a user has fewer relevant items or fewer
    candidates, as in Microsoft Recommenders ``precision_at_k``
    (recommenders/evaluation/python_evaluation.py).
    """
    hits, _ = _hits_for_users(recommended, relevant, k)
    return _mean(hits.sum(axis=1) / k)


def recall_at_k(recommended: np.ndarray, relevant: sparse.spmatrix, k: int) -> float:
    """Mean share of each user's relevant items found in the top k.

    The denominator is the user's number of relevant items, as in Microsoft
    Recommenders ``recall_at_k``.
    """
    hits, counts = _hits_for_users(recommended, relevant, k)
    return _mean(hits.sum(axis=1) / counts)


def ndcg_at_k(recommended: np.ndarray, relevant: sparse.spmatrix, k: int) -> float:
    """Mean normalised discounted cumulative gain with binary relevance.

    DCG sums ``1 / log2(rank + 1)`` over the hits at ranks 1..k; the ideal DCG places
    ``min(relevant, k)`` hits at the top (Järvelin and Kekäläinen, 2002). This is the
    binary, top-k variant of Microsoft Recommenders ``ndcg_at_k`` (the logarithm's base
    cancels in the ratio).
    """
    hits, counts = _hits_for_users(recommended, relevant, k)
    discounts = 1.0 / np.log2(np.arange(2, k + 2))
    dcg = hits @ discounts

    ideal_cumulative = np.cumsum(discounts)
    idcg = ideal_cumulative[np.minimum(counts, k) - 1]
    return _mean(dcg / idcg)


def map_at_k(
    recommended: np.ndarray,
    relevant: sparse.spmatrix,
    k: int,
    normalisation: MapNormalisation = "min_relevant_k",
) -> float:
    """Mean average precision at k.

    Average precision sums ``precision@i`` over the ranks ``i <= k`` that hold a hit,
    then divides by:

    * ``"min_relevant_k"``: ``min(relevant, k)``, the usual definition (for example
      Kaggle's ``apk`` and the ``map@k`` of most recommender papers); a perfect list
      scores 1.
    * ``"relevant"``: the user's number of relevant items, as the Microsoft
      Recommenders ``map_at_k`` of its MovieLens benchmark does; users with more than
      k relevant items can never reach 1.

    Args:
        recommended: item ids per user, best first.
        relevant: user x item matrix of relevant items.
        k: cut-off.
        normalisation: which denominator to use (see above).

    Returns:
        The mean over users with at least one relevant item.

    Raises:
        InputError: for an unknown normalisation or inconsistent inputs.
    """
    if normalisation not in ("min_relevant_k", "relevant"):
        raise InputError(
            "normalisation must be 'min_relevant_k' or 'relevant'; "
            f"got {normalisation!r}; pass one of the two"
        )
    hits, counts = _hits_for_users(recommended, relevant, k)
    ranks = np.arange(1, k + 1)
    precision_at_rank = np.cumsum(hits, axis=1) / ranks
    summed = (precision_at_rank * hits).sum(axis=1)

    denominator = np.minimum(counts, k) if normalisation == "min_relevant_k" else counts
    return _mean(summed / denominator)


def hit_rate_at_k(recommended: np.ndarray, relevant: sparse.spmatrix, k: int) -> float:
    """Share of users with at least one relevant item in their top k."""
    hits, _ = _hits_for_users(recommended, relevant, k)
    return _mean(hits.any(axis=1).astype(float))


def catalogue_coverage(recommended: np.ndarray, n_items: int, k: int) -> float:
    """Share of the catalogue that appears in at least one user's top k.

    Catalogue (aggregate) coverage as in Ge, Delgado-Battenfeld and Jannach (2010);
    computed over every row given, relevant items or not.

    Args:
        recommended: item ids per user, best first; negative ids are ignored.
        n_items: size of the catalogue.
        k: cut-off.

    Returns:
        Distinct recommended items divided by ``n_items``.
    """
    if n_items <= 0:
        raise InputError(
            f"n_items must be a positive catalogue size; got {n_items}; "
            "pass the number of item columns"
        )
    top = np.asarray(recommended)[:, :k]
    shown = np.unique(top[top >= 0])
    return float(len(shown) / n_items)


def ranking_report(
    recommended: np.ndarray, relevant: sparse.spmatrix, k: int
) -> dict[str, float]:
    """Every metric of this module at one cut-off, keyed ``<metric>@<k>``."""
    n_items = relevant.shape[1]
    return {
        f"ndcg@{k}": ndcg_at_k(recommended, relevant, k),
        f"precision@{k}": precision_at_k(recommended, relevant, k),
        f"recall@{k}": recall_at_k(recommended, relevant, k),
        f"map@{k}": map_at_k(recommended, relevant, k, "min_relevant_k"),
        f"map_by_relevant@{k}": map_at_k(recommended, relevant, k, "relevant"),
        f"hit_rate@{k}": hit_rate_at_k(recommended, relevant, k),
        f"coverage@{k}": catalogue_coverage(recommended, n_items, k),
        "users": float((relevant_counts(relevant) > 0).sum()),
    }


def _hits_for_users(
    recommended: np.ndarray, relevant: sparse.spmatrix, k: int
) -> tuple[np.ndarray, np.ndarray]:
    """Hit matrix and relevant counts, restricted to users with a relevant item."""
    hits = hit_matrix(recommended, relevant, k)
    counts = relevant_counts(relevant)
    keep = counts > 0
    if not keep.all():
        logger.debug("left %d users without relevant items out", int((~keep).sum()))
    return hits[keep], counts[keep]


def _check_inputs(
    recommended: np.ndarray, relevant: sparse.spmatrix, k: int
) -> np.ndarray:
    """Validate shapes and the cut-off; return the first ``k`` columns."""
    top = np.asarray(recommended)
    if top.ndim != 2:
        raise InputError(
            "recommended must be a 2-d array shaped (users, items); "
            f"got {top.ndim} dimension(s); stack the per-user lists"
        )
    if not sparse.issparse(relevant) or relevant.shape[0] != top.shape[0]:
        rows = relevant.shape[0] if hasattr(relevant, "shape") else "no"
        raise InputError(
            "relevant must be a sparse user x item matrix with one row per row of "
            f"recommended ({top.shape[0]}); got {rows} rows; align the two by user"
        )
    if not 1 <= k <= top.shape[1]:
        raise InputError(
            f"k must be between 1 and the {top.shape[1]} recommended columns; "
            f"got {k}; recommend at least k items per user"
        )
    if not np.issubdtype(top.dtype, np.integer):
        raise InputError(
            f"recommended must hold integer item ids; got dtype {top.dtype}; "
            "pass column indices, not offer ids or scores"
        )
    if top.size and top.max() >= relevant.shape[1]:
        raise InputError(
            f"recommended item ids must be below the {relevant.shape[1]} item columns "
            f"of relevant; got {top.max()}; build both with the same item index"
        )
    return top[:, :k]


def _mean(values: np.ndarray) -> float:
    """Mean of per-user values; 0.0 when no user is left."""
    return float(values.mean()) if len(values) else 0.0

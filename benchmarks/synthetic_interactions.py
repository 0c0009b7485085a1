"""Seeded card x offer implicit-feedback matrices with a planted low-rank taste.

Each card holder and each offer gets a latent taste vector of a small rank; an offer's
appeal to a card holder is the dot product plus the offer's popularity. Every card
holder interacts with a number of distinct offers drawn from a skewed activity
distribution, chosen without replacement with probabilities proportional to the
softmax of that appeal (Gumbel top-k), so the matrix has exactly the requested number
of stored entries. Values are event counts (one or more), the kind of weights an
offer model reads from impressions, clicks and redemptions.

The generator knows nothing of the product's warehouse: benchmarks use it to time
and compare matrix-factorisation trainers at the scale of the whole membership.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
from scipy import sparse

from features.errors import InputError

logger = logging.getLogger(__name__)

CARDS_PER_CHUNK = 8_192


@dataclass(frozen=True)
class SyntheticInteractions:
    """A generated matrix and the planted structure behind it.

    Attributes:
        card_offers: cards x offers CSR matrix of event counts (float32).
        card_tastes: planted card taste vectors, cards x rank.
        offer_tastes: planted offer taste vectors, offers x rank, already scaled by
            the taste strength.
        offer_popularity: planted log-popularity of each offer.
    """

    card_offers: sparse.csr_matrix
    card_tastes: np.ndarray
    offer_tastes: np.ndarray
    offer_popularity: np.ndarray

    def appeal(self, card_ids: np.ndarray) -> np.ndarray:
        """The planted log-odds of every offer for the given cards (the oracle)."""
        return self.card_tastes[card_ids] @ self.offer_tastes.T + self.offer_popularity


def make_card_offers(
    cards: int,
    offers: int,
    interactions: int,
    rank: int = 16,
    seed: int = 42,
    taste_strength: float = 2.5,
) -> SyntheticInteractions:
    """Generate a card x offer matrix with exactly ``interactions`` stored entries.

    Args:
        cards: number of card holders (rows).
        offers: number of offers (columns).
        interactions: number of distinct (card, offer) pairs to store.
        rank: dimension of the planted tastes.
        seed: seed of every random draw; the same seed gives the same matrix.
        taste_strength: scale of the taste term against popularity; larger values
            make choices more personal and easier to recover.

    Returns:
        The matrix and the planted factors.

    Raises:
        InputError: when the sizes cannot hold the requested interactions.
    """
    _check_sizes(cards, offers, interactions, rank)
    rng = np.random.default_rng(seed)

    scale = taste_strength / np.sqrt(rank)
    card_tastes = rng.standard_normal((cards, rank)).astype(np.float32)
    offer_tastes = (scale * rng.standard_normal((offers, rank))).astype(np.float32)
    offer_popularity = (0.8 * rng.standard_normal(offers)).astype(np.float32)
    per_card = _interactions_per_card(rng, cards, offers, interactions)

    indptr = np.zeros(cards + 1, dtype=np.int64)
    np.cumsum(per_card, out=indptr[1:])
    indices = np.empty(interactions, dtype=np.int32)
    for start in range(0, cards, CARDS_PER_CHUNK):
        stop = min(start + CARDS_PER_CHUNK, cards)
        appeal = card_tastes[start:stop] @ offer_tastes.T + offer_popularity
        chosen = _gumbel_top_k(rng, appeal, per_card[start:stop])
        indices[indptr[start] : indptr[stop]] = chosen

    counts = 1.0 + rng.poisson(0.6, size=interactions)
    card_offers = sparse.csr_matrix(
        (counts.astype(np.float32), indices, indptr), shape=(cards, offers)
    )
    card_offers.sort_indices()
    logger.debug("generated %d x %d with %d entries", cards, offers, interactions)
    return SyntheticInteractions(
        card_offers, card_tastes, offer_tastes, offer_popularity
    )


def hold_out(
    card_offers: sparse.csr_matrix,
    evaluated_cards: int,
    share: float = 0.2,
    seed: int = 7,
) -> tuple[sparse.csr_matrix, sparse.csr_matrix]:
    """Move a share of some card holders' entries to a held-out matrix.

    Only cards with at least two entries are evaluated, and each keeps at least one
    entry for training, so every evaluated card has something to learn from.

    Args:
        card_offers: cards x offers CSR matrix.
        evaluated_cards: how many card holders get held-out entries (at most).
        share: share of each evaluated card holder's entries held out.
        seed: seed of the choice of cards and entries.

    Returns:
        ``(train, held_out)``, both cards x offers CSR with the same shape; their sum
        is the input.
    """
    rng = np.random.default_rng(seed)
    matrix = sparse.csr_matrix(card_offers)
    per_card = np.diff(matrix.indptr)
    eligible = np.flatnonzero(per_card >= 2)
    size = min(evaluated_cards, eligible.size)
    chosen = rng.choice(eligible, size=size, replace=False)

    held_mask = np.zeros(matrix.nnz, dtype=bool)
    for card in chosen:
        start, stop = matrix.indptr[card], matrix.indptr[card + 1]
        size = stop - start
        held = max(1, min(size - 1, round(share * size)))
        held_mask[start + rng.choice(size, size=held, replace=False)] = True

    return _keep_entries(matrix, ~held_mask), _keep_entries(matrix, held_mask)


def _check_sizes(cards: int, offers: int, interactions: int, rank: int) -> None:
    """Refuse sizes that cannot hold the requested interactions."""
    if min(cards, offers, rank) < 1 or interactions < cards:
        raise InputError(
            "expected positive cards, offers and rank and at least one interaction "
            f"per card; got cards={cards}, offers={offers}, rank={rank}, "
            f"interactions={interactions}; raise the interactions or lower the cards"
        )
    if interactions > cards * offers:
        raise InputError(
            f"expected at most cards x offers = {cards * offers} interactions; got "
            f"{interactions}; lower the interactions or raise the offers"
        )


def _interactions_per_card(
    rng: np.random.Generator, cards: int, offers: int, interactions: int
) -> np.ndarray:
    """Skewed activity per card holder, each in [1, offers], summing exactly."""
    activity = rng.lognormal(mean=0.0, sigma=0.8, size=cards)
    per_card = np.clip(
        np.floor(activity / activity.sum() * interactions), 1, offers
    ).astype(np.int64)

    while (gap := interactions - int(per_card.sum())) != 0:
        room = per_card < offers if gap > 0 else per_card > 1
        candidates = np.flatnonzero(room)
        size = min(abs(gap), candidates.size)
        picked = rng.choice(candidates, size=size, replace=False)
        per_card[picked] += 1 if gap > 0 else -1
    return per_card


def _gumbel_top_k(
    rng: np.random.Generator, appeal: np.ndarray, per_card: np.ndarray
) -> np.ndarray:
    """Draw ``per_card[i]`` distinct columns of row ``i`` by softmax of ``appeal``.

    Adding Gumbel noise to the logits and keeping the largest ``n`` is a draw of
    ``n`` items without replacement with softmax probabilities.
    """
    keys = appeal + rng.gumbel(size=appeal.shape).astype(np.float32)
    widest = int(per_card.max())
    if widest < keys.shape[1]:
        top = np.argpartition(-keys, widest - 1, axis=1)[:, :widest]
    else:
        top = np.broadcast_to(np.arange(keys.shape[1]), keys.shape)
    order = np.argsort(-np.take_along_axis(keys, top, axis=1), axis=1)
    ranked = np.take_along_axis(top, order, axis=1)

    keep = np.arange(widest)[None, :] < per_card[:, None]
    return ranked[keep].astype(np.int32)


def _keep_entries(matrix: sparse.csr_matrix, mask: np.ndarray) -> sparse.csr_matrix:
    """The CSR matrix holding only the entries where ``mask`` is true."""
    rows = np.repeat(np.arange(matrix.shape[0]), np.diff(matrix.indptr))
    kept = sparse.csr_matrix(
        (matrix.data[mask], (rows[mask], matrix.indices[mask])), shape=matrix.shape
    )
    kept.sort_indices()
    return kept

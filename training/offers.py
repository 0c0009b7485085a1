"""The offer model: collaborative candidates, then a LambdaRank re-ranker.

Stage one proposes candidates per card holder. Cards with interactions get the top
offers of a collaborative-filtering model (implicit ALS by default, EASE as an
option) fitted on card x offer interactions weighted by event kind; cards with
little or no history are topped up with offers popular in their post, in their age
band and overall. A card with no interactions never gets collaborative-filtering
output: it takes the cold-start path of segment and popularity offers.

Stage two re-ranks the candidates with a LightGBM LambdaRank model over the card's
features from the ``offers_v1`` service, the offer's facts, the candidate score and
the card's need propensities (above all the propensity of the offer's own need).

Business rules (eligibility, consent, redeemed offers, quotas) are not applied here:
callers apply :func:`training.rules.apply_rules` to the output.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from scipy import sparse

from features.errors import InputError, NotReadyError
from features.schema import CARD_KEY, NEED_CATEGORIES, OFFER_ID, POST_ID
from training.ranker import LambdaRankReranker
from training.recommenders import (
    ALSRecommender,
    EASERecommender,
    PopularityRecommender,
)

logger = logging.getLogger(__name__)

PROPENSITY_PREFIX = "p_"
SOURCES = ("collaborative", "post", "age_band", "popular")
AGE_BANDS = ((0, 29, "18-29"), (30, 44, "30-44"), (45, 59, "45-59"), (60, 200, "60+"))
OUTPUT_COLUMNS = [CARD_KEY, OFFER_ID, "score", "reason", "source"]
# Offer facts the reason text and the cross features read, when present.
OFFER_NEED = "offer_need_id"
OFFER_CATEGORY = "offer_category"
OFFER_REGION = "offer_region"
FAVOURITE_CATEGORY = "favourite_category_365d"
MATCH_PROPENSITY = 0.15
# Card holders whose re-ranker training rows are built at once.
WINDOW_BLOCK_CARDS = 5_000
# Re-ranker inputs computed per (card, offer) pair rather than read from a store.
PAIR_FEATURES = frozenset(
    {
        "candidate_score",
        "need_propensity",
        "max_propensity",
        "need_z",
        "past_weight",
        "collaborative_score",
        "need_share",
        "offer_popularity",
        "post_popularity",
        "age_band_popularity",
        "source_code",
        "card_history",
        "favourite_match",
        "region_match",
    }
)


def age_band(age: pd.Series) -> pd.Series:
    """The age band label of every age ('18-29', '30-44', '45-59', '60+')."""
    values = pd.to_numeric(age, errors="coerce")
    bands = pd.Series("unknown", index=age.index, dtype=object)
    for low, high, label in AGE_BANDS:
        bands[(values >= low) & (values <= high)] = label
    return bands


def propensity_table(propensities: pd.DataFrame | None) -> pd.DataFrame:
    """Need propensities indexed by card key, one column per need id.

    Accepts a ``card_key`` column or index and need columns named by need id or
    ``p_<need_id>``; needs that are absent become missing values.
    """
    if propensities is None or len(propensities) == 0:
        return pd.DataFrame(columns=list(NEED_CATEGORIES), dtype=float)
    frame = propensities
    if CARD_KEY in frame.columns:
        frame = frame.set_index(CARD_KEY)
    renamed = {
        column: column.removeprefix(PROPENSITY_PREFIX)
        for column in frame.columns
        if str(column).startswith(PROPENSITY_PREFIX)
    }
    frame = frame.rename(columns=renamed)
    return frame.reindex(columns=list(NEED_CATEGORIES)).astype(float)


@dataclass
class OfferTrainingData:
    """What :meth:`OfferModel.fit` learns from.

    The ranker learns on candidates proposed at ``t0`` (interactions before it) and
    labelled by engagement in ``[t0, t0 + horizon)``; the final candidate stage is
    then refitted on every interaction before the cut-off.

    Attributes:
        interactions_t0: ``card_key, offer_id, weight`` before ``t0``.
        labels_t0: ``card_key, offer_id, relevance`` in the window after ``t0``.
        card_features_t0: offers_v1 card features at ``t0``, one row per card.
        propensities_t0: need propensities at ``t0``, one row per card.
        offer_facts_t0: offer features at ``t0``, one row per offer.
        interactions: ``card_key, offer_id, weight`` before the cut-off.
        card_features: card features at the cut-off (segment popularity).
        offer_facts: offer features at the cut-off (kept for the pyfunc wrapper).
        earlier: further label windows before ``t0`` whose candidates the
            re-ranker also learns from, each with its own candidate stage.
    """

    interactions_t0: pd.DataFrame
    labels_t0: pd.DataFrame
    card_features_t0: pd.DataFrame
    propensities_t0: pd.DataFrame
    offer_facts_t0: pd.DataFrame
    interactions: pd.DataFrame
    card_features: pd.DataFrame
    offer_facts: pd.DataFrame
    earlier: list[RankerWindow] = field(default_factory=list)

    def windows(self) -> list[RankerWindow]:
        """Every label window the re-ranker learns from, ``t0`` first."""
        latest = RankerWindow(
            interactions=self.interactions_t0,
            labels=self.labels_t0,
            card_features=self.card_features_t0,
            propensities=self.propensities_t0,
            offer_facts=self.offer_facts_t0,
        )
        return [latest, *self.earlier]


@dataclass
class RankerWindow:
    """One label window of re-ranker training: state at its start, labels after.

    Attributes:
        interactions: ``card_key, offer_id, weight`` before the window.
        labels: ``card_key, offer_id, relevance`` inside the window.
        card_features: offers_v1 card features at the window start.
        propensities: out-of-sample need propensities at the window start.
        offer_facts: offer features at the window start.
    """

    interactions: pd.DataFrame
    labels: pd.DataFrame
    card_features: pd.DataFrame
    propensities: pd.DataFrame
    offer_facts: pd.DataFrame


class CandidateStage:
    """Collaborative-filtering candidates topped up with segment and popular offers.

    Args:
        candidate_model: ``"als"`` or ``"ease"``.
        als_factors: ALS latent dimensions.
        als_iterations: ALS sweeps.
        als_regularization: ALS L2 penalty.
        als_alpha: ALS confidence scale.
        ease_lambda: EASE regularisation.
        min_history: cards with fewer interactions are topped up with segment offers.
        random_state: seed of the factor initialisation.
    """

    def __init__(
        self,
        candidate_model: str = "ease",
        als_factors: int = 32,
        als_iterations: int = 15,
        als_regularization: float = 0.05,
        als_alpha: float = 2.0,
        ease_lambda: float = 200.0,
        min_history: int = 3,
        random_state: int = 42,
    ) -> None:
        self.candidate_model = candidate_model
        self.als_factors = als_factors
        self.als_iterations = als_iterations
        self.als_regularization = als_regularization
        self.als_alpha = als_alpha
        self.ease_lambda = ease_lambda
        self.min_history = min_history
        self.random_state = random_state

    def fit(
        self,
        interactions: pd.DataFrame,
        card_features: pd.DataFrame,
        offers: list[str],
        offer_needs: pd.Series | None = None,
    ) -> CandidateStage:
        """Fit the collaborative model and the popularity tables.

        Args:
            interactions: ``card_key, offer_id, weight``.
            card_features: ``card_key, post_id, age`` of the cards (segments).
            offers: the offer catalogue (column order of the matrix).
            offer_needs: need id of each offer, indexed by offer id (``''`` or
                missing when the offer serves no need).

        Returns:
            The fitted stage.
        """
        self.offers_ = list(offers)
        self.offer_index_ = {offer: i for i, offer in enumerate(self.offers_)}
        known = interactions[interactions[OFFER_ID].isin(self.offer_index_)]
        self.cards_ = sorted(known[CARD_KEY].unique())
        self.card_index_ = {card: i for i, card in enumerate(self.cards_)}

        rows = known[CARD_KEY].map(self.card_index_).to_numpy()
        columns = known[OFFER_ID].map(self.offer_index_).to_numpy()
        self.user_items_ = sparse.csr_matrix(
            (known["weight"].to_numpy(np.float32), (rows, columns)),
            shape=(len(self.cards_), len(self.offers_)),
        )
        self.history_ = np.diff(self.user_items_.indptr)
        self.collaborative_ = self._collaborative().fit(self.user_items_)
        self.popularity_ = PopularityRecommender(binary=True).fit(self.user_items_)
        self._fit_segments(known, card_features)
        self._fit_need_shares(offer_needs)
        return self

    def _fit_need_shares(self, offer_needs: pd.Series | None) -> None:
        """Share of each card's interaction weight on offers of each need."""
        needs = list(NEED_CATEGORIES)
        lookup = {need: j for j, need in enumerate(needs)}
        mapped = (
            pd.Series(self.offers_).map(offer_needs).map(lookup)
            if offer_needs is not None
            else pd.Series(np.nan, index=range(len(self.offers_)))
        )
        self.offer_need_index_ = mapped.fillna(-1).astype(int).to_numpy()
        has_need = self.offer_need_index_ >= 0
        offer_need = sparse.csr_matrix(
            (
                np.ones(int(has_need.sum()), dtype=np.float32),
                (np.flatnonzero(has_need), self.offer_need_index_[has_need]),
            ),
            shape=(len(self.offers_), len(needs)),
        )
        by_need = np.asarray((self.user_items_ @ offer_need).todense())
        totals = np.asarray(self.user_items_.sum(axis=1)).ravel()
        self.card_need_share_ = (
            by_need / np.where(totals > 0, totals, 1.0)[:, None]
        ).astype(np.float32)

    def pair_features(
        self, card_rows: np.ndarray, offer_columns: np.ndarray
    ) -> dict[str, np.ndarray]:
        """Features of (card, offer) pairs that the fitted stage knows.

        Args:
            card_rows: the card's row in the fitted matrix per pair, -1 when unknown.
            offer_columns: the offer's column per pair, -1 when unknown.

        Returns:
            ``past_weight`` (the card's interaction weight with the offer),
            ``collaborative_score`` (the collaborative model's score, NaN for cards
            without interactions) and ``need_share`` (share of the card's
            interaction weight on offers of the same need), one value per pair.
        """
        card_rows = np.asarray(card_rows, dtype=np.int64)
        offer_columns = np.asarray(offer_columns, dtype=np.int64)
        known = (card_rows >= 0) & (offer_columns >= 0)
        out = {
            "past_weight": np.zeros(len(card_rows)),
            "collaborative_score": np.full(len(card_rows), np.nan),
            "need_share": np.zeros(len(card_rows)),
        }
        if not known.any():
            return out
        users, items = card_rows[known], offer_columns[known]
        out["past_weight"][known] = np.asarray(
            self.user_items_[users, items], dtype=np.float64
        ).ravel()

        warm = known.copy()
        warm[known] = self.history_[users] > 0
        if warm.any():
            out["collaborative_score"][warm] = self.collaborative_.score_items(
                card_rows[warm], offer_columns[warm], self.user_items_
            )
        need = self.offer_need_index_[items]
        share = np.zeros(len(users))
        share[need >= 0] = self.card_need_share_[users[need >= 0], need[need >= 0]]
        out["need_share"][known] = share
        return out

    def _collaborative(self) -> ALSRecommender | EASERecommender:
        if self.candidate_model == "als":
            return ALSRecommender(
                factors=self.als_factors,
                regularization=self.als_regularization,
                alpha=self.als_alpha,
                iterations=self.als_iterations,
                random_state=self.random_state,
                num_threads=1,
            )
        if self.candidate_model == "ease":
            return EASERecommender(l2=self.ease_lambda)
        raise InputError(
            f"candidate_model must be 'als' or 'ease'; got {self.candidate_model!r}; "
            "fix offers.candidate_model in the training configuration"
        )

    def _fit_segments(self, known: pd.DataFrame, card_features: pd.DataFrame) -> None:
        """Share of each segment's cards that engaged with each offer."""
        segments = _segments(card_features)
        engaged = known[[CARD_KEY, OFFER_ID]].drop_duplicates()
        engaged = engaged.merge(segments, on=CARD_KEY, how="inner")
        sizes = {
            column: segments[column].value_counts() for column in (POST_ID, "age_band")
        }
        self.segment_popularity_ = {}
        for column in (POST_ID, "age_band"):
            counts = engaged.groupby([column, OFFER_ID]).size().rename("cards")
            table = counts.reset_index()
            table["share"] = table["cards"] / table[column].map(sizes[column])
            self.segment_popularity_[column] = table.pivot_table(
                index=column, columns=OFFER_ID, values="share", fill_value=0.0
            ).reindex(columns=self.offers_, fill_value=0.0)
        overall = self.popularity_.item_popularity_ / max(len(segments), 1)
        self.overall_popularity_ = pd.Series(overall, index=self.offers_)

    def history(self, card_keys: list[str]) -> np.ndarray:
        """Number of offers each card interacted with before the fit."""
        rows = [self.card_index_.get(card, -1) for card in card_keys]
        return np.array([self.history_[r] if r >= 0 else 0 for r in rows], dtype=int)

    def candidates(
        self, card_keys: list[str], card_features: pd.DataFrame, n: int
    ) -> pd.DataFrame:
        """Up to ``n`` candidate offers per card with their first-stage score.

        Cards with at least ``min_history`` interactions keep their best
        ``n - n // 4`` collaborative candidates, cards with fewer their best
        ``n // 2``; every card is then topped up to ``n`` from its post, its age
        band and overall popularity. Cards without interactions get only the
        top-up.

        Returns:
            ``card_key, offer_id, source, candidate_score, candidate_rank``.
        """
        if not hasattr(self, "offers_"):
            raise NotReadyError(
                "expected a fitted candidate stage, got an unfitted one; call fit first"
            )
        n = min(n, len(self.offers_))
        collaborative = self._collaborative_candidates(card_keys, n)
        rich = collaborative[CARD_KEY].map(self._rich).astype(bool).to_numpy()
        place = collaborative.groupby(CARD_KEY).cumcount().to_numpy()
        kept = collaborative[(rich & (place < n - n // 4)) | (place < n // 2)]

        # Every card is topped up, so the re-ranker can also weigh popular offers.
        top_up = self._top_up(list(dict.fromkeys(card_keys)), kept, card_features, n)
        frame = pd.concat([kept, top_up], ignore_index=True)
        frame["candidate_rank"] = frame.groupby(CARD_KEY).cumcount() + 1
        return frame.reset_index(drop=True)

    def _rich(self, card: str) -> bool:
        row = self.card_index_.get(card)
        return row is not None and self.history_[row] >= self.min_history

    def _collaborative_candidates(self, card_keys: list[str], n: int) -> pd.DataFrame:
        """Top-n of the collaborative model for cards that have interactions."""
        warm = [
            (card, self.card_index_[card])
            for card in dict.fromkeys(card_keys)
            if card in self.card_index_ and self.history_[self.card_index_[card]] > 0
        ]
        if not warm:
            return _empty_candidates()
        warm_rows = np.array([row for _, row in warm], dtype=np.int64)
        ids, scores = self.collaborative_.recommend(
            warm_rows, self.user_items_, n, filter_already_liked=False
        )
        cards = np.repeat(np.array([card for card, _ in warm], dtype=object), n)
        flat_ids, flat_scores = ids.ravel(), scores.ravel()
        keep = flat_ids >= 0
        return pd.DataFrame(
            {
                CARD_KEY: cards[keep],
                OFFER_ID: np.array(self.offers_, dtype=object)[flat_ids[keep]],
                "source": "collaborative",
                "candidate_score": flat_scores[keep].astype(float),
            }
        )

    def _top_up(
        self,
        cards: list[str],
        kept: pd.DataFrame,
        card_features: pd.DataFrame,
        n: int,
    ) -> pd.DataFrame:
        """Popular offers of each card's post, age band and overall, in that order."""
        if not cards:
            return _empty_candidates()
        segments = _segments(card_features).set_index(CARD_KEY)
        have = kept.groupby(CARD_KEY)[OFFER_ID].agg(set).to_dict()
        ranked = {
            column: {value: _ranked(table.loc[value], n) for value in table.index}
            for column, table in self.segment_popularity_.items()
        }
        popular = _ranked(self.overall_popularity_, n)

        rows = []
        for card in cards:
            taken = set(have.get(card, set()))
            room = n - len(taken)
            lists = []
            if card in segments.index:
                for column in (POST_ID, "age_band"):
                    value = segments.at[card, column]
                    lists.append((column, ranked[column].get(value, [])))
            lists.append(("popular", popular))
            share = max(room // len(lists), 1)
            for position, (source, offers) in enumerate(lists):
                quota = room if position == len(lists) - 1 else share
                for offer, score in offers:
                    if quota <= 0 or len(taken) >= n:
                        break
                    if offer not in taken:
                        rows.append((card, offer, source, score))
                        taken.add(offer)
                        quota -= 1
                room = n - len(taken)
        return pd.DataFrame(
            rows, columns=[CARD_KEY, OFFER_ID, "source", "candidate_score"]
        )


def _rows_of_cards(frame: pd.DataFrame, cards: set[str]) -> pd.DataFrame:
    """Rows of a frame keyed by a ``card_key`` column or index, for some cards."""
    if CARD_KEY in frame.columns:
        return frame[frame[CARD_KEY].astype(str).isin(cards)]
    return frame[frame.index.astype(str).isin(cards)]


def offer_needs(offer_facts: pd.DataFrame) -> pd.Series:
    """Need id of every offer, indexed by offer id (``''`` for no need)."""
    if OFFER_NEED not in offer_facts.columns:
        return pd.Series(dtype=object)
    facts = offer_facts.drop_duplicates(OFFER_ID)
    return pd.Series(
        facts[OFFER_NEED].fillna("").astype(str).to_numpy(),
        index=facts[OFFER_ID].astype(str).to_numpy(),
    )


def _ranked(scores: pd.Series, n: int) -> list[tuple[str, float]]:
    """The ``n`` offers with the highest positive scores, best first."""
    positive = scores[scores > 0].sort_values(ascending=False, kind="stable")
    return [(str(offer), float(score)) for offer, score in positive.head(n).items()]


class OfferModel:
    """Recommends offers to card holders: candidates, then a LambdaRank re-ranker.

    Serving API (stable): :meth:`recommend` takes pseudonymised card keys and the
    frames the service reads from the online store, and returns ranked offers with a
    short reason each. Business rules are applied by the caller afterwards.

    Args:
        n_candidates: candidates per card holder passed to the re-ranker.
        candidate: the unfitted :class:`CandidateStage` settings.
        ranker: the unfitted :class:`~training.ranker.LambdaRankReranker`.

    Attributes:
        known_cards_: card keys the candidate stage has interactions for; every other
            card takes the cold-start path.
        offer_facts_: offer features at the cut-off, used by the pyfunc wrapper.
        feature_names_: the re-ranker's feature columns.
    """

    def __init__(
        self,
        n_candidates: int = 50,
        candidate: CandidateStage | None = None,
        ranker: LambdaRankReranker | None = None,
    ) -> None:
        self.n_candidates = n_candidates
        self.candidate = candidate
        self.ranker = ranker

    def fit(self, data: OfferTrainingData) -> OfferModel:
        """Train the re-ranker on candidates at ``t0``, then refit the candidates.

        Args:
            data: interactions, labels and features (see :class:`OfferTrainingData`).

        Returns:
            The fitted model.
        """
        offers = sorted(data.offer_facts[OFFER_ID].astype(str).unique())
        self.need_scale_ = need_scale(data.propensities_t0)
        parts = [
            self._window_rows(window, offers, number)
            for number, window in enumerate(data.windows())
        ]
        training = pd.concat(parts, ignore_index=True)
        grades = training["relevance"].to_numpy()
        logger.info(
            "re-ranker trains on %d candidate rows of %d card windows (%d relevant)",
            len(training),
            training["_query"].nunique(),
            int((grades > 0).sum()),
        )

        self.ranker_ = self.ranker or LambdaRankReranker()
        self.feature_names_ = _ranker_columns(training, data.card_features_t0)
        features = training[self.feature_names_]
        queries = training["_query"].to_numpy()
        del training, parts
        self.ranker_.fit(features, grades, queries)
        del features
        return self.refit_candidates(
            data.interactions, data.card_features, data.offer_facts
        )

    def _window_rows(
        self, window: RankerWindow, offers: list[str], number: int
    ) -> pd.DataFrame:
        """Labelled candidate rows of one window's cards that engaged in it.

        Rows are built for blocks of ``WINDOW_BLOCK_CARDS`` card holders at a
        time; a card's rows depend on its own data only, and the re-ranker
        orders its training rows by content, so the blocks change nothing but
        the memory held. A card's own features are dropped from its rows: the
        re-ranker never learns from them (see :func:`_ranker_columns`).
        """
        template = self.candidate or CandidateStage()
        stage = _clone_stage(template).fit(
            window.interactions,
            window.card_features,
            offers,
            offer_needs(window.offer_facts),
        )
        engaged = set(window.labels[CARD_KEY])
        cards = [
            card
            for card in window.card_features[CARD_KEY].astype(str)
            if card in engaged
        ]
        firsts = range(0, len(cards), WINDOW_BLOCK_CARDS) or range(1)
        parts = [
            self._labelled_block(
                stage, window, cards[first : first + WINDOW_BLOCK_CARDS]
            )
            for first in firsts
        ]
        rows = pd.concat(parts, ignore_index=True) if len(parts) > 1 else parts[0]
        rows["_query"] = f"{number}:" + rows[CARD_KEY].astype(str)
        return rows

    def _labelled_block(
        self, stage: CandidateStage, window: RankerWindow, cards: list[str]
    ) -> pd.DataFrame:
        """Labelled candidate rows of some of a window's cards, card columns dropped."""
        chosen = set(cards)
        card_features = window.card_features[
            window.card_features[CARD_KEY].astype(str).isin(chosen)
        ]
        rows = self._candidate_rows(
            stage,
            cards,
            card_features,
            _rows_of_cards(window.propensities, chosen),
            window.offer_facts,
            self.n_candidates,
        )
        card_only = [
            c for c in window.card_features.columns if c != CARD_KEY and c in rows
        ]
        rows = rows.drop(columns=card_only)
        labels = window.labels[window.labels[CARD_KEY].isin(chosen)]
        rows = rows.merge(labels, on=[CARD_KEY, OFFER_ID], how="left")
        rows["relevance"] = rows["relevance"].fillna(0).astype(int)
        has_positive = rows.groupby(CARD_KEY)["relevance"].transform("max") > 0
        return rows[has_positive.to_numpy()].reset_index(drop=True)

    def refit_candidates(
        self,
        interactions: pd.DataFrame,
        card_features: pd.DataFrame,
        offer_facts: pd.DataFrame,
    ) -> OfferModel:
        """Refit the candidate stage on newer data; the re-ranker stays as trained.

        The re-ranker's features are relative (scores, shares, propensities), so it
        carries over to a candidate stage fitted on every interaction up to a later
        time: card holders active since the first fit then get personal offers
        instead of the cold-start path.

        Args:
            interactions: ``card_key, offer_id, weight`` up to the new time.
            card_features: offers_v1 card features at the new time (segments).
            offer_facts: offers_v1 offer features at the new time.

        Returns:
            The model with the refitted candidate stage.
        """
        template = self.candidate or CandidateStage()
        offers = sorted(offer_facts[OFFER_ID].astype(str).unique())
        self.stage_ = _clone_stage(template).fit(
            interactions, card_features, offers, offer_needs(offer_facts)
        )
        self.known_cards_ = frozenset(self.stage_.cards_)
        self.offer_facts_ = offer_facts.reset_index(drop=True)
        return self

    def recommend(
        self,
        card_keys: list[str],
        card_features: pd.DataFrame,
        propensities: pd.DataFrame,
        offer_facts: pd.DataFrame,
        n_candidates: int,
    ) -> pd.DataFrame:
        """Ranked offers for each card holder, best first.

        Args:
            card_keys: pseudonymised card keys (never card numbers).
            card_features: online features of the ``offers_v1`` service, one row per
                card with a ``card_key`` column (``post_id`` and ``age`` drive the
                cold-start segments).
            propensities: need propensities, a ``card_key`` column (or index) and
                one column per need id (``study_in_taiwan`` or
                ``p_study_in_taiwan``); may be empty.
            offer_facts: offer features of the ``offers_v1`` service, one row per
                offer with an ``offer_id`` column.
            n_candidates: candidates per card to re-rank (and the most returned).

        Returns:
            ``card_key, offer_id, score, reason, source`` sorted by card (in the
            order given) and score descending. ``source`` is ``collaborative``,
            ``post``, ``age_band`` or ``popular``; cards without interactions never
            get ``collaborative`` rows.
        """
        self._check_fitted()
        keys = [str(card) for card in card_keys]
        rows = self._candidate_rows(
            self.stage_, keys, card_features, propensities, offer_facts, n_candidates
        )
        if rows.empty:
            return pd.DataFrame(columns=OUTPUT_COLUMNS)
        # A feature the caller could not fetch scores as missing, not as an error.
        features = rows.reindex(columns=self.feature_names_).astype(float)
        rows["score"] = self.ranker_.predict(features)
        rows["reason"] = _reasons(rows)
        order = {card: position for position, card in enumerate(dict.fromkeys(keys))}
        rows["_order"] = rows[CARD_KEY].map(order)
        rows = rows.sort_values(
            ["_order", "score", OFFER_ID], ascending=[True, False, True], kind="stable"
        )
        return rows[OUTPUT_COLUMNS].reset_index(drop=True)

    def predict_frame(self, frame: pd.DataFrame) -> pd.DataFrame:
        """Pyfunc entry point: card features and propensities in, offers out.

        Args:
            frame: one row per card with ``card_key``, the offers_v1 card features
                and ``p_<need_id>`` propensity columns.

        Returns:
            The output of :meth:`recommend` with the offer facts of the cut-off.
        """
        keys = frame[CARD_KEY].astype(str).tolist()
        propensity_columns = [
            c for c in frame.columns if c.startswith(PROPENSITY_PREFIX)
        ]
        return self.recommend(
            keys,
            frame,
            frame[[CARD_KEY, *propensity_columns]],
            self.offer_facts_,
            self.n_candidates,
        )

    def feature_importance(self) -> pd.Series:
        """Gain of each re-ranker feature, largest first."""
        self._check_fitted()
        return self.ranker_.feature_importance("gain")

    def _check_fitted(self) -> None:
        if not hasattr(self, "ranker_"):
            raise NotReadyError(
                "expected a fitted OfferModel, got one that was never fitted; "
                "call fit(OfferTrainingData) first"
            )

    def _candidate_rows(
        self,
        stage: CandidateStage,
        card_keys: list[str],
        card_features: pd.DataFrame,
        propensities: pd.DataFrame,
        offer_facts: pd.DataFrame,
        n: int,
    ) -> pd.DataFrame:
        """Candidates with every re-ranker feature."""
        cards = card_features.drop_duplicates(CARD_KEY).copy()
        cards[CARD_KEY] = cards[CARD_KEY].astype(str)
        candidates = stage.candidates(card_keys, cards, n)
        return candidate_features(
            stage,
            candidates,
            cards,
            propensities,
            offer_facts,
            getattr(self, "need_scale_", None),
        )


def candidate_features(
    stage: CandidateStage,
    candidates: pd.DataFrame,
    card_features: pd.DataFrame,
    propensities: pd.DataFrame,
    offer_facts: pd.DataFrame,
    need_scale: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """Join card, offer, candidate and propensity features onto candidate rows.

    ``need_scale`` (see :func:`need_scale`) turns each candidate's need propensity
    into ``need_z``, comparable across needs of different base rates.
    """
    cards = _numeric(
        card_features, keep=(CARD_KEY, POST_ID, "age", FAVOURITE_CATEGORY, "region")
    )
    offers = (
        _numeric(
            offer_facts.drop_duplicates(OFFER_ID),
            keep=(OFFER_ID, OFFER_NEED, OFFER_CATEGORY, OFFER_REGION),
        )
        .add_prefix("o_")
        .rename(columns={f"o_{OFFER_ID}": OFFER_ID})
    )
    rows = candidates.merge(cards, on=CARD_KEY, how="left")
    rows = rows.merge(offers, on=OFFER_ID, how="left")

    table = propensity_table(propensities)
    rows["need_propensity"] = _offer_need_propensity(rows, table)
    rows["max_propensity"] = rows[CARD_KEY].map(table.max(axis=1)).astype(float)
    offer_need = rows.get(f"o_{OFFER_NEED}", pd.Series("", index=rows.index))
    rows["need_z"] = need_z(
        rows["need_propensity"].to_numpy(), offer_need.fillna("").tolist(), need_scale
    )
    pairs = stage.pair_features(
        rows[CARD_KEY].map(stage.card_index_).fillna(-1).astype(int).to_numpy(),
        rows[OFFER_ID].map(stage.offer_index_).fillna(-1).astype(int).to_numpy(),
    )
    for name, values in pairs.items():
        rows[name] = values
    rows["offer_popularity"] = (
        rows[OFFER_ID].map(stage.overall_popularity_).astype(float)
    )
    rows["post_popularity"] = _segment_share(stage, rows, POST_ID, rows.get(POST_ID))
    rows["age_band_popularity"] = _segment_share(
        stage,
        rows,
        "age_band",
        age_band(rows.get("age", pd.Series(np.nan, index=rows.index))),
    )
    rows["source_code"] = rows["source"].map({s: i for i, s in enumerate(SOURCES)})
    rows["card_history"] = stage.history(rows[CARD_KEY].tolist())
    rows["favourite_match"] = _same(rows, FAVOURITE_CATEGORY, f"o_{OFFER_CATEGORY}")
    rows["region_match"] = _same(rows, "region", f"o_{OFFER_REGION}")
    return rows


def need_scale(propensities: pd.DataFrame) -> pd.DataFrame:
    """Mean and spread of the log-odds of each need's propensity over card holders.

    Args:
        propensities: need propensities of the training cards (any form
            :func:`propensity_table` reads).

    Returns:
        ``mean`` and ``std`` of the log-odds, indexed by need id.
    """
    log_odds = _log_odds(propensity_table(propensities).to_numpy(dtype=float))
    spread = np.nanstd(log_odds, axis=0) if len(log_odds) else np.ones(0)
    return pd.DataFrame(
        {
            "mean": np.nanmean(log_odds, axis=0) if len(log_odds) else np.zeros(0),
            "std": np.where(spread > 0, spread, 1.0) if len(log_odds) else spread,
        },
        index=list(NEED_CATEGORIES) if len(log_odds) else [],
    )


def need_z(
    propensity: np.ndarray, need_ids: list[str], scale: pd.DataFrame | None
) -> np.ndarray:
    """Standardised log-odds of each candidate's need propensity (NaN when unknown).

    Args:
        propensity: the card's propensity for the candidate offer's need.
        need_ids: the candidate offer's need id ('' when none), aligned.
        scale: the output of :func:`need_scale`; ``None`` gives NaN.

    Returns:
        One value per candidate.
    """
    out = np.full(len(propensity), np.nan)
    if scale is None or scale.empty:
        return out
    mean = pd.Series(need_ids).map(scale["mean"]).to_numpy(dtype=float)
    std = pd.Series(need_ids).map(scale["std"]).to_numpy(dtype=float)
    return (_log_odds(np.asarray(propensity, dtype=float)) - mean) / std


def _log_odds(p: np.ndarray) -> np.ndarray:
    clipped = np.clip(p, 1e-4, 1 - 1e-4)
    return np.log(clipped / (1 - clipped))


def _numeric(frame: pd.DataFrame, keep: tuple[str, ...]) -> pd.DataFrame:
    """Numeric and boolean columns plus the named key and text columns."""
    columns = [
        c
        for c in frame.columns
        if c in keep
        or (pd.api.types.is_numeric_dtype(frame[c]) and c != "event_timestamp")
    ]
    numeric = frame[columns].copy()
    for column in numeric.columns:
        if pd.api.types.is_bool_dtype(numeric[column]):
            numeric[column] = numeric[column].astype(float)
    return numeric


def _offer_need_propensity(rows: pd.DataFrame, table: pd.DataFrame) -> np.ndarray:
    """Propensity of each candidate's card for the candidate offer's need."""
    needs = rows.get(f"o_{OFFER_NEED}", pd.Series("", index=rows.index)).fillna("")
    out = np.full(len(rows), np.nan)
    if table.empty:
        return out
    stacked = table.stack()
    keys = pd.MultiIndex.from_arrays([rows[CARD_KEY], needs.astype(str)])
    found = stacked.reindex(keys).to_numpy(dtype=float)
    return np.where(np.isnan(found), out, found)


def _segment_share(
    stage: CandidateStage, rows: pd.DataFrame, column: str, values: pd.Series | None
) -> np.ndarray:
    """Share of the card's segment that engaged with the candidate offer."""
    if values is None:
        return np.zeros(len(rows))
    stacked = stage.segment_popularity_[column].stack()
    keys = pd.MultiIndex.from_arrays([values.astype(str), rows[OFFER_ID]])
    return stacked.reindex(keys).fillna(0.0).to_numpy(dtype=float)


def _same(rows: pd.DataFrame, left: str, right: str) -> np.ndarray:
    if left not in rows.columns or right not in rows.columns:
        return np.zeros(len(rows))
    return (rows[left].astype(str) == rows[right].astype(str)).to_numpy(dtype=float)


def _segments(card_features: pd.DataFrame) -> pd.DataFrame:
    """``card_key, post_id, age_band`` of each card."""
    frame = pd.DataFrame({CARD_KEY: card_features[CARD_KEY].astype(str)})
    posts = card_features.get(POST_ID)
    frame[POST_ID] = posts.astype(str).to_numpy() if posts is not None else "unknown"
    ages = (
        card_features["age"]
        if "age" in card_features
        else pd.Series(np.nan, index=card_features.index)
    )
    frame["age_band"] = age_band(ages).to_numpy()
    return frame.drop_duplicates(CARD_KEY)


def _ranker_columns(rows: pd.DataFrame, card_features: pd.DataFrame) -> list[str]:
    """Numeric columns of the candidate rows that the re-ranker learns from.

    A card's own features are the same on all its candidates and cannot order
    them by themselves; with a few thousand card holders per training window they
    mostly let the trees memorise cards, so only offer and pair features are kept.
    """
    skip = {CARD_KEY, OFFER_ID, "source", "relevance", "candidate_rank", "_query"}
    skip |= set(card_features.columns)
    return [
        c
        for c in rows.columns
        if c not in skip and pd.api.types.is_numeric_dtype(rows[c])
    ]


def _reasons(rows: pd.DataFrame) -> list[str]:
    """A short reason a card holder understands, per recommended offer."""
    needs = rows.get(f"o_{OFFER_NEED}", pd.Series("", index=rows.index)).fillna("")
    reasons = []
    for source, need, propensity in zip(
        rows["source"], needs, rows["need_propensity"], strict=True
    ):
        if need in NEED_CATEGORIES and propensity >= MATCH_PROPENSITY:
            reasons.append(f"matches your interest in {NEED_CATEGORIES[need]}")
        elif source == "collaborative":
            reasons.append("similar card holders liked this")
        elif source in ("post", POST_ID):
            reasons.append("popular with card holders of your post")
        elif source == "age_band":
            reasons.append("popular with card holders of your age")
        else:
            reasons.append("popular with card holders")
    return reasons


def _clone_stage(stage: CandidateStage) -> CandidateStage:
    """An unfitted copy of a candidate stage with the same settings."""
    return CandidateStage(
        candidate_model=stage.candidate_model,
        als_factors=stage.als_factors,
        als_iterations=stage.als_iterations,
        als_regularization=stage.als_regularization,
        als_alpha=stage.als_alpha,
        ease_lambda=stage.ease_lambda,
        min_history=stage.min_history,
        random_state=stage.random_state,
    )


def _empty_candidates() -> pd.DataFrame:
    return pd.DataFrame(
        {
            CARD_KEY: pd.Series(dtype=object),
            OFFER_ID: pd.Series(dtype=object),
            "source": pd.Series(dtype=object),
            "candidate_score": pd.Series(dtype=float),
        }
    )

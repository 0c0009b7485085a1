"""The per-request scorer, compiled once from the champion models.

:meth:`training.offers.OfferModel.recommend` followed by
:func:`training.rules.apply_rules` is the reference path: clear, frame-based and
shared with evaluation and batch scoring, but it spends hundreds of milliseconds in
pandas for a single card. :class:`CompiledScorer` gives the same offers, in the
same order and with the same scores, from arrays built at load time:

- offer facts, rule fields and popularity tables as numpy arrays indexed by the
  candidate stage's offer position, with validity and quota already decided for
  the service's clock;
- segment and overall popularity lists ranked once;
- the needs boosters and the re-ranker called with float matrices in each model's
  own feature order;
- rules applied with numpy masks, then a short loop per card for diversity and k.

``tests/unit/test_compiled_scorer.py`` runs both paths on the same cards and time
and asserts identical top-k lists.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from features.schema import CARD_KEY, NEED_CATEGORIES, OFFER_ID, OFFER_REGION_GLOBAL
from training.rules import category_key, is_true, utc_naive

if TYPE_CHECKING:
    from training.needs import NeedsModel
    from training.offers import CandidateStage, OfferModel

ACTIVE = "active"
# Key under which a cached card row carries its need propensities: they depend on
# the row alone, so they are computed once per store read, not once per request.
PROPENSITIES = "__propensities__"
# Key under which a card row keeps its scored offers that pass the rules which do
# not depend on the request (all but exclusions, diversity and k), best first.
ELIGIBLE = "__eligible__"
MAX_PER_CATEGORY = 2


@dataclass(frozen=True)
class RankedOffer:
    """One offer kept for a card: its rank, id, re-ranker score and reason."""

    rank: int
    offer_id: str
    score: float
    reason: str


@dataclass
class _Candidates:
    """Candidate rows of one request, flat over its cards."""

    card: list[int]
    offer: list[int]
    source: list[int]
    score: list[float]


def _text(value: Any) -> str:
    """Text as pandas ``astype(str)`` gives it (None as 'None', NaN as 'nan')."""
    return "None" if value is None else str(value)


def _number(value: Any) -> float:
    """A feature value as a float; missing (None, NA) as NaN."""
    if value is None or value is pd.NA:
        return math.nan
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def _code(lookup: dict[str, int], value: Any) -> float:
    """Fit-time code of a categorical value; NaN for missing or unseen."""
    if value is None or value is pd.NA:
        return math.nan
    return lookup.get(str(value), math.nan)


def age_band_of(age: float) -> str:
    """The age band label of one age, as :func:`training.offers.age_band` gives."""
    from training.offers import AGE_BANDS

    label = "unknown"
    for low, high, name in AGE_BANDS:
        if low <= age <= high:
            label = name
    return label


class CompiledNeeds:
    """Calibrated need propensities from plain card rows.

    Args:
        model: the fitted needs model.
    """

    def __init__(self, model: NeedsModel) -> None:
        self.model = model
        encoding = model.encoding_
        self.names = list(encoding.names)
        self.need_ids = list(model.needs_)
        self.lookups: dict[str, dict[str, int]] = {}
        for name, levels in encoding.categories.items():
            codes = encoding.codes.get(name)
            if codes is None:
                codes = {str(level): i for i, level in enumerate(levels)}
            self.lookups[name] = codes

    def matrix(self, rows: Sequence[dict[str, Any]]) -> np.ndarray:
        """The encoded feature matrix of ``rows`` in the model's feature order."""
        out = np.empty((len(rows), len(self.names)), dtype=np.float64)
        for j, name in enumerate(self.names):
            lookup = self.lookups.get(name)
            if lookup is None:
                out[:, j] = [_number(row.get(name)) for row in rows]
            else:
                out[:, j] = [_code(lookup, row.get(name)) for row in rows]
        return out

    def propensities(self, rows: Sequence[dict[str, Any]]) -> np.ndarray:
        """Propensities of shape (cards, needs), needs in :attr:`need_ids` order."""
        if not rows:
            return np.zeros((0, len(self.need_ids)))
        return self.model.predict_matrix(self.matrix(rows))


class _OfferTables:
    """Offer facts, rule fields and popularity, indexed by offer position."""

    def __init__(
        self,
        stage: CandidateStage,
        facts: pd.DataFrame,
        rule_offers: pd.DataFrame,
        at: pd.Timestamp,
        offer_features: list[str],
    ) -> None:
        from training.offers import OFFER_CATEGORY, OFFER_NEED, OFFER_REGION

        self.ids = [str(offer) for offer in stage.offers_]
        n = len(self.ids)
        facts = facts.drop_duplicates(OFFER_ID).set_index(OFFER_ID)
        position = facts.index.get_indexer(self.ids)
        self.in_facts = position >= 0
        self.features = np.full((n, len(offer_features)), np.nan)
        for j, name in enumerate(offer_features):
            column = name.removeprefix("o_")
            if column in facts.columns and _is_numeric(facts[column]):
                values = facts[column].to_numpy(dtype=np.float64, na_value=np.nan)
                self.features[self.in_facts, j] = values[position[self.in_facts]]
        self.need = self._texts(facts, OFFER_NEED, position, fill="")
        self.category_text = self._texts(facts, OFFER_CATEGORY, position, None)
        self.region_text = self._texts(facts, OFFER_REGION, position, None)
        self.popularity = (
            stage.overall_popularity_.reindex(self.ids).astype(float).to_numpy()
        )
        self.sort_key = np.argsort(np.argsort(np.array(self.ids, dtype=str)))
        self._rules(rule_offers, at)

    @staticmethod
    def _texts(
        facts: pd.DataFrame, column: str, position: np.ndarray, fill: str | None
    ) -> list[Any]:
        """Offer text facts; an offer outside the facts reads as NaN, as a join."""
        if column not in facts.columns:
            return [fill if fill is not None else math.nan] * len(position)
        values = facts[column].to_numpy(dtype=object)
        out: list[Any] = []
        for p in position:
            value = values[p] if p >= 0 else math.nan
            if fill is not None and (value is None or pd.isna(value)):
                value = fill
            out.append(value)
        return out

    def _rules(self, offers: pd.DataFrame, at: pd.Timestamp) -> None:
        from training.rules import as_utc

        position = offers.index.get_indexer(self.ids)
        known = position >= 0
        take = np.maximum(position, 0)
        when = as_utc(at)
        start = utc_naive(offers["valid_from"])[take]
        end = utc_naive(offers["valid_to"])[take]
        moment = when.tz_localize(None).to_datetime64()
        start_ok = np.isnat(start) | ~(start > moment)
        end_ok = np.isnat(end) | ~(end < moment)
        with np.errstate(invalid="ignore"):
            quota = _floats(offers["quota_left"])[take]
            quota_ok = ~(quota <= 0)
        # Validity and quota depend on the offer and the scorer's clock only.
        self.open = known & start_ok & end_ok & quota_ok
        self.region = [
            offers["region"].iloc[p] if p >= 0 else None for p in position.tolist()
        ]
        self.is_global = np.array(
            [region == OFFER_REGION_GLOBAL for region in self.region], dtype=bool
        )
        self.min_age = np.where(known, _floats(offers["min_age"])[take], np.nan)
        self.max_age = np.where(known, _floats(offers["max_age"])[take], np.nan)
        active = np.array(
            [is_true(v) for v in offers["requires_active_card"]], dtype=bool
        )
        self.requires_active = known & active[take]
        categories = [category_key(v) for v in offers["category"]]
        self.category = [categories[p] if p >= 0 else "" for p in position.tolist()]


def numeric_card_features() -> frozenset[str]:
    """Card features the online store holds as numbers (the re-ranker's inputs)."""
    from feast.types import Bool, Float32, Float64, Int32, Int64

    from features.repo.definitions import VIEW_FIELDS

    numeric = (Bool, Float32, Float64, Int32, Int64)
    return frozenset(
        field.name
        for view in ("card_profile", "push_engagement", "service_use", "offer_history")
        for field in VIEW_FIELDS[view]
        if field.dtype in numeric
    )


def _row_max(table: np.ndarray) -> np.ndarray:
    """Largest value of each row, skipping NaN; NaN when a row has none."""
    filled = np.where(np.isnan(table), -np.inf, table)
    best = filled.max(axis=1, initial=-np.inf)
    return np.where(np.isneginf(best), np.nan, best)


def _is_numeric(column: pd.Series) -> bool:
    return pd.api.types.is_numeric_dtype(column) or pd.api.types.is_bool_dtype(column)


def _floats(column: pd.Series) -> np.ndarray:
    return pd.to_numeric(column, errors="coerce").to_numpy(np.float64)


class CompiledOffers:
    """Ranked, rule-checked offers from plain card rows and need propensities.

    Args:
        model: the fitted offer model.
        facts: offer features of the ``offers_v1`` service, one row per offer.
        rule_offers: the rules' offer table, indexed by offer id.
        at: the moment offers are checked for validity.
    """

    def __init__(
        self,
        model: OfferModel,
        facts: pd.DataFrame,
        rule_offers: pd.DataFrame,
        at: pd.Timestamp,
    ) -> None:
        from features.schema import POST_ID
        from training.offers import SOURCES, _ranked

        stage = model.stage_
        self.stage = stage
        self.names = list(model.feature_names_)
        self.booster = model.ranker_.booster_
        self.best_iteration = model.ranker_.best_iteration_
        self.need_scale = getattr(model, "need_scale_", None)
        self.n = min(model.n_candidates, len(stage.offers_))
        offer_names = [n for n in self.names if n.startswith("o_")]
        self.offers = _OfferTables(stage, facts, rule_offers, at, offer_names)
        self.offer_columns = [self.names.index(n) for n in offer_names]
        self.index = {offer: i for i, offer in enumerate(self.offers.ids)}
        self.sources = {name: i for i, name in enumerate((*SOURCES, POST_ID))}
        self.source_codes = np.array([*range(len(SOURCES)), np.nan])
        self.card_numeric = numeric_card_features()
        self.reason_texts: list[str] = []
        self.reason_codes: dict[str, int] = {}

        self.segment_share: dict[str, dict[str, np.ndarray]] = {}
        self.segment_lists: dict[str, dict[str, list[tuple[int, float]]]] = {}
        for column, table in stage.segment_popularity_.items():
            table = table.reindex(columns=stage.offers_, fill_value=0.0)
            shares = table.to_numpy(dtype=np.float64)
            self.segment_share[column] = {
                str(value): shares[i] for i, value in enumerate(table.index)
            }
            self.segment_lists[column] = {
                value: self._positions(_ranked(table.loc[value], self.n))
                for value in table.index
            }
        self.popular = self._positions(_ranked(stage.overall_popularity_, self.n))

    def _positions(self, ranked: list[tuple[str, float]]) -> list[tuple[int, float]]:
        return [(self.index[offer], score) for offer, score in ranked]

    def rank(
        self,
        card_keys: list[str],
        rows: Sequence[dict[str, Any]],
        need_ids: list[str],
        propensities: np.ndarray,
        k: int,
        exclude: Iterable[str] = (),
    ) -> dict[str, list[RankedOffer]]:
        """The top ``k`` offers of each card that pass every business rule.

        Args:
            card_keys: unique card keys to rank offers for.
            rows: each card's online features (plain values); a card unknown to
                the store has None values (an active card of unknown age and
                region, whose consent the caller holds).
            need_ids: column order of ``propensities``.
            propensities: calibrated need propensities, one row per card.
            k: offers per card at most.
            exclude: offer ids never to show.

        Returns:
            Kept offers by card key, best first; cards with none are absent.
        """
        pending = [i for i, row in enumerate(rows) if ELIGIBLE not in row]
        if pending:
            self._rank_eligible(
                [card_keys[i] for i in pending],
                [rows[i] for i in pending],
                need_ids,
                propensities[pending],
            )
        excluded = set(exclude)
        result: dict[str, list[RankedOffer]] = {}
        for key, row in zip(card_keys, rows, strict=True):
            chosen = self._top(row[ELIGIBLE], k, excluded)
            if chosen:
                result[key] = chosen
        return result

    def _rank_eligible(
        self,
        card_keys: list[str],
        rows: Sequence[dict[str, Any]],
        need_ids: list[str],
        propensities: np.ndarray,
    ) -> None:
        """Score every candidate of each card and keep, in each card's row, those
        that pass the rules which do not depend on the request, best first.
        """
        table = self._propensity_table(need_ids, propensities)
        candidates = self._candidates(card_keys, rows)
        scores = np.zeros(0)
        if candidates.card:
            matrix = self._features(card_keys, rows, candidates, table)
            # Only candidates that pass the card's rules can be kept, so only they
            # are scored; the others keep NaN, which the rules read as failed.
            passing = self._passing(rows, candidates)
            scores = np.full(len(candidates.card), np.nan)
            if passing.any():
                # One thread: OpenMP start-up costs more than a few rows of trees.
                scores[passing] = self.booster.predict(
                    matrix[passing], num_iteration=self.best_iteration, num_threads=1
                )
        self._eligible(rows, candidates, table, scores)

    def _passing(
        self, rows: Sequence[dict[str, Any]], found: _Candidates
    ) -> np.ndarray:
        """Which candidate rows pass the rules that read only the card and offer."""
        card = np.asarray(found.card, dtype=np.int64)
        offer = np.asarray(found.offer, dtype=np.int64)
        passing = self.offers.open[offer].copy()
        bounds = np.searchsorted(card, np.arange(len(rows) + 1))
        for c, row in enumerate(rows):
            span = slice(bounds[c], bounds[c + 1])
            passing[span] &= self._card_ok(row, offer[span])
        return passing

    @staticmethod
    def _propensity_table(need_ids: list[str], values: np.ndarray) -> np.ndarray:
        """Propensities in :data:`NEED_CATEGORIES` order; absent needs as NaN."""
        table = np.full((values.shape[0], len(NEED_CATEGORIES)), np.nan)
        for j, need in enumerate(NEED_CATEGORIES):
            if need in need_ids:
                table[:, j] = values[:, need_ids.index(need)]
        return table

    # Candidates ----------------------------------------------------------------

    def _candidates(
        self, card_keys: list[str], rows: Sequence[dict[str, Any]]
    ) -> _Candidates:
        stage, n = self.stage, self.n
        found = _Candidates([], [], [], [])
        collaborative = self._collaborative(card_keys)
        for c, (card, row) in enumerate(zip(card_keys, rows, strict=True)):
            kept = collaborative.get(card, [])
            history = self._history(card)
            keep = n - n // 4 if history >= stage.min_history else n // 2
            kept = kept[:keep]
            for offer, score in kept:
                found.card.append(c)
                found.offer.append(offer)
                found.source.append(self.sources["collaborative"])
                found.score.append(score)
            self._top_up(c, row, {offer for offer, _ in kept}, found)
        return found

    def _history(self, card: str) -> int:
        row = self.stage.card_index_.get(card)
        return 0 if row is None else int(self.stage.history_[row])

    def _collaborative(
        self, card_keys: list[str]
    ) -> dict[str, list[tuple[int, float]]]:
        warm = [card for card in card_keys if self._history(card) > 0]
        if not warm:
            return {}
        rows = np.array([self.stage.card_index_[c] for c in warm], dtype=np.int64)
        ids, scores = self.stage.collaborative_.recommend(
            rows, self.stage.user_items_, self.n, filter_already_liked=False
        )
        out = {}
        for card, card_ids, card_scores in zip(warm, ids, scores, strict=True):
            keep = card_ids >= 0
            out[card] = list(
                zip(
                    card_ids[keep].tolist(),
                    card_scores[keep].astype(float).tolist(),
                    strict=True,
                )
            )
        return out

    def _top_up(
        self, c: int, row: dict[str, Any], taken: set[int], found: _Candidates
    ) -> None:
        """Popular offers of the card's post, age band and overall, in that order."""
        from features.schema import POST_ID

        n = self.n
        lists = [
            # The candidate stage names post top-ups by their column, a name the
            # re-ranker's source codes do not know: it learned them as missing.
            (POST_ID, self.segment_lists[POST_ID].get(_text(row.get(POST_ID)), [])),
            (
                "age_band",
                self.segment_lists["age_band"].get(
                    age_band_of(_number(row.get("age"))), []
                ),
            ),
            ("popular", self.popular),
        ]
        room = n - len(taken)
        share = max(room // len(lists), 1)
        for position, (source, offers) in enumerate(lists):
            quota = room if position == len(lists) - 1 else share
            for offer, score in offers:
                if quota <= 0 or len(taken) >= n:
                    break
                if offer not in taken:
                    found.card.append(c)
                    found.offer.append(offer)
                    found.source.append(self.sources[source])
                    found.score.append(score)
                    taken.add(offer)
                    quota -= 1
            room = n - len(taken)

    # Features ------------------------------------------------------------------

    def _features(
        self,
        card_keys: list[str],
        rows: Sequence[dict[str, Any]],
        found: _Candidates,
        table: np.ndarray,
    ) -> np.ndarray:
        from features.schema import POST_ID
        from training.offers import PAIR_FEATURES, need_z

        card = np.asarray(found.card, dtype=np.int64)
        offer = np.asarray(found.offer, dtype=np.int64)
        matrix = np.full((len(card), len(self.names)), np.nan)
        matrix[:, self.offer_columns] = self.offers.features[offer][:, :]

        card_names = [
            (j, name)
            for j, name in enumerate(self.names)
            if name not in PAIR_FEATURES and name in self.card_numeric
        ]
        card_values = np.array(
            [[_number(row.get(name)) for _, name in card_names] for row in rows],
            dtype=np.float64,
        ).reshape(len(rows), len(card_names))
        matrix[:, [j for j, _ in card_names]] = card_values[card]

        need_column = {need: j for j, need in enumerate(NEED_CATEGORIES)}
        need_of_offer = np.array(
            [need_column.get(self.offers.need[o], -1) for o in found.offer],
            dtype=np.int64,
        )
        has_need = need_of_offer >= 0
        need_propensity = np.full(len(card), np.nan)
        need_propensity[has_need] = table[card[has_need], need_of_offer[has_need]]
        best = _row_max(table)

        posts = [_text(row.get(POST_ID)) for row in rows]
        bands = [age_band_of(_number(row.get("age"))) for row in rows]
        derived = {
            "candidate_score": np.asarray(found.score, dtype=np.float64),
            "need_propensity": need_propensity,
            "max_propensity": best[card],
            "need_z": need_z(
                need_propensity,
                [self.offers.need[o] for o in found.offer],
                self.need_scale,
            ),
            **self._pair_features(card_keys, card, offer),
            "offer_popularity": self.offers.popularity[offer],
            "post_popularity": self._share(POST_ID, posts, card, offer),
            "age_band_popularity": self._share("age_band", bands, card, offer),
            "source_code": self.source_codes[np.asarray(found.source, np.int64)],
            "card_history": np.array(
                [self._history(key) for key in card_keys], dtype=np.float64
            )[card],
            "favourite_match": self._match(
                rows, "favourite_category_365d", self.offers.category_text, found
            ),
            "region_match": self._match(rows, "region", self.offers.region_text, found),
        }
        for j, name in enumerate(self.names):
            if name in derived:
                matrix[:, j] = derived[name]
        return matrix

    def _pair_features(
        self, card_keys: list[str], card: np.ndarray, offer: np.ndarray
    ) -> dict[str, np.ndarray]:
        users = np.array(
            [self.stage.card_index_.get(key, -1) for key in card_keys], dtype=np.int64
        )[card]
        return self.stage.pair_features(users, offer)

    def _share(
        self, column: str, values: list[str], card: np.ndarray, offer: np.ndarray
    ) -> np.ndarray:
        shares = self.segment_share[column]
        out = np.zeros(len(card))
        for c, value in enumerate(values):
            row = shares.get(value)
            if row is not None:
                mine = card == c
                out[mine] = row[offer[mine]]
        return out

    @staticmethod
    def _match(
        rows: Sequence[dict[str, Any]],
        column: str,
        offer_texts: list[Any],
        found: _Candidates,
    ) -> np.ndarray:
        card_texts = np.array([_text(row.get(column)) for row in rows], dtype=object)
        offers = np.array([_text(text) for text in offer_texts], dtype=object)
        card = np.asarray(found.card, dtype=np.int64)
        offer = np.asarray(found.offer, dtype=np.int64)
        return (card_texts[card] == offers[offer]).astype(np.float64)

    # Rules ---------------------------------------------------------------------

    def _eligible(
        self,
        rows: Sequence[dict[str, Any]],
        found: _Candidates,
        table: np.ndarray,
        scores: np.ndarray,
    ) -> None:
        offers = self.offers
        card = np.asarray(found.card, dtype=np.int64)
        offer = np.asarray(found.offer, dtype=np.int64)
        # Candidates that fail a rule were never scored (see _passing).
        passed = ~np.isnan(scores)

        bounds = np.searchsorted(card, np.arange(len(rows) + 1))
        for c, row in enumerate(rows):
            span = slice(bounds[c], bounds[c + 1])
            mine = np.flatnonzero(passed[span])
            mine += bounds[c]
            order = mine[np.lexsort((offers.sort_key[offer[mine]], -scores[mine]))]
            reasons = [
                self._reason_code(int(offer[i]), found.source[i], table[c])
                for i in order.tolist()
            ]
            # Arrays, not tuples: a cached card costs a few hundred bytes.
            row[ELIGIBLE] = (
                offer[order].astype(np.int32),
                scores[order].astype(np.float64),
                np.asarray(reasons, dtype=np.int16),
            )

    def _card_ok(self, row: dict[str, Any], offer: np.ndarray) -> np.ndarray:
        """Rules that read the card: redeemed, active, region and age."""
        offers = self.offers
        known = row.get("card_status") is not None
        active = (row.get("card_status") if known else ACTIVE) == ACTIVE
        region = row.get("region") if known else None
        age = _number(row.get("age"))
        redeemed = {str(v) for v in row.get("redeemed_offer_ids") or []}

        ok = np.array([offers.ids[o] not in redeemed for o in offer], dtype=bool)
        if not active:
            ok &= ~offers.requires_active[offer]
        ok &= offers.is_global[offer] | np.array(
            [offers.region[o] == region for o in offer], dtype=bool
        )
        low, high = offers.min_age[offer], offers.max_age[offer]
        with np.errstate(invalid="ignore"):
            bounded = ~np.isnan(low) | ~np.isnan(high)
            too_young = ~np.isnan(low) & (age < low)
            too_old = ~np.isnan(high) & (age > high)
        ok &= ~(too_young | too_old | (bounded & math.isnan(age)))
        return ok

    def _top(
        self,
        eligible: tuple[np.ndarray, np.ndarray, np.ndarray],
        k: int,
        excluded: set[str],
    ) -> list[RankedOffer]:
        """The first ``k`` eligible offers, skipping excluded and repeated offers
        and offers of a category that already has its share.
        """
        ids, categories = self.offers.ids, self.offers.category
        seen: set[int] = set()
        per_category: dict[str, int] = {}
        chosen: list[RankedOffer] = []
        texts = self.reason_texts
        offers, scores, reasons = (values.tolist() for values in eligible)
        for offer, score, reason in zip(offers, scores, reasons, strict=True):
            if offer in seen or ids[offer] in excluded:
                continue
            seen.add(offer)
            category = categories[offer]
            if per_category.get(category, 0) >= MAX_PER_CATEGORY:
                continue
            per_category[category] = per_category.get(category, 0) + 1
            chosen.append(
                RankedOffer(len(chosen) + 1, ids[offer], score, texts[reason])
            )
            if len(chosen) == k:
                break
        return chosen

    def _reason_code(self, offer: int, source: int, propensities: np.ndarray) -> int:
        """Position of the offer's reason in :attr:`reason_texts` (added once)."""
        text = self._reason(offer, source, propensities)
        code = self.reason_codes.get(text)
        if code is None:
            code = self.reason_codes[text] = len(self.reason_texts)
            self.reason_texts.append(text)
        return code

    def _reason(self, offer: int, source: int, propensities: np.ndarray) -> str:
        from features.schema import POST_ID
        from training.offers import MATCH_PROPENSITY, SOURCES

        need = self.offers.need[offer]
        if need in NEED_CATEGORIES:
            propensity = propensities[list(NEED_CATEGORIES).index(need)]
            if propensity >= MATCH_PROPENSITY:
                return f"matches your interest in {NEED_CATEGORIES[need]}"
        name = (*SOURCES, POST_ID)[source]
        if name == "collaborative":
            return "similar card holders liked this"
        if name in ("post", POST_ID):
            return "popular with card holders of your post"
        if name == "age_band":
            return "popular with card holders of your age"
        return "popular with card holders"


class CompiledScorer:
    """Needs and offers for plain card rows, compiled from the champion models.

    Args:
        needs_model: the champion needs model.
        offer_model: the champion offer model.
        facts: offer features of the ``offers_v1`` service.
        rule_offers: the rules' offer table, indexed by offer id.
        at: the moment offers are checked for validity.
    """

    def __init__(
        self,
        needs_model: NeedsModel,
        offer_model: OfferModel,
        facts: pd.DataFrame,
        rule_offers: pd.DataFrame,
        at: pd.Timestamp,
    ) -> None:
        self.needs = CompiledNeeds(needs_model)
        self.offers = CompiledOffers(offer_model, facts, rule_offers, at)

    def propensities(self, rows: Sequence[dict[str, Any]]) -> np.ndarray:
        """Calibrated propensities, one row per card, needs in model order.

        Rows prepared by :meth:`with_propensities` carry theirs already.
        """
        if rows and all(PROPENSITIES in row for row in rows):
            return np.stack([row[PROPENSITIES] for row in rows])
        return self.needs.propensities(rows)

    def with_propensities(
        self, fetch: Callable[[list[str]], list[dict[str, Any]]]
    ) -> Callable[[list[str]], list[dict[str, Any]]]:
        """Wrap a row fetch so each fetched row carries its propensities."""

        def prepared(card_keys: list[str]) -> list[dict[str, Any]]:
            rows = fetch(card_keys)
            values = self.needs.propensities(rows)
            for row, row_values in zip(rows, values, strict=True):
                row[PROPENSITIES] = row_values
            return rows

        return prepared

    def recommend(
        self,
        card_keys: list[str],
        rows: Sequence[dict[str, Any]],
        propensities: np.ndarray,
        k: int,
        exclude: Iterable[str] = (),
    ) -> dict[str, list[RankedOffer]]:
        """Ranked offers per card key that pass the rules (see CompiledOffers)."""
        return self.offers.rank(
            card_keys, rows, self.needs.need_ids, propensities, k, exclude
        )


def frame_rows(frame: pd.DataFrame) -> list[dict[str, Any]]:
    """Rows of a card feature frame as plain values (NaN and NA as None)."""
    records = frame.drop(columns=[CARD_KEY], errors="ignore").to_dict("records")
    return [
        {
            name: None if _missing_scalar(value) else value
            for name, value in record.items()
        }
        for record in records
    ]


def _missing_scalar(value: Any) -> bool:
    if isinstance(value, list | tuple | np.ndarray):
        return False
    return value is None or bool(pd.isna(value))

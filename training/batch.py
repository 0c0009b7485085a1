"""Top offers of every card holder at once, for push bursts and batch scores.

The same result as :meth:`training.offers.OfferModel.recommend` followed by
:func:`training.rules.apply_rules`, computed per chunk of card holders on numpy
arrays instead of per-row frames:

1. candidates: the collaborative model's top-n for cards with history (one block
   matrix product per chunk), topped up from the card's post, age band and overall
   popularity with the same quotas, as a ``cards x n`` matrix of offer columns;
2. re-ranker features: one column per feature name of the model, gathered from
   per-card and per-offer vectors;
3. scores: the re-ranker's booster on the feature matrix, in the model's order;
4. rules: card, offer and pair masks, then per-card ordering by score and offer
   id, the category limit and ``k``.

Cards without marketing consent or without features get no offers from the rules,
so they are left out before any scoring.
"""

from __future__ import annotations

import logging
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import pandas as pd

from features.errors import InputError
from features.schema import (
    CARD_KEY,
    NEED_CATEGORIES,
    OFFER_ID,
    OFFER_REGION_GLOBAL,
    POST_ID,
)
from training.evaluation import rule_inputs
from training.offers import (
    FAVOURITE_CATEGORY,
    OFFER_CATEGORY,
    OFFER_NEED,
    OFFER_REGION,
    PAIR_FEATURES,
    SOURCES,
    CandidateStage,
    OfferModel,
    _log_odds,
    _numeric,
    _ranked,
    age_band,
    candidate_features,
    propensity_table,
)
from training.rules import (
    ACTIVE,
    age_failures,
    as_utc,
    category_key,
    is_true,
    redeemed_ids,
    utc_naive,
)

logger = logging.getLogger(__name__)

CHUNK_CARDS = 20_000
OUTPUT_COLUMNS = [CARD_KEY, OFFER_ID, "rank", "score"]
# Source label of each candidate list, as the per-card path writes it.
LIST_SOURCES = ("collaborative", POST_ID, "age_band", "popular")
_SOURCE_CODE = {name: i for i, name in enumerate(SOURCES)}


@dataclass(frozen=True)
class _Cards:
    """Per-card vectors of the cards to score, aligned with ``keys``."""

    keys: np.ndarray
    stage_row: np.ndarray
    post: np.ndarray
    band: np.ndarray
    propensity: np.ndarray
    favourite: np.ndarray | None
    region_text: np.ndarray | None
    region: np.ndarray
    age: np.ndarray
    active: np.ndarray
    redeemed: np.ndarray


@dataclass(frozen=True)
class _Offers:
    """Per-offer vectors over the candidate stage's offer columns."""

    ids: np.ndarray
    facts: pd.DataFrame
    numeric: dict[str, np.ndarray]
    need: np.ndarray
    need_mean: np.ndarray
    need_std: np.ndarray
    category_text: np.ndarray | None
    region_feature: np.ndarray | None
    region_text: np.ndarray
    known: np.ndarray
    blocked: np.ndarray
    global_region: np.ndarray
    region_code: np.ndarray
    min_age: np.ndarray
    max_age: np.ndarray
    requires_active: np.ndarray
    category: np.ndarray


@dataclass(frozen=True)
class _Segment:
    """Ranked offer columns and scores of each segment value, padded with -1."""

    ids: np.ndarray
    scores: np.ndarray


def batch_top_offers(
    model: OfferModel,
    card_features: pd.DataFrame,
    propensities: pd.DataFrame,
    offer_facts: pd.DataFrame,
    at: pd.Timestamp,
    k: int,
    n_candidates: int,
    max_per_category: int | None = 2,
    chunk_cards: int = CHUNK_CARDS,
) -> pd.DataFrame:
    """Top ``k`` offers of every card holder after the business rules.

    Args:
        model: a fitted offer model.
        card_features: offers_v1 card features, one row per card (as for
            :meth:`OfferModel.recommend` and :func:`training.evaluation.rule_inputs`).
        propensities: ``card_key`` and one ``p_<need_id>`` (or need id) column per
            need.
        offer_facts: offers_v1 offer features, one row per offer.
        at: the moment the offers would be shown.
        k: offers per card holder at most.
        n_candidates: candidates per card passed to the re-ranker.
        max_per_category: offers of one category per card holder at most.
        chunk_cards: card holders scored together; bounds the memory in use.

    Returns:
        ``card_key, offer_id, rank, score``, cards in the order of
        ``card_features`` and offers by rank, equal to ``apply_rules(
        model.recommend(...), ...)`` on the same input.
    """
    if chunk_cards < 1:
        raise InputError(
            f"expected chunk_cards of at least 1, got {chunk_cards}; pass 1 or more"
        )
    started = time.perf_counter()
    cards_frame = card_features.drop_duplicates(CARD_KEY).reset_index(drop=True)
    cards_frame[CARD_KEY] = cards_frame[CARD_KEY].astype(str)
    rule_cards, rule_offers = rule_inputs(cards_frame, offer_facts)
    consented = rule_cards["consent_marketing"].to_numpy(dtype=bool)
    cards_frame = cards_frame[consented].reset_index(drop=True)

    stage = model.stage_
    offers = _offer_vectors(model, offer_facts, rule_offers, at)
    segments = _segment_lists(stage, min(n_candidates, len(stage.offers_)))
    pieces = [
        _score_chunk(model, offers, segments, cards, chunk_frame, n_candidates)
        for chunk_frame, cards in _chunks(
            model, cards_frame, propensities, offers, chunk_cards
        )
    ]
    pieces = [_top_k(piece, offers, k, max_per_category) for piece in pieces]
    frame = _as_frame(pieces, offers)
    logger.debug(
        "ranked offers of %d card holders in %.2f s",
        len(cards_frame),
        time.perf_counter() - started,
    )
    return frame


@dataclass(frozen=True)
class _Scored:
    """Candidates of one chunk: offer columns, scores and rule pass flags."""

    keys: np.ndarray
    offer: np.ndarray
    score: np.ndarray
    eligible: np.ndarray


def _chunks(
    model: OfferModel,
    cards_frame: pd.DataFrame,
    propensities: pd.DataFrame,
    offers: _Offers,
    chunk_cards: int,
) -> Iterator[tuple[pd.DataFrame, _Cards]]:
    table = propensity_table(propensities)
    for start in range(0, len(cards_frame), chunk_cards):
        chunk = cards_frame.iloc[start : start + chunk_cards].reset_index(drop=True)
        yield chunk, _card_vectors(model.stage_, chunk, table, offers)


def _card_vectors(
    stage: CandidateStage,
    chunk: pd.DataFrame,
    propensities: pd.DataFrame,
    offers: _Offers,
) -> _Cards:
    keys = chunk[CARD_KEY].to_numpy(dtype=object)
    stage_row = pd.Index(stage.cards_).get_indexer(keys)
    ages = chunk["age"] if "age" in chunk else pd.Series(np.nan, index=chunk.index)
    posts = chunk.get(POST_ID)
    post_text = posts.astype(str) if posts is not None else None
    table = propensities.reindex(pd.Index(keys))
    region_text = _text(chunk, "region")
    offer_regions = pd.Index(pd.unique(offers.region_text))
    return _Cards(
        keys=keys,
        stage_row=stage_row,
        post=(
            pd.Index(stage.segment_popularity_[POST_ID].index).get_indexer(post_text)
            if post_text is not None
            else np.full(len(keys), -1)
        ),
        band=pd.Index(stage.segment_popularity_["age_band"].index).get_indexer(
            age_band(ages).astype(str)
        ),
        propensity=table.to_numpy(dtype=float),
        favourite=_text(chunk, FAVOURITE_CATEGORY),
        region_text=region_text,
        region=offer_regions.get_indexer(chunk["region"].to_numpy(dtype=object)),
        age=pd.to_numeric(chunk["age"], errors="coerce").to_numpy(np.float64),
        active=(chunk["card_status"] == ACTIVE).to_numpy(),
        redeemed=_redeemed_matrix(chunk["redeemed_offer_ids"], offers.ids),
    )


def _text(frame: pd.DataFrame, column: str) -> np.ndarray | None:
    """A column as the per-card path compares it (``astype(str)``)."""
    if column not in frame.columns:
        return None
    return frame[column].astype(str).to_numpy(dtype=object)


def _redeemed_matrix(column: pd.Series, offer_ids: np.ndarray) -> np.ndarray:
    """Cards x offers flags of offers each card already redeemed."""
    lists = [redeemed_ids(value) for value in column.to_numpy(dtype=object)]
    owners = np.repeat(np.arange(len(lists)), [len(ids) for ids in lists])
    flat = [offer for ids in lists for offer in ids]
    out = np.zeros((len(lists), len(offer_ids)), dtype=bool)
    if flat:
        item = pd.Index(offer_ids).get_indexer(flat)
        out[owners[item >= 0], item[item >= 0]] = True
    return out


def _offer_vectors(
    model: OfferModel,
    offer_facts: pd.DataFrame,
    rule_offers: pd.DataFrame,
    at: pd.Timestamp,
) -> _Offers:
    stage = model.stage_
    ids = np.array(stage.offers_, dtype=object)
    facts = offer_facts.drop_duplicates(OFFER_ID).copy()
    facts[OFFER_ID] = facts[OFFER_ID].astype(str)
    numeric = _numeric(facts, keep=(OFFER_ID, OFFER_NEED, OFFER_CATEGORY, OFFER_REGION))
    aligned = numeric.set_index(OFFER_ID).reindex(pd.Index(ids))
    need = (
        aligned[OFFER_NEED].fillna("").astype(str).to_numpy(dtype=object)
        if OFFER_NEED in aligned
        else np.full(len(ids), "", dtype=object)
    )
    scale = getattr(model, "need_scale_", None)
    has_scale = scale is not None and not scale.empty
    rules = rule_offers.reindex(pd.Index(ids))
    return _Offers(
        ids=ids,
        facts=facts,
        numeric={
            f"o_{c}": aligned[c].to_numpy(dtype=float)
            for c in aligned.columns
            if c not in (OFFER_NEED, OFFER_CATEGORY, OFFER_REGION)
        },
        need=need,
        need_mean=(
            pd.Series(need).map(scale["mean"]).to_numpy(dtype=float)
            if has_scale
            else np.full(len(ids), np.nan)
        ),
        need_std=(
            pd.Series(need).map(scale["std"]).to_numpy(dtype=float)
            if has_scale
            else np.full(len(ids), np.nan)
        ),
        category_text=_aligned_text(aligned, OFFER_CATEGORY),
        region_feature=_aligned_text(aligned, OFFER_REGION),
        region_text=rules["region"].to_numpy(dtype=object),
        known=rule_offers.index.get_indexer(ids) >= 0,
        blocked=_offer_blocked(rules, as_utc(at)),
        global_region=(rules["region"] == OFFER_REGION_GLOBAL).to_numpy(),
        region_code=pd.Index(
            pd.unique(rules["region"].to_numpy(dtype=object))
        ).get_indexer(rules["region"].to_numpy(dtype=object)),
        min_age=pd.to_numeric(rules["min_age"], errors="coerce").to_numpy(float),
        max_age=pd.to_numeric(rules["max_age"], errors="coerce").to_numpy(float),
        requires_active=np.array(
            [is_true(v) for v in rules["requires_active_card"]], dtype=bool
        ),
        category=pd.factorize(
            np.array([category_key(v) for v in rules["category"]], dtype=object)
        )[0],
    )


def _aligned_text(aligned: pd.DataFrame, column: str) -> np.ndarray | None:
    if column not in aligned.columns:
        return None
    return aligned[column].astype(str).to_numpy(dtype=object)


def _offer_blocked(rules: pd.DataFrame, when: pd.Timestamp) -> np.ndarray:
    """Offers no card may get at ``when``: unknown, out of validity, no quota."""
    stamp = when.tz_localize(None).to_datetime64()
    valid_from = utc_naive(rules["valid_from"])
    valid_to = utc_naive(rules["valid_to"])
    quota = pd.to_numeric(rules["quota_left"], errors="coerce").to_numpy(float)
    with np.errstate(invalid="ignore"):
        out = (valid_from > stamp) | (valid_to < stamp) | (quota <= 0)
    return out


def _segment_lists(stage: CandidateStage, n: int) -> dict[str, _Segment]:
    """Each segment's popular offers as the per-card top-up ranks them."""
    out = {}
    for column, table in stage.segment_popularity_.items():
        out[column] = _padded([_ranked(table.loc[v], n) for v in table.index], stage, n)
    out["popular"] = _padded([_ranked(stage.overall_popularity_, n)], stage, n)
    return out


def _padded(lists: list[list[tuple[str, float]]], stage, n: int) -> _Segment:
    ids = np.full((len(lists) + 1, n), -1, dtype=np.int64)
    scores = np.full((len(lists) + 1, n), np.nan)
    for row, ranked in enumerate(lists):
        for place, (offer, score) in enumerate(ranked):
            ids[row, place] = stage.offer_index_[offer]
            scores[row, place] = score
    return _Segment(ids=ids, scores=scores)


def _score_chunk(
    model: OfferModel,
    offers: _Offers,
    segments: dict[str, _Segment],
    cards: _Cards,
    chunk: pd.DataFrame,
    n_candidates: int,
) -> _Scored:
    stage = model.stage_
    n = min(n_candidates, len(stage.offers_))
    offer, source, candidate_score = _candidates(stage, segments, cards, n)

    # Candidates the rules drop never reach the card, so they are not scored.
    eligible = (offer >= 0) & _eligible(offers, cards, offer)
    features = _features(model, offers, cards, eligible, offer, source, candidate_score)
    if features is None:
        features = _features_by_frame(
            model, offers, cards, chunk, eligible, offer, source, candidate_score
        )
    score = np.full(offer.shape, np.nan)
    if eligible.any():
        score[eligible] = model.ranker_.booster_.predict(
            features, num_iteration=model.ranker_.best_iteration_
        )
    eligible &= ~np.isnan(score)
    return _Scored(keys=cards.keys, offer=offer, score=score, eligible=eligible)


def _candidates(
    stage: CandidateStage, segments: dict[str, _Segment], cards: _Cards, n: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Candidate offer columns, list sources and first-stage scores, cards x n."""
    size = len(cards.keys)
    offer = np.full((size, n), -1, dtype=np.int64)
    source = np.full((size, n), -1, dtype=np.int8)
    candidate_score = np.full((size, n), np.nan)
    taken = np.zeros((size, len(stage.offers_)), dtype=bool)
    count = np.zeros(size, dtype=np.int64)

    row = cards.stage_row
    history = np.where(row >= 0, stage.history_[np.maximum(row, 0)], 0)
    warm = np.flatnonzero(history > 0)
    if len(warm):
        ids, scores = stage.collaborative_.recommend(
            row[warm], stage.user_items_, n, filter_already_liked=False
        )
        rich = history[warm] >= stage.min_history
        place = np.arange(n)[None, :]
        keep = (ids >= 0) & ((rich[:, None] & (place < n - n // 4)) | (place < n // 2))
        _place(offer, source, candidate_score, taken, count, warm, ids, scores, keep, 0)

    room = n - count
    share = np.maximum(room // 3, 1)
    for code, lists, at_row, quota in (
        (1, segments[POST_ID], cards.post, share),
        (2, segments["age_band"], cards.band, share),
        (3, segments["popular"], np.zeros(size, dtype=np.int64), None),
    ):
        limit = n - count if quota is None else np.minimum(quota, n - count)
        ids = lists.ids[np.where(at_row >= 0, at_row, len(lists.ids) - 1)]
        scores = lists.scores[np.where(at_row >= 0, at_row, len(lists.ids) - 1)]
        fresh = (ids >= 0) & ~np.take_along_axis(taken, np.maximum(ids, 0), axis=1)
        keep = fresh & (np.cumsum(fresh, axis=1) <= limit[:, None])
        every = np.arange(size)
        _place(
            offer, source, candidate_score, taken, count, every, ids, scores, keep, code
        )
    return offer, source, candidate_score


def _place(offer, source, candidate_score, taken, count, rows, ids, scores, keep, code):
    """Append the kept entries of ``ids`` to the candidate slots of ``rows``."""
    slot = count[rows][:, None] + np.cumsum(keep, axis=1) - 1
    row_of, column_of = np.nonzero(keep)
    target_rows = rows[row_of]
    target_slots = slot[row_of, column_of]
    offer[target_rows, target_slots] = ids[row_of, column_of]
    source[target_rows, target_slots] = code
    candidate_score[target_rows, target_slots] = scores[row_of, column_of]
    taken[target_rows, ids[row_of, column_of]] = True
    count[rows] += keep.sum(axis=1)


def _features(
    model: OfferModel,
    offers: _Offers,
    cards: _Cards,
    filled: np.ndarray,
    offer: np.ndarray,
    source: np.ndarray,
    candidate_score: np.ndarray,
) -> np.ndarray | None:
    """Feature matrix of the ``filled`` slots in the re-ranker's column order.

    Returns None when the model reads a feature this module does not compute.
    """
    names = list(model.feature_names_)
    if any(n not in PAIR_FEATURES and n not in offers.numeric for n in names):
        return None
    card_of = np.nonzero(filled)[0]
    item = offer[filled]

    matrix = np.empty((len(item), len(names)), dtype=np.float64)
    for position, name in enumerate(names):
        if name in offers.numeric:
            matrix[:, position] = offers.numeric[name][item]
        elif name == "candidate_score":
            matrix[:, position] = candidate_score[filled]
        elif name == "source_code":
            matrix[:, position] = _source_codes()[source[filled]]
        else:
            matrix[:, position] = _pair_feature(
                name, model, offers, cards, card_of, item
            )
    return matrix


def _pair_feature(
    name: str,
    model: OfferModel,
    offers: _Offers,
    cards: _Cards,
    card_of: np.ndarray,
    item: np.ndarray,
) -> np.ndarray:
    """One re-ranker feature per (card, offer) pair, as the per-card path builds it."""
    stage = model.stage_
    row = cards.stage_row[card_of]
    if name in ("need_propensity", "need_z"):
        propensity = _need_propensity(offers, cards, card_of, item)
        if name == "need_propensity":
            return propensity
        return (_log_odds(propensity) - offers.need_mean[item]) / offers.need_std[item]
    if name == "max_propensity":
        with warnings.catch_warnings():
            # A card without any propensity gets NaN, as in the per-card path.
            warnings.simplefilter("ignore", RuntimeWarning)
            return np.nanmax(cards.propensity, axis=1)[card_of]
    if name == "past_weight":
        return _past_weight(stage, row, item)
    if name == "collaborative_score":
        return _collaborative_score(stage, row, item)
    if name == "need_share":
        return _need_share(stage, row, item)
    if name == "offer_popularity":
        return stage.overall_popularity_.to_numpy(dtype=float)[item]
    if name == "post_popularity":
        return _segment_share(stage, POST_ID, cards.post[card_of], item)
    if name == "age_band_popularity":
        return _segment_share(stage, "age_band", cards.band[card_of], item)
    if name == "card_history":
        return np.where(row >= 0, stage.history_[np.maximum(row, 0)], 0).astype(float)
    if name == "favourite_match":
        return _match(cards.favourite, offers.category_text, card_of, item)
    return _match(cards.region_text, offers.region_feature, card_of, item)


def _source_codes() -> np.ndarray:
    return np.array(
        [_SOURCE_CODE.get(name, np.nan) for name in LIST_SOURCES], dtype=float
    )


def _need_propensity(
    offers: _Offers, cards: _Cards, card_of: np.ndarray, item: np.ndarray
) -> np.ndarray:
    need_column = pd.Index(list(NEED_CATEGORIES)).get_indexer(offers.need)
    column = need_column[item]
    out = np.full(len(item), np.nan)
    has = column >= 0
    out[has] = cards.propensity[card_of[has], column[has]]
    return out


def _past_weight(
    stage: CandidateStage, row: np.ndarray, item: np.ndarray
) -> np.ndarray:
    out = np.zeros(len(row))
    known = row >= 0
    if known.any():
        out[known] = np.asarray(
            stage.user_items_[row[known], item[known]], dtype=np.float64
        ).ravel()
    return out


def _collaborative_score(
    stage: CandidateStage, row: np.ndarray, item: np.ndarray
) -> np.ndarray:
    out = np.full(len(row), np.nan)
    warm = row >= 0
    warm[warm] = stage.history_[row[warm]] > 0
    if warm.any():
        out[warm] = stage.collaborative_.score_items(
            row[warm], item[warm], stage.user_items_
        )
    return out


def _need_share(stage: CandidateStage, row: np.ndarray, item: np.ndarray) -> np.ndarray:
    out = np.zeros(len(row))
    need = stage.offer_need_index_[item]
    has = (row >= 0) & (need >= 0)
    out[has] = stage.card_need_share_[row[has], need[has]]
    return out


def _segment_share(
    stage: CandidateStage, column: str, segment: np.ndarray, item: np.ndarray
) -> np.ndarray:
    table = stage.segment_popularity_[column].to_numpy(dtype=float)
    out = np.zeros(len(item))
    known = segment >= 0
    out[known] = table[segment[known], item[known]]
    return np.nan_to_num(out, nan=0.0)


def _match(
    left: np.ndarray | None,
    right: np.ndarray | None,
    card_of: np.ndarray,
    item: np.ndarray,
) -> np.ndarray:
    if left is None or right is None:
        return np.zeros(len(item))
    return (left[card_of] == right[item]).astype(float)


def _features_by_frame(
    model: OfferModel,
    offers: _Offers,
    cards: _Cards,
    chunk: pd.DataFrame,
    filled: np.ndarray,
    offer: np.ndarray,
    source: np.ndarray,
    candidate_score: np.ndarray,
) -> np.ndarray:
    """The per-card path's own feature code on the ``filled`` slots (slower)."""
    card_of = np.nonzero(filled)[0]
    candidates = pd.DataFrame(
        {
            CARD_KEY: cards.keys[card_of],
            OFFER_ID: np.array(model.stage_.offers_, dtype=object)[offer[filled]],
            "source": np.array(LIST_SOURCES, dtype=object)[source[filled]],
            "candidate_score": candidate_score[filled],
        }
    )
    propensities = pd.DataFrame(cards.propensity, index=pd.Index(cards.keys))
    propensities.columns = list(NEED_CATEGORIES)
    rows = candidate_features(
        model.stage_,
        candidates,
        chunk,
        propensities.rename_axis(CARD_KEY).reset_index(),
        offers.facts,
        getattr(model, "need_scale_", None),
    )
    return rows.reindex(columns=model.feature_names_).to_numpy(dtype=np.float64)


def _eligible(offers: _Offers, cards: _Cards, offer: np.ndarray) -> np.ndarray:
    """Whether each candidate passes every per-pair rule (cards x n)."""
    item = np.maximum(offer, 0)
    ok = offers.known[item] & ~offers.blocked[item]
    ok &= ~(offers.requires_active[item] & ~cards.active[:, None])
    ok &= offers.global_region[item] | (
        offers.region_code[item] == cards.region[:, None]
    )
    ok &= ~age_failures(cards.age[:, None], offers.min_age[item], offers.max_age[item])
    ok &= ~np.take_along_axis(cards.redeemed, item, axis=1)
    return ok


def _top_k(
    scored: _Scored, offers: _Offers, k: int, max_per_category: int | None
) -> _Scored:
    """Order each card's eligible candidates and keep the best ``k`` under the
    category limit; offer columns sort like offer ids (the stage keeps them sorted)."""
    score = np.where(scored.eligible, scored.score, -np.inf)
    order = np.lexsort((scored.offer, -score, ~scored.eligible), axis=1)
    offer = np.take_along_axis(scored.offer, order, axis=1)
    score = np.take_along_axis(scored.score, order, axis=1)
    kept = np.take_along_axis(scored.eligible, order, axis=1)

    if max_per_category is not None:
        category = offers.category[np.maximum(offer, 0)]
        crowded = np.zeros_like(kept)
        for code in np.unique(category[kept]):
            same = kept & (category == code)
            crowded |= same & (np.cumsum(same, axis=1) > max_per_category)
        kept &= ~crowded
    kept &= np.cumsum(kept, axis=1) <= k
    return _Scored(keys=scored.keys, offer=offer, score=score, eligible=kept)


def _as_frame(pieces: list[_Scored], offers: _Offers) -> pd.DataFrame:
    frames = []
    for piece in pieces:
        card_of, slot = np.nonzero(piece.eligible)
        rank = np.cumsum(piece.eligible, axis=1)[card_of, slot]
        frames.append(
            pd.DataFrame(
                {
                    CARD_KEY: piece.keys[card_of],
                    OFFER_ID: offers.ids[piece.offer[card_of, slot]],
                    "rank": rank.astype(np.int64),
                    "score": piece.score[card_of, slot],
                }
            )
        )
    if not frames:
        return pd.DataFrame(columns=OUTPUT_COLUMNS)
    return pd.concat(frames, ignore_index=True)[OUTPUT_COLUMNS]

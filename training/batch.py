"""Top offers of every card holder at once, for push bursts and batch scores.

The same result as :meth:`training.offers.OfferModel.recommend` followed by
:func:`training.rules.apply_rules`, computed per chunk of card holders on numpy
arrays instead of per-row frames:

1. candidates: the collaborative model's top-n for cards with history (one block
   matrix product per chunk), topped up from the card's post, age band and overall
   popularity with the same quotas, as a ``cards x n`` matrix of offer columns;
2. rules: card, offer and pair masks; a candidate the rules drop never reaches the
   card, so only the candidates that pass are scored;
3. re-ranker features: one column per feature name of the model, gathered from
   per-card and per-offer vectors into one contiguous float64 matrix;
4. scores: the re-ranker's booster on that matrix; for large batches, boosters
   specialised per offer (splits on the offer's own facts already decided, so
   about 40 % fewer tree nodes to walk per row, the same scores bit for bit);
5. ranking: per-card ordering by score and offer id, the category limit and ``k``.

Cards without marketing consent or without features get no offers from the rules,
so they are left out before any scoring. Per-card vectors are built once for every
card; chunks then run on worker threads (numpy and LightGBM release the GIL), and
their results are joined in card order, so the output does not depend on the
number of workers.
"""

from __future__ import annotations

import logging
import os
import time
import warnings
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from itertools import chain

import numpy as np
import pandas as pd
from scipy import sparse

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
from training.recommenders import EASERecommender
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
# From this many card holders on, the re-ranker's trees are specialised per offer
# (about a second to build; about 40 % fewer tree nodes to walk per row).
SPECIALISE_MIN_CARDS = 100_000
# LightGBM's zero threshold: a float literal in its C++ code, widened to double.
_LIGHTGBM_ZERO = float(np.float32(1e-35))
_NODE_FIELDS = (
    "split_feature",
    "split_gain",
    "threshold",
    "decision_type",
    "left_child",
    "right_child",
    "internal_value",
    "internal_weight",
    "internal_count",
)
_LEAF_FIELDS = ("leaf_value", "leaf_weight", "leaf_count")
OUTPUT_COLUMNS = [CARD_KEY, OFFER_ID, "rank", "score"]
# Source label of each candidate list, as the per-card path writes it.
LIST_SOURCES = ("collaborative", POST_ID, "age_band", "popular")
_SOURCE_CODE = {name: i for i, name in enumerate(SOURCES)}


@dataclass(frozen=True)
class _Cards:
    """Per-card vectors of the cards to score, aligned with ``keys``.

    ``redeemed`` is a sparse cards x offers matrix for every card and a dense
    boolean one for a chunk (see :func:`_chunk_cards`).
    """

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
    redeemed: sparse.csr_matrix | np.ndarray


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


@dataclass(frozen=True)
class OfferTrees:
    """The re-ranker specialised per offer: one booster per group of offers.

    Attributes:
        group: the booster of each offer column (index into ``boosters``).
        boosters: LightGBM boosters whose splits on offer-constant features are
            already decided for the offers of their group.
        iterations: trees per booster (the re-ranker's best iteration).
    """

    group: np.ndarray
    boosters: list
    iterations: int


@dataclass(frozen=True)
class _Batch:
    """Everything a chunk needs besides its card range; read-only while ranking."""

    model: OfferModel
    offers: _Offers
    segments: dict[str, _Segment]
    cards: _Cards
    cards_frame: pd.DataFrame
    n_candidates: int
    k: int
    max_per_category: int | None
    predict_threads: int
    trees: OfferTrees | None


@dataclass(frozen=True)
class _Slots:
    """Candidate slots to score: card (chunk row), offer column, source, score."""

    card_of: np.ndarray
    item: np.ndarray
    source: np.ndarray
    candidate_score: np.ndarray

    def take(self, order: np.ndarray) -> _Slots:
        """The slots in ``order``."""
        return _Slots(
            card_of=self.card_of[order],
            item=self.item[order],
            source=self.source[order],
            candidate_score=self.candidate_score[order],
        )


@dataclass(frozen=True)
class _Ranked:
    """Kept offers of one chunk, by card (chunk order) and then by rank."""

    keys: np.ndarray
    offer: np.ndarray
    rank: np.ndarray
    score: np.ndarray


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
    workers: int | None = None,
    specialise: bool | None = None,
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
        workers: chunks ranked at the same time on threads; None for one per CPU.
        specialise: score with trees specialised per offer (the same scores,
            bit for bit, with fewer splits to walk); None decides by size
            (:data:`SPECIALISE_MIN_CARDS`).

    Returns:
        ``card_key, offer_id, rank, score``, cards in the order of
        ``card_features`` and offers by rank, equal to ``apply_rules(
        model.recommend(...), ...)`` on the same input.
    """
    if chunk_cards < 1:
        raise InputError(
            f"expected chunk_cards of at least 1, got {chunk_cards}; pass 1 or more"
        )
    if workers is not None and workers < 1:
        raise InputError(
            f"expected workers of at least 1, got {workers}; pass 1 or more, or None"
        )
    started = time.perf_counter()
    cards_frame = card_features.drop_duplicates(CARD_KEY).reset_index(drop=True)
    cards_frame[CARD_KEY] = cards_frame[CARD_KEY].astype(str)
    rule_cards, rule_offers = rule_inputs(cards_frame, offer_facts)
    consented = rule_cards["consent_marketing"].to_numpy(dtype=bool)
    cards_frame = cards_frame[consented].reset_index(drop=True)

    stage = model.stage_
    offers = _offer_vectors(model, offer_facts, rule_offers, at)
    threads = workers or os.cpu_count() or 1
    if specialise is None:
        specialise = len(cards_frame) >= SPECIALISE_MIN_CARDS
    batch = _Batch(
        model=model,
        offers=offers,
        segments=_segment_lists(stage, min(n_candidates, len(stage.offers_))),
        cards=_card_vectors(stage, cards_frame, propensity_table(propensities), offers),
        cards_frame=cards_frame,
        n_candidates=n_candidates,
        k=k,
        max_per_category=max_per_category,
        predict_threads=max((os.cpu_count() or 1) // threads, 1),
        trees=_offer_trees(model, offers) if specialise else None,
    )
    prepared = time.perf_counter()
    bounds = [
        (start, min(start + chunk_cards, len(cards_frame)))
        for start in range(0, len(cards_frame), chunk_cards)
    ]
    pieces = _map_chunks(lambda bound: _rank_chunk(batch, *bound), bounds, threads)
    frame = _as_frame(pieces, offers)
    logger.debug(
        "ranked offers of %d card holders in %.2f s (%.2f s preparing, %d workers)",
        len(cards_frame),
        time.perf_counter() - started,
        prepared - started,
        threads,
    )
    return frame


def _map_chunks(
    rank: Callable[[tuple[int, int]], _Ranked],
    bounds: list[tuple[int, int]],
    workers: int,
) -> list[_Ranked]:
    """Rank every chunk, on ``workers`` threads when there is more than one chunk."""
    if workers == 1 or len(bounds) < 2:
        return [rank(bound) for bound in bounds]
    with ThreadPoolExecutor(max_workers=min(workers, len(bounds))) as pool:
        return list(pool.map(rank, bounds))


def _card_vectors(
    stage: CandidateStage,
    frame: pd.DataFrame,
    propensities: pd.DataFrame,
    offers: _Offers,
) -> _Cards:
    """Per-card vectors of every card in ``frame``, built once for all chunks."""
    keys = frame[CARD_KEY].to_numpy(dtype=object)
    ages = frame["age"] if "age" in frame else pd.Series(np.nan, index=frame.index)
    posts = frame.get(POST_ID)
    post_text = posts.astype(str) if posts is not None else None
    table = propensities.reindex(pd.Index(keys))
    offer_regions = pd.Index(pd.unique(offers.region_text))
    return _Cards(
        keys=keys,
        stage_row=pd.Index(stage.cards_).get_indexer(keys),
        post=(
            pd.Index(stage.segment_popularity_[POST_ID].index).get_indexer(post_text)
            if post_text is not None
            else np.full(len(keys), -1)
        ),
        band=pd.Index(stage.segment_popularity_["age_band"].index).get_indexer(
            age_band(ages).astype(str)
        ),
        propensity=table.to_numpy(dtype=float),
        favourite=_text(frame, FAVOURITE_CATEGORY),
        region_text=_text(frame, "region"),
        region=offer_regions.get_indexer(frame["region"].to_numpy(dtype=object)),
        age=pd.to_numeric(frame["age"], errors="coerce").to_numpy(np.float64),
        active=(frame["card_status"] == ACTIVE).to_numpy(),
        redeemed=_redeemed_matrix(frame["redeemed_offer_ids"], offers.ids),
    )


def _chunk_cards(cards: _Cards, start: int, stop: int) -> _Cards:
    """The vectors of cards ``start`` to ``stop``, redeemed offers as dense flags."""
    rows = slice(start, stop)

    def part(values: np.ndarray | None) -> np.ndarray | None:
        return None if values is None else values[rows]

    return replace(
        cards,
        keys=cards.keys[rows],
        stage_row=cards.stage_row[rows],
        post=cards.post[rows],
        band=cards.band[rows],
        propensity=cards.propensity[rows],
        favourite=part(cards.favourite),
        region_text=part(cards.region_text),
        region=cards.region[rows],
        age=cards.age[rows],
        active=cards.active[rows],
        redeemed=cards.redeemed[rows].toarray() > 0,
    )


def _text(frame: pd.DataFrame, column: str) -> np.ndarray | None:
    """A column as the per-card path compares it (``astype(str)``)."""
    if column not in frame.columns:
        return None
    return frame[column].astype(str).to_numpy(dtype=object)


def _redeemed_matrix(column: pd.Series, offer_ids: np.ndarray) -> sparse.csr_matrix:
    """Cards x offers counts of offers each card already redeemed (sparse).

    Cells holding a list, tuple or array are flattened in one pass; any other
    cell (a single id, None, NaN) goes through :func:`training.rules.redeemed_ids`.
    Every id is compared as text, as the per-card rules compare it.
    """
    values = column.to_numpy(dtype=object)
    lists = [
        value if isinstance(value, list | tuple | np.ndarray) else redeemed_ids(value)
        for value in values
    ]
    lengths = np.fromiter((len(ids) for ids in lists), dtype=np.int64, count=len(lists))
    flat = pd.Index(list(chain.from_iterable(lists)), dtype=object)
    item = np.zeros(0, dtype=np.int64)
    if len(flat):
        item = pd.Index(offer_ids).get_indexer(flat.astype(str))
    owner = np.repeat(np.arange(len(lists)), lengths)
    known = item >= 0
    return sparse.csr_matrix(
        (np.ones(int(known.sum()), dtype=np.int32), (owner[known], item[known])),
        shape=(len(lists), len(offer_ids)),
    )


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


def _rank_chunk(batch: _Batch, start: int, stop: int) -> _Ranked:
    """Candidates, rules, scores and top ``k`` of cards ``start`` to ``stop``."""
    model, offers = batch.model, batch.offers
    cards = _chunk_cards(batch.cards, start, stop)
    n = min(batch.n_candidates, len(model.stage_.offers_))
    offer, source, candidate_score = _candidates(model.stage_, batch.segments, cards, n)

    # Candidates the rules drop never reach the card, so they are not scored.
    eligible = (offer >= 0) & _eligible(offers, cards, offer)
    card_of = np.nonzero(eligible)[0]
    item = offer[eligible]
    score = np.zeros(0)
    if len(item):
        candidates = (eligible, offer, source, candidate_score)
        score = _scores(batch, cards, start, stop, candidates)
    scored = ~np.isnan(score)
    return _top_k(
        cards.keys,
        card_of[scored],
        item[scored],
        score[scored],
        offers.category,
        batch.k,
        batch.max_per_category,
    )


def _scores(
    batch: _Batch,
    cards: _Cards,
    start: int,
    stop: int,
    candidates: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray],
) -> np.ndarray:
    """Re-ranker scores of the eligible candidates of a chunk, row by row.

    ``candidates`` is the eligibility mask, offer columns, sources and
    first-stage scores (each cards x n). With trees specialised per offer, the
    feature rows are built grouped by booster, so each booster reads a
    contiguous block of them.
    """
    model, offers = batch.model, batch.offers
    eligible, offer, source, candidate_score = candidates
    if not _computes_every_feature(model, offers):
        chunk = batch.cards_frame.iloc[start:stop].reset_index(drop=True)
        features = _features_by_frame(
            model, offers, cards, chunk, eligible, offer, source, candidate_score
        )
        return _full_booster_scores(batch, features)

    slots = _Slots(
        card_of=np.nonzero(eligible)[0],
        item=offer[eligible],
        source=source[eligible],
        candidate_score=candidate_score[eligible],
    )
    if batch.trees is None:
        return _full_booster_scores(batch, _features(model, offers, cards, slots))
    order = np.argsort(batch.trees.group[slots.item], kind="stable")
    grouped = slots.take(order)
    score = np.empty(len(order))
    score[order] = predict_by_offer(
        batch.trees,
        _features(model, offers, cards, grouped),
        grouped.item,
        batch.predict_threads,
    )
    return score


def _full_booster_scores(batch: _Batch, features: np.ndarray) -> np.ndarray:
    return batch.model.ranker_.booster_.predict(
        features,
        num_iteration=batch.model.ranker_.best_iteration_,
        num_threads=batch.predict_threads,
    )


def _computes_every_feature(model: OfferModel, offers: _Offers) -> bool:
    """Whether this module computes every feature the re-ranker reads."""
    return all(n in PAIR_FEATURES or n in offers.numeric for n in model.feature_names_)


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
        users, user_items = _own_rows(stage, row[warm])
        ids, scores = stage.collaborative_.recommend(
            users, user_items, n, filter_already_liked=False
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
    model: OfferModel, offers: _Offers, cards: _Cards, slots: _Slots
) -> np.ndarray:
    """Feature matrix of the candidate ``slots`` in the re-ranker's column order.

    One contiguous float64 row per slot; the caller checks first that every
    feature is computed here (:func:`_computes_every_feature`).
    """
    names = list(model.feature_names_)
    card_of, item = slots.card_of, slots.item
    matrix = np.empty((len(item), len(names)), dtype=np.float64)
    for position, name in enumerate(names):
        if name in offers.numeric:
            matrix[:, position] = offers.numeric[name][item]
        elif name == "candidate_score":
            matrix[:, position] = slots.candidate_score
        elif name == "source_code":
            matrix[:, position] = _source_codes()[slots.source]
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
        users, user_items = _own_rows(stage, row[warm])
        out[warm] = stage.collaborative_.score_items(users, item[warm], user_items)
    return out


def _own_rows(
    stage: CandidateStage, rows: np.ndarray
) -> tuple[np.ndarray, sparse.csr_matrix]:
    """User ids and the interaction matrix to score the cards of ``rows`` from.

    EASE scores a card from its own row of interactions alone, so only the rows
    asked for are cut out, in order: the model's input checks then scan those
    rows instead of every card's, and each row's product is the same. Other
    models index their own fitted rows and get the full matrix.
    """
    if not isinstance(stage.collaborative_, EASERecommender):
        return rows, stage.user_items_
    distinct, users = np.unique(rows, return_inverse=True)
    return users.ravel(), stage.user_items_[distinct]


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


def predict_by_offer(
    trees: OfferTrees, features: np.ndarray, item: np.ndarray, threads: int = 1
) -> np.ndarray:
    """Scores of feature rows, each by the booster specialised to its offer.

    Args:
        trees: the output of :func:`specialised_trees`.
        features: one row per candidate, in the booster's column order.
        item: the offer (index into the ``constant`` vectors) of each row; rows
            already grouped by booster are read in place, others are gathered.
        threads: LightGBM threads per call.

    Returns:
        One score per row, equal to the full booster's.
    """
    group = trees.group[item]
    order = np.argsort(group, kind="stable")
    grouped = bool(np.all(group[1:] >= group[:-1]))
    rows = features if grouped else features[order]
    sorted_group = group[order]
    starts = np.flatnonzero(np.r_[True, sorted_group[1:] != sorted_group[:-1]])
    sorted_score = np.empty(len(item))
    for begin, end in zip(starts, np.r_[starts[1:], len(order)], strict=True):
        sorted_score[begin:end] = trees.boosters[sorted_group[begin]].predict(
            rows[begin:end], num_iteration=trees.iterations, num_threads=threads
        )
    score = np.empty(len(item))
    score[order] = sorted_score
    return score


def _offer_trees(model: OfferModel, offers: _Offers) -> OfferTrees | None:
    """The re-ranker specialised per offer, or None when it cannot be.

    Offer facts and the overall popularity are the same on every row of an offer,
    so each split on them goes the same way for all of that offer's rows (see
    :func:`specialised_trees`). A model reading a feature this module does not
    compute is left whole.
    """
    if not _computes_every_feature(model, offers):
        return None
    names = list(model.feature_names_)
    return specialised_trees(
        model.ranker_.booster_,
        int(model.ranker_.best_iteration_),
        _offer_constants(model, offers, names),
        len(offers.ids),
    )


def specialised_trees(
    booster: object,
    iterations: int,
    constant: dict[int, np.ndarray],
    n_offers: int,
) -> OfferTrees | None:
    """A booster's first ``iterations`` trees with the offer-constant splits decided.

    Splits on the ``constant`` features are resolved with LightGBM's own rule
    (missing values, the zero threshold, the default side). The leaves and the
    order of the trees stay as they are, so the sum of the leaf values, the score,
    is the same bit for bit. Offers whose decisions agree share a booster.

    Args:
        booster: a fitted ``lightgbm.Booster``.
        iterations: trees to keep (the model's best iteration).
        constant: feature position -> the feature's value for each offer.
        n_offers: the number of offers (the length of every ``constant`` vector).

    Returns:
        The boosters and each offer's group, or None when no split reads a
        constant feature or a tree is categorical or linear.
    """
    import lightgbm as lgb

    text = booster.model_to_string(num_iteration=iterations)  # type: ignore[attr-defined]
    header, trees, footer = _split_model(text)
    if trees is None or not constant:
        return None

    # Per tree: the nodes that split on an offer constant, and where each offer goes.
    decided = [_offer_decisions(tree, constant, n_offers) for tree in trees]
    signature = np.concatenate([goes_left for _, goes_left in decided], axis=0)
    if not len(signature):
        return None
    _, first, group = np.unique(
        signature.T, axis=0, return_index=True, return_inverse=True
    )
    cache: dict[tuple[int, bytes], str] = {}
    boosters = []
    for offer in first:
        blocks = []
        for number, (tree, (nodes, goes_left)) in enumerate(
            zip(trees, decided, strict=True)
        ):
            choice = goes_left[:, offer]
            key = (number, choice.tobytes())
            if key not in cache:
                cache[key] = _tree_text(
                    number, tree, dict(zip(nodes, choice, strict=True))
                )
            blocks.append(cache[key])
        boosters.append(lgb.Booster(model_str=header + "".join(blocks) + footer))
    logger.debug(
        "specialised %d trees into %d boosters for %d offers",
        len(trees),
        len(boosters),
        n_offers,
    )
    return OfferTrees(
        group=np.asarray(group).ravel(), boosters=boosters, iterations=iterations
    )


def _offer_constants(
    model: OfferModel, offers: _Offers, names: list[str]
) -> dict[int, np.ndarray]:
    """Feature position -> value per offer column, for offer-constant features."""
    constant = {
        position: offers.numeric[name]
        for position, name in enumerate(names)
        if name in offers.numeric
    }
    if "offer_popularity" in names:
        constant[names.index("offer_popularity")] = (
            model.stage_.overall_popularity_.to_numpy(dtype=float)
        )
    return constant


def _split_model(text: str) -> tuple[str, list[dict[str, str]] | None, str]:
    """Header (without tree sizes), trees as field maps and footer of a model text.

    The tree list is None when a tree is categorical or linear.
    """
    body_start = text.index("\nTree=") + 1
    body_end = text.index("end of trees")
    header = "".join(
        line
        for line in text[:body_start].splitlines(keepends=True)
        if not line.startswith("tree_sizes=")
    )
    trees = []
    for block in text[body_start:body_end].split("\n\n"):
        if not block.strip():
            continue
        fields = dict(
            line.split("=", 1) for line in block.strip().splitlines()[1:] if line
        )
        if fields.get("num_cat", "0") != "0" or fields.get("is_linear", "0") != "0":
            return header, None, text[body_end:]
        trees.append(fields)
    return header, trees, text[body_end:]


def _offer_decisions(
    tree: dict[str, str], constant: dict[int, np.ndarray], n_offers: int
) -> tuple[list[int], np.ndarray]:
    """Nodes of ``tree`` that split on an offer constant, and per offer whether
    each of them sends the offer's rows left (nodes x offers)."""
    if int(tree["num_leaves"]) < 2:
        return [], np.zeros((0, n_offers), dtype=bool)
    feature = np.array(tree["split_feature"].split(), dtype=np.int64)
    nodes = [node for node, f in enumerate(feature) if int(f) in constant]
    if not nodes:
        return [], np.zeros((0, n_offers), dtype=bool)
    threshold = np.array(tree["threshold"].split(), dtype=np.float64)
    decision = np.array(tree["decision_type"].split(), dtype=np.int64)
    goes_left = np.stack(
        [
            _goes_left(constant[int(feature[node])], threshold[node], decision[node])
            for node in nodes
        ]
    )
    return nodes, goes_left


def _goes_left(value: np.ndarray, threshold: float, decision: int) -> np.ndarray:
    """LightGBM's numerical split rule, element-wise, on dense float64 input.

    Values within the zero threshold are read as 0 (a dense row drops them); a
    missing value is 0 unless the split treats NaN as missing; a missing value
    (or a zero, when zero is the missing value) goes to the default side.
    """
    missing_type = (int(decision) >> 2) & 3
    default_left = bool(int(decision) & 2)
    with np.errstate(invalid="ignore"):
        value = np.where(np.abs(value) <= _LIGHTGBM_ZERO, 0.0, value)
        if missing_type != 2:
            value = np.where(np.isnan(value), 0.0, value)
        if missing_type == 1:
            missing = np.abs(value) <= _LIGHTGBM_ZERO
        elif missing_type == 2:
            missing = np.isnan(value)
        else:
            missing = np.zeros(len(value), dtype=bool)
        return np.where(missing, default_left, value <= threshold)


def _tree_text(number: int, tree: dict[str, str], goes_left: dict[int, bool]) -> str:
    """One tree of a model text with the ``goes_left`` splits resolved."""
    fields = _resolved(tree, goes_left) if goes_left else dict(tree)
    lines = [f"Tree={number}", *(f"{key}={value}" for key, value in fields.items())]
    return "\n".join(lines) + "\n\n\n"


def _resolved(tree: dict[str, str], goes_left: dict[int, bool]) -> dict[str, str]:
    """The fields of ``tree`` without the nodes whose direction is known.

    Nodes are renumbered in depth-first order (the root stays 0) and leaves in
    the order they are reached; a tree left without splits has one leaf.
    """
    children = (
        [int(v) for v in tree["left_child"].split()],
        [int(v) for v in tree["right_child"].split()],
    )
    kept_nodes: list[int] = []
    kept_leaves: list[int] = []
    left: list[int] = []
    right: list[int] = []

    def visit(child: int) -> int:
        while child >= 0 and child in goes_left:
            child = children[0][child] if goes_left[child] else children[1][child]
        if child < 0:
            kept_leaves.append(~child)
            return ~(len(kept_leaves) - 1)
        position = len(kept_nodes)
        kept_nodes.append(child)
        left.append(0)
        right.append(0)
        left[position] = visit(children[0][child])
        right[position] = visit(children[1][child])
        return position

    visit(0)
    fields = {}
    for key, value in tree.items():
        tokens = value.split()
        if key in _NODE_FIELDS:
            fields[key] = " ".join(tokens[node] for node in kept_nodes)
        elif key in _LEAF_FIELDS:
            fields[key] = " ".join(tokens[leaf] for leaf in kept_leaves)
        else:
            fields[key] = value
    fields["left_child"] = " ".join(str(v) for v in left)
    fields["right_child"] = " ".join(str(v) for v in right)
    fields["num_leaves"] = str(len(kept_leaves))
    return fields


def _top_k(
    keys: np.ndarray,
    card_of: np.ndarray,
    item: np.ndarray,
    score: np.ndarray,
    category: np.ndarray,
    k: int,
    max_per_category: int | None,
) -> _Ranked:
    """Order each card's scored candidates and keep the best ``k`` under the
    category limit.

    Candidates are ordered by card, score (highest first) and offer column; offer
    columns sort like offer ids (the stage keeps them sorted). A card holds each
    offer at most once, so no duplicate rule is needed.
    """
    order = np.lexsort((item, -score, card_of))
    card_of, item, score = card_of[order], item[order], score[order]
    kept = np.ones(len(order), dtype=bool)
    if max_per_category is not None and len(order):
        groups = int(category.max()) + 1
        group = card_of.astype(np.int64) * groups + category[item]
        kept = _position_in_group(group) < max_per_category
    rank = _position_in_run(card_of[kept]) + 1
    within_k = rank <= k
    return _Ranked(
        keys=keys[card_of[kept][within_k]],
        offer=item[kept][within_k],
        rank=rank[within_k].astype(np.int64),
        score=score[kept][within_k],
    )


def _position_in_group(group: np.ndarray) -> np.ndarray:
    """0-based position of each entry among the earlier entries of its group."""
    by_group = np.argsort(group, kind="stable")
    position = np.empty(len(group), dtype=np.int64)
    position[by_group] = _position_in_run(group[by_group])
    return position


def _position_in_run(values: np.ndarray) -> np.ndarray:
    """0-based position of each entry within its run of equal, adjacent values."""
    if len(values) == 0:
        return np.zeros(0, dtype=np.int64)
    index = np.arange(len(values))
    starts = np.r_[True, values[1:] != values[:-1]]
    return index - np.maximum.accumulate(np.where(starts, index, 0))


def _as_frame(pieces: list[_Ranked], offers: _Offers) -> pd.DataFrame:
    """One output frame of every chunk's kept offers, in chunk order."""
    if not pieces:
        return pd.DataFrame(columns=OUTPUT_COLUMNS)
    return pd.DataFrame(
        {
            CARD_KEY: np.concatenate([piece.keys for piece in pieces]),
            OFFER_ID: offers.ids[np.concatenate([piece.offer for piece in pieces])],
            "rank": np.concatenate([piece.rank for piece in pieces]),
            "score": np.concatenate([piece.score for piece in pieces]),
        }
    )[OUTPUT_COLUMNS]

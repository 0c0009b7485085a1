"""Business rules after scoring, shared by evaluation, batch scoring and serving.

A scored candidate (card holder, offer, score) reaches a card holder only when every
rule below lets it through. Rules are checked in this order; the first one that
fails is the reason the candidate was dropped:

1. ``unknown_card`` / ``unknown_offer``: the card or the offer is not in the tables.
2. ``no_consent``: the card holder has not consented to marketing (no offers at all).
3. ``excluded``: the caller asked not to show this offer.
4. ``already_redeemed``: the card holder already redeemed it.
5. ``card_inactive``: the offer requires an active card and the card is not active.
6. ``outside_validity``: ``at`` is not within ``[valid_from, valid_to]`` (both
   inclusive; a missing bound is open).
7. ``wrong_region``: the offer's region is neither ``"global"`` nor the card's region.
8. ``age_ineligible``: the card holder's age is outside ``[min_age, max_age]`` (a
   missing bound is open; an unknown age fails any bound that is set).
9. ``quota_exhausted``: ``quota_left`` is 0 or less (missing means no quota).
10. ``missing_score``: the score is NaN.
11. ``duplicate``: the same offer appears again for the card (the best-scored copy
    is kept).
12. ``diversity``: the card's list already holds ``max_per_category`` better-scored
    offers of the same category (a missing category counts as one category).
13. ``beyond_k``: the card's list already holds ``k`` better-scored offers.

Within a card, candidates are ordered by score (highest first), ties broken by
``offer_id`` (ascending), so the outcome never depends on the input row order.

:func:`apply_rules` is vectorised for batches of a million card holders;
:func:`apply_rules_per_card` is the straightforward per-card path with the same
output, used by tests to check the fast path and usable for a single card.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from features.errors import InputError
from features.schema import CARD_KEY, OFFER_ID, OFFER_REGION_GLOBAL
from features.times import utc_timestamp

logger = logging.getLogger(__name__)

KEPT = "kept"
RULES = (
    "unknown_card",
    "unknown_offer",
    "no_consent",
    "excluded",
    "already_redeemed",
    "card_inactive",
    "outside_validity",
    "wrong_region",
    "age_ineligible",
    "quota_exhausted",
    "missing_score",
    "duplicate",
    "diversity",
    "beyond_k",
)
OUTCOMES = (KEPT, *RULES)

_MISSING_BY_KIND: dict[str, Any] = {
    "f": np.nan,
    "M": np.datetime64("NaT"),
    "b": False,
    "i": 0,
    "O": None,
}

STATUS_OK = "ok"
STATUS_NO_CONSENT = "no_consent"
STATUS_UNKNOWN = "unknown"

ACTIVE = "active"
SCORE = "score"
RANK = "rank"
CARD_COLUMNS = (
    "age",
    "card_status",
    "region",
    "consent_marketing",
    "redeemed_offer_ids",
)
OFFER_COLUMNS = (
    "valid_from",
    "valid_to",
    "region",
    "min_age",
    "max_age",
    "requires_active_card",
    "quota_left",
    "category",
)


def _check_inputs(
    candidates: pd.DataFrame, cards: pd.DataFrame, offers: pd.DataFrame, k: int
) -> None:
    needed = {
        "candidates": (candidates, (CARD_KEY, OFFER_ID, SCORE)),
        "cards": (cards, CARD_COLUMNS),
        "offers": (offers, OFFER_COLUMNS),
    }
    for name, (frame, columns) in needed.items():
        missing = [c for c in columns if c not in frame.columns]
        if missing:
            raise InputError(
                f"expected {name} columns {list(columns)}, missing {missing}; "
                f"add them (see training.rules)"
            )
    if k < 1:
        raise InputError(f"expected k of at least 1, got {k}; ask for 1 or more")


def as_utc(value: Any) -> pd.Timestamp:
    """A timestamp in UTC; a naive one is taken as UTC."""
    return utc_timestamp(value)


def utc_naive(column: pd.Series) -> np.ndarray:
    """UTC instants as naive ``datetime64[ns]`` (naive input is taken as UTC)."""
    values = pd.to_datetime(column)
    if values.dt.tz is not None:
        values = values.dt.tz_convert("UTC").dt.tz_localize(None)
    return values.to_numpy(dtype="datetime64[ns]")


def has_marketing_consent(value: Any) -> bool:
    """Whether a consent value means "yes" (missing means no)."""
    return is_true(value)


def is_true(value: Any) -> bool:
    """Whether a flag is set; a missing value (None, NaN, NA) is not."""
    return _present(value) and bool(value)


def category_key(value: Any) -> str:
    """An offer's category as the diversity rule groups it (missing is ``""``)."""
    return str(value) if _present(value) else ""


def redeemed_ids(value: Any) -> list[str]:
    """The offer ids in a card's ``redeemed_offer_ids`` cell (missing is none)."""
    if value is None:
        return []
    if isinstance(value, float) and np.isnan(value):
        return []
    if isinstance(value, str):
        return [value]
    return [str(v) for v in value]


def age_failures(age: np.ndarray, low: np.ndarray, high: np.ndarray) -> np.ndarray:
    """Where an age falls outside ``[low, high]``, element-wise.

    NaN bounds are open; an unknown (NaN) age fails whenever a bound is set.
    """
    bounded = ~np.isnan(low) | ~np.isnan(high)
    with np.errstate(invalid="ignore"):
        too_young = ~np.isnan(low) & (age < low)
        too_old = ~np.isnan(high) & (age > high)
    return too_young | too_old | (bounded & np.isnan(age))


def card_status(card_key: str, cards: pd.DataFrame) -> str:
    """Status of one card holder: ``ok``, ``no_consent`` or ``unknown``.

    Args:
        card_key: pseudonym of the card.
        cards: card facts indexed by card key (see :func:`apply_rules`).

    Returns:
        ``unknown`` when the card is not in ``cards`` (the service answers it with
        the cold-start path), ``no_consent`` without marketing consent, else ``ok``.
    """
    if card_key not in cards.index:
        return STATUS_UNKNOWN
    if not has_marketing_consent(cards.at[card_key, "consent_marketing"]):
        return STATUS_NO_CONSENT
    return STATUS_OK


def card_statuses(card_keys: Iterable[str], cards: pd.DataFrame) -> pd.Series:
    """Vectorised :func:`card_status` for many card keys, in the order given."""
    keys = pd.Index(list(card_keys), dtype=object)
    position = cards.index.get_indexer(keys)
    consent = cards["consent_marketing"].to_numpy(dtype=object)
    status = np.full(len(keys), STATUS_UNKNOWN, dtype=object)
    known = position >= 0
    consented = np.array(
        [has_marketing_consent(consent[p]) for p in position[known]], dtype=bool
    )
    status[known] = np.where(consented, STATUS_OK, STATUS_NO_CONSENT)
    return pd.Series(status, index=keys, name="status")


def rule_outcomes(
    candidates: pd.DataFrame,
    cards: pd.DataFrame,
    offers: pd.DataFrame,
    at: pd.Timestamp,
    k: int,
    max_per_category: int | None = 2,
    exclude: Iterable[str] = (),
) -> pd.Series:
    """The outcome of every candidate row: ``kept`` or the first rule it fails.

    Arguments are those of :func:`apply_rules`.

    Returns:
        A categorical series aligned with ``candidates`` whose values are
        :data:`OUTCOMES`.
    """
    evaluation = _evaluate(candidates, cards, offers, at, k, max_per_category, exclude)
    return pd.Series(
        pd.Categorical.from_codes(evaluation.codes, categories=list(OUTCOMES)),
        index=candidates.index,
        name="outcome",
    )


def apply_rules(
    candidates: pd.DataFrame,
    cards: pd.DataFrame,
    offers: pd.DataFrame,
    at: pd.Timestamp,
    k: int,
    max_per_category: int | None = 2,
    exclude: Iterable[str] = (),
) -> pd.DataFrame:
    """Keep, per card holder, the top ``k`` scored offers that pass every rule.

    Args:
        candidates: rows of ``card_key``, ``offer_id``, ``score`` and any other
            columns, which are passed through.
        cards: indexed by card key, with ``age``, ``card_status``, ``region``,
            ``consent_marketing`` (bool) and ``redeemed_offer_ids`` (list of offer
            ids, or empty / missing).
        offers: indexed by offer id, with ``valid_from``, ``valid_to``, ``region``,
            ``min_age``, ``max_age``, ``requires_active_card``, ``quota_left`` (NaN
            means no quota) and ``category``.
        at: the moment the offers would be shown (naive means UTC).
        k: offers per card holder at most.
        max_per_category: offers of one category per card holder at most; None
            for no limit.
        exclude: offer ids never to show.

    Returns:
        The kept candidate rows with a ``rank`` column (1 = best), ordered by
        the card's first appearance in ``candidates`` and then by rank, with a
        fresh index.
    """
    evaluation = _evaluate(candidates, cards, offers, at, k, max_per_category, exclude)
    kept = candidates.iloc[evaluation.kept_order].reset_index(drop=True)
    kept[RANK] = evaluation.kept_rank
    return kept


def explain_drops(
    candidates: pd.DataFrame,
    cards: pd.DataFrame,
    offers: pd.DataFrame,
    at: pd.Timestamp,
    k: int,
    max_per_category: int | None = 2,
    exclude: Iterable[str] = (),
) -> pd.Series:
    """How many candidate rows each rule dropped, and how many were kept.

    Returns:
        Counts indexed by :data:`OUTCOMES` (zeros included).
    """
    outcome = rule_outcomes(candidates, cards, offers, at, k, max_per_category, exclude)
    return outcome.value_counts(sort=False).reindex(list(OUTCOMES), fill_value=0)


def apply_rules_per_card(
    candidates: pd.DataFrame,
    cards: pd.DataFrame,
    offers: pd.DataFrame,
    at: pd.Timestamp,
    k: int,
    max_per_category: int | None = 2,
    exclude: Iterable[str] = (),
) -> pd.DataFrame:
    """The same result as :func:`apply_rules`, one card holder at a time.

    Straightforward loops over plain Python values: the reference the vectorised
    path is tested against, and cheap for the few cards of a request.
    """
    _check_inputs(candidates, cards, offers, k)
    when = as_utc(at)
    excluded = set(exclude)
    offer_ids = candidates[OFFER_ID].tolist()
    scores = candidates[SCORE].astype(np.float64).tolist()
    offer_rows = offers.loc[offers.index.isin(set(offer_ids))].to_dict(orient="index")

    kept_positions: list[int] = []
    groups = candidates.groupby(CARD_KEY, sort=False).indices
    for card_key, positions in groups.items():
        if card_status(card_key, cards) != STATUS_OK:
            continue
        card = cards.loc[card_key].to_dict()
        eligible = [
            int(p)
            for p in positions
            if _passes(offer_ids[p], scores[p], card, offer_rows, when, excluded)
        ]
        eligible.sort(key=lambda p: (-scores[p], offer_ids[p]))
        kept_positions.extend(
            _top_for_card(eligible, offer_ids, offer_rows, k, max_per_category)
        )
    return _ranked(candidates.iloc[sorted(kept_positions)], candidates)


def _passes(
    offer_id: str,
    score: float,
    card: Mapping[str, Any],
    offer_rows: Mapping[str, Mapping[str, Any]],
    when: pd.Timestamp,
    excluded: set[str],
) -> bool:
    offer = offer_rows.get(offer_id)
    if offer is None or offer_id in excluded:
        return False
    if offer_id in redeemed_ids(card["redeemed_offer_ids"]):
        return False
    if is_true(offer["requires_active_card"]) and card["card_status"] != ACTIVE:
        return False
    if not _within(when, offer["valid_from"], offer["valid_to"]):
        return False
    if offer["region"] not in (OFFER_REGION_GLOBAL, card["region"]):
        return False
    if not _age_ok(card["age"], offer["min_age"], offer["max_age"]):
        return False
    quota = offer["quota_left"]
    if _present(quota) and quota <= 0:
        return False
    return not np.isnan(score)


def _top_for_card(
    ordered: list[int],
    offer_ids: list[str],
    offer_rows: Mapping[str, Mapping[str, Any]],
    k: int,
    max_per_category: int | None,
) -> list[int]:
    seen: set[str] = set()
    per_category: dict[str, int] = {}
    chosen: list[int] = []
    for position in ordered:
        offer_id = offer_ids[position]
        if offer_id in seen:
            continue
        seen.add(offer_id)
        category = category_key(offer_rows[offer_id]["category"])
        if max_per_category is not None:
            if per_category.get(category, 0) >= max_per_category:
                continue
            per_category[category] = per_category.get(category, 0) + 1
        chosen.append(position)
        if len(chosen) == k:
            break
    return chosen


def _ranked(kept: pd.DataFrame, candidates: pd.DataFrame) -> pd.DataFrame:
    """Order kept rows by card first appearance, then score, then offer id."""
    card_order = pd.Index(pd.unique(candidates[CARD_KEY].to_numpy()))
    frame = kept.copy()
    frame["_card"] = card_order.get_indexer(frame[CARD_KEY].to_numpy())
    frame["_neg_score"] = -frame[SCORE].astype(np.float64)
    frame = frame.sort_values(["_card", "_neg_score", OFFER_ID], kind="stable")
    frame[RANK] = frame.groupby("_card", sort=False).cumcount().astype(np.int64) + 1
    return frame.drop(columns=["_card", "_neg_score"]).reset_index(drop=True)


@dataclass(frozen=True)
class _Evaluation:
    """Outcome code of every candidate row, and the kept rows in output order."""

    codes: np.ndarray
    kept_order: np.ndarray
    kept_rank: np.ndarray


@dataclass(frozen=True)
class _Facts:
    """Card and offer facts, one entry per distinct card or offer of the batch.

    Rows of the batch read them through ``card_codes`` and ``offer_codes``, so
    every per-row step works on numbers.
    """

    card_codes: np.ndarray
    offer_codes: np.ndarray
    card_known: np.ndarray
    card_age: np.ndarray
    card_active: np.ndarray
    card_region: np.ndarray
    card_consent: np.ndarray
    offer_known: np.ndarray
    offer_valid_from: np.ndarray
    offer_valid_to: np.ndarray
    offer_region: np.ndarray
    offer_global: np.ndarray
    offer_min_age: np.ndarray
    offer_max_age: np.ndarray
    offer_requires_active: np.ndarray
    offer_quota_left: np.ndarray
    offer_category: np.ndarray
    offer_sort_key: np.ndarray
    offer_excluded: np.ndarray
    redeemed_pairs: np.ndarray


def _evaluate(
    candidates: pd.DataFrame,
    cards: pd.DataFrame,
    offers: pd.DataFrame,
    at: pd.Timestamp,
    k: int,
    max_per_category: int | None,
    exclude: Iterable[str],
) -> _Evaluation:
    _check_inputs(candidates, cards, offers, k)
    facts = _facts(candidates, cards, offers, set(exclude))
    score = candidates[SCORE].to_numpy(dtype=np.float64)
    codes = np.full(len(candidates), -1, dtype=np.int8)

    for rule, failed in _eligibility_failures(facts, score, at):
        codes[(codes < 0) & failed] = OUTCOMES.index(rule)

    order = _ranking_order(facts, score, np.flatnonzero(codes < 0))
    card = facts.card_codes[order]
    pair = _pair_codes(card, facts.offer_codes[order], len(facts.offer_known))
    sorted_codes = np.full(len(order), -1, dtype=np.int8)
    sorted_codes[pd.Index(pair).duplicated()] = OUTCOMES.index("duplicate")

    if max_per_category is not None:
        fresh = sorted_codes < 0
        n_categories = int(facts.offer_category.max(initial=0)) + 1
        group = (
            card[fresh].astype(np.int64) * n_categories
            + (facts.offer_category[facts.offer_codes[order[fresh]]])
        )
        within = pd.Series(group).groupby(group, sort=False).cumcount().to_numpy()
        crowded = np.zeros(len(order), dtype=bool)
        crowded[fresh] = within >= max_per_category
        sorted_codes[crowded] = OUTCOMES.index("diversity")

    fresh = sorted_codes < 0
    rank = _rank_within_runs(card[fresh])
    beyond = np.zeros(len(order), dtype=bool)
    beyond[fresh] = rank > k
    sorted_codes[beyond] = OUTCOMES.index("beyond_k")
    sorted_codes[sorted_codes < 0] = OUTCOMES.index(KEPT)
    codes[order] = sorted_codes

    kept = sorted_codes == OUTCOMES.index(KEPT)
    return _Evaluation(
        codes=codes, kept_order=order[kept], kept_rank=rank[rank <= k].astype(np.int64)
    )


def _facts(
    candidates: pd.DataFrame,
    cards: pd.DataFrame,
    offers: pd.DataFrame,
    exclude: set[str],
) -> _Facts:
    card_codes, card_keys = pd.factorize(
        candidates[CARD_KEY].to_numpy(), use_na_sentinel=False
    )
    offer_codes, offer_keys = pd.factorize(
        candidates[OFFER_ID].to_numpy(), use_na_sentinel=False
    )
    card_pos = cards.index.get_indexer(card_keys)
    offer_pos = offers.index.get_indexer(offer_keys)

    card_region = _take(cards["region"].to_numpy(dtype=object), card_pos)
    offer_region = _take(offers["region"].to_numpy(dtype=object), offer_pos)
    regions = pd.Index(pd.unique(np.concatenate([card_region, offer_region])))
    categories = np.array([category_key(v) for v in offers["category"]], dtype=object)
    category_codes = pd.factorize(categories)[0] if len(categories) else categories

    sort_key = np.empty(len(offer_keys), dtype=np.int64)
    sort_key[np.argsort(np.asarray(offer_keys, dtype=str), kind="stable")] = np.arange(
        len(offer_keys)
    )
    return _Facts(
        card_codes=card_codes,
        offer_codes=offer_codes,
        card_known=card_pos >= 0,
        card_age=_take(_numbers(cards["age"]), card_pos),
        card_active=_take((cards["card_status"] == ACTIVE).to_numpy(), card_pos),
        card_region=regions.get_indexer(card_region),
        card_consent=_take(_consent_flags(cards["consent_marketing"]), card_pos),
        offer_known=offer_pos >= 0,
        offer_valid_from=_take(utc_naive(offers["valid_from"]), offer_pos),
        offer_valid_to=_take(utc_naive(offers["valid_to"]), offer_pos),
        offer_region=regions.get_indexer(offer_region),
        offer_global=offer_region == OFFER_REGION_GLOBAL,
        offer_min_age=_take(_numbers(offers["min_age"]), offer_pos),
        offer_max_age=_take(_numbers(offers["max_age"]), offer_pos),
        offer_requires_active=_take(
            np.array([is_true(v) for v in offers["requires_active_card"]], dtype=bool),
            offer_pos,
        ),
        offer_quota_left=_take(_numbers(offers["quota_left"]), offer_pos),
        offer_category=_take(np.asarray(category_codes, dtype=np.int64), offer_pos),
        offer_sort_key=sort_key,
        offer_excluded=np.isin(np.asarray(offer_keys, dtype=object), list(exclude)),
        redeemed_pairs=_redeemed_pairs(cards, card_pos, offer_keys),
    )


def _take(values: np.ndarray, positions: np.ndarray) -> np.ndarray:
    """``values[positions]``; unknown positions (-1) give a missing value."""
    missing = _MISSING_BY_KIND.get(values.dtype.kind)
    if len(values) == 0:
        return np.full(len(positions), missing, dtype=values.dtype)
    taken = values[np.maximum(positions, 0)]
    taken[positions < 0] = missing
    return taken


def _numbers(column: pd.Series) -> np.ndarray:
    return pd.to_numeric(column, errors="coerce").to_numpy(np.float64)


def _consent_flags(column: pd.Series) -> np.ndarray:
    return np.array([has_marketing_consent(v) for v in column], dtype=bool)


def _eligibility_failures(
    facts: _Facts, score: np.ndarray, at: pd.Timestamp
) -> list[tuple[str, np.ndarray]]:
    when = as_utc(at).tz_localize(None).to_datetime64()
    offer_out = (facts.offer_valid_from > when) | (facts.offer_valid_to < when)
    offer_region_ok = facts.offer_global
    card, offer = facts.card_codes, facts.offer_codes
    pair = _pair_codes(card, offer, len(facts.offer_known))
    with np.errstate(invalid="ignore"):
        quota_out = facts.offer_quota_left <= 0

    return [
        ("unknown_card", ~facts.card_known[card]),
        ("unknown_offer", ~facts.offer_known[offer]),
        ("no_consent", ~facts.card_consent[card]),
        ("excluded", facts.offer_excluded[offer]),
        ("already_redeemed", pd.Series(pair).isin(facts.redeemed_pairs).to_numpy()),
        (
            "card_inactive",
            facts.offer_requires_active[offer] & ~facts.card_active[card],
        ),
        ("outside_validity", offer_out[offer]),
        (
            "wrong_region",
            ~offer_region_ok[offer]
            & (facts.offer_region[offer] != facts.card_region[card]),
        ),
        ("age_ineligible", _age_failures(facts)),
        ("quota_exhausted", quota_out[offer]),
        ("missing_score", np.isnan(score)),
    ]


def _age_failures(facts: _Facts) -> np.ndarray:
    return age_failures(
        facts.card_age[facts.card_codes],
        facts.offer_min_age[facts.offer_codes],
        facts.offer_max_age[facts.offer_codes],
    )


def _redeemed_pairs(
    cards: pd.DataFrame, card_pos: np.ndarray, offer_keys: np.ndarray
) -> np.ndarray:
    """(card code, offer code) pairs already redeemed, as single integers.

    Only offers that appear among the candidates matter, so a redeemed offer
    outside the batch is left out.
    """
    redeemed = cards["redeemed_offer_ids"].to_numpy(dtype=object)
    owners: list[int] = []
    offer_ids: list[str] = []
    for code in np.flatnonzero(card_pos >= 0):
        ids = redeemed_ids(redeemed[card_pos[code]])
        owners.extend([int(code)] * len(ids))
        offer_ids.extend(ids)
    if not offer_ids:
        return np.zeros(0, dtype=np.int64)

    offer_codes = pd.Index(offer_keys).get_indexer(offer_ids)
    known = offer_codes >= 0
    owner_codes = np.asarray(owners, dtype=np.int64)[known]
    return _pair_codes(owner_codes, offer_codes[known], len(offer_keys))


def _pair_codes(card: np.ndarray, offer: np.ndarray, n_offers: int) -> np.ndarray:
    """One integer per (card code, offer code) pair."""
    return card.astype(np.int64) * max(n_offers, 1) + offer


def _ranking_order(
    facts: _Facts, score: np.ndarray, positions: np.ndarray
) -> np.ndarray:
    """``positions`` sorted by card (first appearance), score desc, offer id asc."""
    offer_key = facts.offer_sort_key[facts.offer_codes[positions]]
    card = facts.card_codes[positions]
    order = np.lexsort((offer_key, -score[positions], card))
    return positions[order]


def _rank_within_runs(card: np.ndarray) -> np.ndarray:
    """1-based position of each row within its run of equal, adjacent card codes."""
    if len(card) == 0:
        return np.zeros(0, dtype=np.int64)
    index = np.arange(len(card))
    starts = np.r_[True, card[1:] != card[:-1]]
    run_start = np.maximum.accumulate(np.where(starts, index, 0))
    return index - run_start + 1


def _present(value: Any) -> bool:
    """Whether a scalar holds a value (None, NaN, NaT and NA do not)."""
    return value is not None and not pd.isna(value)


def _within(when: pd.Timestamp, start: Any, end: Any) -> bool:
    if _present(start) and as_utc(start) > when:
        return False
    return not _present(end) or as_utc(end) >= when


def _age_ok(age: Any, low: Any, high: Any) -> bool:
    low_set, high_set = _present(low), _present(high)
    if not (low_set or high_set):
        return True
    if not _present(age):
        return False
    return (not low_set or age >= low) and (not high_set or age <= high)

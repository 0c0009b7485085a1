"""Holdout evaluation of both models beside their baselines and the oracle.

Needs: :func:`training.needs_metrics.needs_report` for every scorer (model, category
prior per post, logistic regression, the generator's oracle when present).
Offers: top-k lists of every scorer pass the same business rules
(:func:`training.rules.apply_rules`) before NDCG, recall, precision, MAP, hit rate
and catalogue coverage are computed at k. Results are tidy frames: one row per
scorer, metric (and need), value.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

import numpy as np
import pandas as pd
from scipy import sparse

from features.feature_tables import NO_AGE_LIMIT
from features.schema import CARD_KEY, OFFER_ID
from training import ranking_metrics
from training.needs_metrics import needs_report
from training.rules import apply_rules

logger = logging.getLogger(__name__)

MODEL = "model"
ORACLE = "oracle"
OFFER_METRICS = {
    "ndcg": "ndcg",
    "recall": "recall",
    "precision": "precision",
    "map": "map",
    "hit_rate": "hit_rate",
    "coverage": "coverage",
}


def rule_inputs(
    card_features: pd.DataFrame, offer_facts: pd.DataFrame
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The card and offer tables :func:`training.rules.apply_rules` reads.

    Args:
        card_features: offers_v1 card features (``card_key``, ``age``,
            ``card_status``, ``region``, ``marketing_consent``,
            ``redeemed_offer_ids``).
        offer_facts: offers_v1 offer features (``offer_id``, ``valid_from``,
            ``valid_to``, ``offer_region``, ``min_age``, ``max_age``,
            ``requires_active_card``, ``has_quota``, ``quota_left``,
            ``offer_category``).

    Returns:
        ``cards`` indexed by card key and ``offers`` indexed by offer id.
    """
    cards = card_features.drop_duplicates(CARD_KEY).set_index(CARD_KEY)
    cards = pd.DataFrame(
        {
            "age": cards["age"],
            "card_status": cards["card_status"],
            "region": cards["region"],
            "consent_marketing": cards["marketing_consent"].fillna(0).astype(bool),
            "redeemed_offer_ids": cards["redeemed_offer_ids"],
        },
        index=cards.index,
    )
    offers = offer_facts.drop_duplicates(OFFER_ID).set_index(OFFER_ID)
    has_quota = offers["has_quota"].fillna(0).astype(bool)
    offers = pd.DataFrame(
        {
            "valid_from": offers["valid_from"],
            "valid_to": offers["valid_to"],
            "region": offers["offer_region"],
            # The feature table stores "no limit" as 0 and 120; the rules want NaN,
            # or a card of unknown age would fail every offer.
            "min_age": _age_limit(offers["min_age"], NO_AGE_LIMIT[0]),
            "max_age": _age_limit(offers["max_age"], NO_AGE_LIMIT[1]),
            "requires_active_card": offers["requires_active_card"]
            .fillna(0)
            .astype(bool),
            # Offers without a quota store quota_left 0; missing means no quota.
            "quota_left": offers["quota_left"].astype(float).where(has_quota),
            "category": offers["offer_category"],
        },
        index=offers.index,
    )
    return cards, offers


def _age_limit(limits: pd.Series, no_limit: int) -> pd.Series:
    """Age limits as floats, with the feature table's "no limit" value as NaN."""
    values = limits.astype(float)
    return values.where(values != no_limit)


def needs_comparison(
    outcomes: pd.DataFrame, scorers: Mapping[str, pd.DataFrame]
) -> pd.DataFrame:
    """Needs metrics of every scorer on the same holdout rows.

    Args:
        outcomes: 0/1 per need id, one row per holdout card.
        scorers: propensities per scorer name, same index and need columns.

    Returns:
        Tidy ``scorer, need_id, metric, value`` (``need_id`` ``macro`` averages).
    """
    parts = []
    for name, propensities in scorers.items():
        report = needs_report(outcomes, propensities.loc[outcomes.index])
        tidy = report.reset_index().melt(
            id_vars="need_id", var_name="metric", value_name="value"
        )
        tidy.insert(0, "scorer", name)
        parts.append(tidy)
    return pd.concat(parts, ignore_index=True)


def top_k_lists(
    scored: pd.DataFrame,
    cards: pd.DataFrame,
    offers: pd.DataFrame,
    at: pd.Timestamp,
    k: int,
) -> pd.DataFrame:
    """The top ``k`` offers per card after the business rules.

    Args:
        scored: ``card_key, offer_id, score`` rows (more than k per card).
        cards: card table of :func:`rule_inputs`.
        offers: offer table of :func:`rule_inputs`.
        at: when the offers would be shown (the start of the holdout).
        k: list length.

    Returns:
        ``card_key, offer_id, score, rank`` with at most ``k`` rows per card.
    """
    if scored.empty:
        return scored.assign(rank=pd.Series(dtype=int))
    return apply_rules(scored, cards, offers, at, k)


def offers_comparison(
    lists: Mapping[str, pd.DataFrame],
    relevant: pd.DataFrame,
    catalogue: list[str],
    k: int,
) -> pd.DataFrame:
    """Ranking metrics at ``k`` of every scorer's rule-filtered top-k lists.

    Args:
        lists: per scorer, ``card_key, offer_id, rank`` after the rules.
        relevant: ``card_key, offer_id, relevance`` observed in the holdout.
        catalogue: every offer id (coverage denominator and item columns).
        k: cut-off.

    Returns:
        Tidy ``scorer, metric, value`` with metrics ``ndcg``, ``recall``,
        ``precision``, ``map``, ``hit_rate``, ``coverage`` and ``users``.
    """
    users = sorted(relevant[CARD_KEY].unique())
    user_index = {card: i for i, card in enumerate(users)}
    item_index = {offer: i for i, offer in enumerate(catalogue)}
    known = relevant[relevant[OFFER_ID].isin(item_index)]
    truth = sparse.csr_matrix(
        (
            np.ones(len(known)),
            (known[CARD_KEY].map(user_index), known[OFFER_ID].map(item_index)),
        ),
        shape=(len(users), len(catalogue)),
    )

    rows = []
    for name, frame in lists.items():
        recommended = _recommended_matrix(frame, user_index, item_index, k)
        report = ranking_metrics.ranking_report(recommended, truth, k)
        for metric in OFFER_METRICS:
            rows.append((name, metric, report[f"{metric}@{k}"]))
        rows.append((name, "users", report["users"]))
    return pd.DataFrame(rows, columns=["scorer", "metric", "value"])


def _recommended_matrix(
    lists: pd.DataFrame,
    user_index: Mapping[str, int],
    item_index: Mapping[str, int],
    k: int,
) -> np.ndarray:
    """Item ids per holdout user, best first, -1 for empty slots."""
    recommended = np.full((len(user_index), k), -1, dtype=np.int64)
    frame = lists[lists[CARD_KEY].isin(user_index) & lists[OFFER_ID].isin(item_index)]
    frame = frame.sort_values([CARD_KEY, "rank"], kind="stable")
    slot = frame.groupby(CARD_KEY).cumcount().to_numpy()
    inside = slot < k
    recommended[frame[CARD_KEY].map(user_index).to_numpy()[inside], slot[inside]] = (
        frame[OFFER_ID].map(item_index).to_numpy()[inside]
    )
    return recommended


def oracle_scored(oracle: pd.DataFrame | None) -> pd.DataFrame | None:
    """The oracle's offer probabilities as scored candidates."""
    if oracle is None:
        return None
    return oracle.rename(columns={"probability": "score"})[
        [CARD_KEY, OFFER_ID, "score"]
    ]


def metric_dict(needs: pd.DataFrame, offers: pd.DataFrame, k: int) -> dict[str, float]:
    """Flat MLflow metric names for the tidy results.

    The model's metrics are ``needs.<need>.<metric>`` and ``offers.<metric>_at_<k>``;
    other scorers add their name: ``needs.baseline_logistic.macro.roc_auc``,
    ``offers.most_popular.ndcg_at_10``.
    """
    flat: dict[str, float] = {}
    for row in needs.itertuples(index=False):
        prefix = "needs" if row.scorer == MODEL else f"needs.{row.scorer}"
        flat[f"{prefix}.{row.need_id}.{row.metric}"] = float(row.value)
    for row in offers.itertuples(index=False):
        prefix = "offers" if row.scorer == MODEL else f"offers.{row.scorer}"
        suffix = "" if row.metric == "users" else f"_at_{k}"
        flat[f"{prefix}.{row.metric}{suffix}"] = float(row.value)
    return {name: value for name, value in flat.items() if np.isfinite(value)}

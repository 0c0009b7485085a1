"""Business rules: each rule on its own, the outcome counts, and the two paths."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from features.errors import InputError
from training.rules import (
    KEPT,
    OUTCOMES,
    RANK,
    apply_rules,
    apply_rules_per_card,
    card_status,
    card_statuses,
    explain_drops,
    rule_outcomes,
)

AT = pd.Timestamp("2026-06-01 12:00", tz="UTC")


def card(**overrides: object) -> dict[str, object]:
    facts: dict[str, object] = {
        "age": 35,
        "card_status": "active",
        "region": "europe",
        "consent_marketing": True,
        "redeemed_offer_ids": [],
    }
    return {**facts, **overrides}


def offer(**overrides: object) -> dict[str, object]:
    facts: dict[str, object] = {
        "valid_from": pd.Timestamp("2026-01-01", tz="UTC"),
        "valid_to": pd.Timestamp("2026-12-31", tz="UTC"),
        "region": "global",
        "min_age": np.nan,
        "max_age": np.nan,
        "requires_active_card": True,
        "quota_left": np.nan,
        "category": "hotel",
    }
    return {**facts, **overrides}


def frames(
    card_facts: dict[str, dict[str, object]],
    offer_facts: dict[str, dict[str, object]],
    rows: list[tuple[str, str, float]],
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    cards = pd.DataFrame.from_dict(card_facts, orient="index")
    offers = pd.DataFrame.from_dict(offer_facts, orient="index")
    candidates = pd.DataFrame(rows, columns=["card_key", "offer_id", "score"])
    return candidates, cards, offers


def kept_offers(result: pd.DataFrame, card_key: str = "c1") -> list[str]:
    return result.loc[result["card_key"] == card_key, "offer_id"].tolist()


def single_offer_outcome(
    card_facts: dict[str, object], offer_facts: dict[str, object], **kwargs: object
) -> str:
    candidates, cards, offers = frames(
        {"c1": card_facts}, {"o1": offer_facts}, [("c1", "o1", 0.5)]
    )
    arguments = {"k": 5, **kwargs}
    outcome = rule_outcomes(candidates, cards, offers, AT, **arguments)
    fast = apply_rules(candidates, cards, offers, AT, **arguments)
    slow = apply_rules_per_card(candidates, cards, offers, AT, **arguments)
    assert len(fast) == len(slow) == int(outcome.iloc[0] == KEPT)
    return str(outcome.iloc[0])


@pytest.mark.parametrize(
    ("card_facts", "offer_facts", "expected"),
    [
        (card(), offer(), KEPT),
        (card(consent_marketing=False), offer(), "no_consent"),
        (card(consent_marketing=None), offer(), "no_consent"),
        (card(redeemed_offer_ids=["o9", "o1"]), offer(), "already_redeemed"),
        (card(redeemed_offer_ids=None), offer(), KEPT),
        (card(card_status="expired"), offer(), "card_inactive"),
        (card(card_status="expired"), offer(requires_active_card=False), KEPT),
        (
            card(),
            offer(valid_from=pd.Timestamp("2026-07-01", tz="UTC")),
            "outside_validity",
        ),
        (
            card(),
            offer(valid_to=pd.Timestamp("2026-05-31", tz="UTC")),
            "outside_validity",
        ),
        (card(), offer(valid_to=AT), KEPT),
        (card(), offer(valid_to=pd.NaT), KEPT),
        (card(), offer(region="east_asia"), "wrong_region"),
        (card(), offer(region="europe"), KEPT),
        (card(age=17), offer(min_age=18), "age_ineligible"),
        (card(age=66), offer(max_age=65), "age_ineligible"),
        (card(age=65), offer(min_age=18, max_age=65), KEPT),
        (card(age=np.nan), offer(min_age=18), "age_ineligible"),
        (card(age=np.nan), offer(), KEPT),
        (card(), offer(quota_left=0), "quota_exhausted"),
        (card(), offer(quota_left=3), KEPT),
    ],
    ids=[
        "eligible",
        "no-consent",
        "consent-missing",
        "redeemed",
        "redeemed-missing",
        "inactive-card",
        "inactive-card-allowed",
        "not-yet-valid",
        "expired-offer",
        "valid-to-inclusive",
        "open-ended-offer",
        "other-region",
        "same-region",
        "too-young",
        "too-old",
        "age-bounds-inclusive",
        "unknown-age-with-bound",
        "unknown-age-no-bound",
        "quota-used-up",
        "quota-left",
    ],
)
def test_each_rule_drops_or_keeps_a_single_offer(
    card_facts: dict[str, object], offer_facts: dict[str, object], expected: str
) -> None:
    assert single_offer_outcome(card_facts, offer_facts) == expected


def test_excluded_offer_is_dropped() -> None:
    assert single_offer_outcome(card(), offer(), exclude={"o1"}) == "excluded"


def test_naive_time_is_taken_as_utc() -> None:
    late = offer(valid_to=pd.Timestamp("2026-06-01 11:00", tz="UTC"))
    candidates, cards, offers = frames({"c1": card()}, {"o1": late}, [("c1", "o1", 1)])

    naive = rule_outcomes(
        candidates, cards, offers, pd.Timestamp("2026-06-01 12:00"), 5
    )
    taipei = pd.Timestamp("2026-06-01 18:30", tz="Asia/Taipei")  # 10:30 UTC
    local = rule_outcomes(candidates, cards, offers, taipei, 5)

    assert naive.iloc[0] == "outside_validity"
    assert local.iloc[0] == KEPT


def test_unknown_card_and_unknown_offer_are_dropped() -> None:
    candidates, cards, offers = frames(
        {"c1": card()},
        {"o1": offer()},
        [("c1", "o1", 1.0), ("c2", "o1", 1.0), ("c1", "o2", 1.0)],
    )

    outcome = rule_outcomes(candidates, cards, offers, AT, 5)

    assert outcome.tolist() == [KEPT, "unknown_card", "unknown_offer"]


def test_top_k_keeps_best_scores_and_ranks_them() -> None:
    offer_facts = {f"o{i}": offer(category=f"cat{i}") for i in range(5)}
    rows = [("c1", f"o{i}", score) for i, score in enumerate([0.1, 0.9, 0.5, 0.7, 0.3])]
    candidates, cards, offers = frames({"c1": card()}, offer_facts, rows)

    result = apply_rules(candidates, cards, offers, AT, k=3)

    assert kept_offers(result) == ["o1", "o3", "o2"]
    assert result[RANK].tolist() == [1, 2, 3]


def test_diversity_caps_offers_per_category() -> None:
    offer_facts = {
        "h1": offer(category="hotel"),
        "h2": offer(category="hotel"),
        "h3": offer(category="hotel"),
        "a1": offer(category="airline"),
    }
    rows = [("c1", "h1", 0.9), ("c1", "h2", 0.8), ("c1", "h3", 0.7), ("c1", "a1", 0.1)]
    candidates, cards, offers = frames({"c1": card()}, offer_facts, rows)

    capped = apply_rules(candidates, cards, offers, AT, k=3, max_per_category=2)
    free = apply_rules(candidates, cards, offers, AT, k=3, max_per_category=None)

    assert kept_offers(capped) == ["h1", "h2", "a1"]
    assert kept_offers(free) == ["h1", "h2", "h3"]


def test_ties_are_broken_by_offer_id_whatever_the_row_order() -> None:
    offer_facts = {name: offer(category=name) for name in ("b", "a", "c")}
    rows = [("c1", "c", 0.5), ("c1", "b", 0.5), ("c1", "a", 0.5)]
    candidates, cards, offers = frames({"c1": card()}, offer_facts, rows)

    result = apply_rules(candidates, cards, offers, AT, k=2)

    assert kept_offers(result) == ["a", "b"]


def test_duplicate_candidates_keep_the_best_copy() -> None:
    candidates, cards, offers = frames(
        {"c1": card()},
        {"o1": offer(), "o2": offer(category="rail")},
        [("c1", "o1", 0.2), ("c1", "o1", 0.8), ("c1", "o2", 0.5)],
    )

    result = apply_rules(candidates, cards, offers, AT, k=5)
    outcome = rule_outcomes(candidates, cards, offers, AT, k=5)

    assert result[["offer_id", "score"]].values.tolist() == [["o1", 0.8], ["o2", 0.5]]
    assert outcome.tolist() == ["duplicate", KEPT, KEPT]


def test_extra_candidate_columns_pass_through() -> None:
    candidates, cards, offers = frames(
        {"c1": card()}, {"o1": offer()}, [("c1", "o1", 1)]
    )
    candidates["source"] = "als"

    result = apply_rules(candidates, cards, offers, AT, k=1)

    assert result["source"].tolist() == ["als"]


def test_explain_drops_counts_every_outcome() -> None:
    offer_facts = {
        "o1": offer(),
        "o2": offer(quota_left=0),
        "o3": offer(region="oceania"),
        "o4": offer(category="rail"),
    }
    rows = [
        ("c1", "o1", 0.9),
        ("c1", "o2", 0.8),
        ("c1", "o3", 0.7),
        ("c1", "o4", 0.6),
        ("c2", "o1", 0.9),
    ]
    candidates, cards, offers = frames(
        {"c1": card(), "c2": card(consent_marketing=False)}, offer_facts, rows
    )

    counts = explain_drops(candidates, cards, offers, AT, k=1)

    assert list(counts.index) == list(OUTCOMES)
    assert counts.sum() == len(rows)
    assert counts[KEPT] == 1
    assert counts["quota_exhausted"] == 1
    assert counts["wrong_region"] == 1
    assert counts["beyond_k"] == 1
    assert counts["no_consent"] == 1


def test_card_status_tells_ok_no_consent_and_unknown() -> None:
    cards = pd.DataFrame.from_dict(
        {"c1": card(), "c2": card(consent_marketing=False)}, orient="index"
    )

    statuses = card_statuses(["c2", "c9", "c1"], cards)

    assert statuses.tolist() == ["no_consent", "unknown", "ok"]
    assert [card_status(key, cards) for key in ("c2", "c9", "c1")] == statuses.tolist()


def test_missing_columns_are_refused_with_their_names() -> None:
    candidates, cards, offers = frames(
        {"c1": card()}, {"o1": offer()}, [("c1", "o1", 1)]
    )

    with pytest.raises(InputError, match="missing \\['quota_left'\\]"):
        apply_rules(candidates, cards, offers.drop(columns="quota_left"), AT, k=1)
    with pytest.raises(InputError, match="k of at least 1"):
        apply_rules(candidates, cards, offers, AT, k=0)


def random_frames(seed: int) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    rng = np.random.default_rng(seed)
    n_cards, n_offers, n_rows = 40, 25, 600
    offer_ids = [f"o{i:02d}" for i in range(n_offers)]
    cards = pd.DataFrame(
        {
            "age": rng.choice([15.0, 30.0, 50.0, 70.0, np.nan], n_cards),
            "card_status": rng.choice(["active", "active", "expired"], n_cards),
            "region": rng.choice(["europe", "oceania"], n_cards),
            "consent_marketing": rng.choice([True, True, True, False], n_cards),
            "redeemed_offer_ids": [
                list(rng.choice(offer_ids, rng.integers(0, 4), replace=False))
                for _ in range(n_cards)
            ],
        },
        index=[f"c{i:02d}" for i in range(n_cards)],
    )
    start = pd.Timestamp("2026-01-01", tz="UTC")
    offers = pd.DataFrame(
        {
            "valid_from": start + pd.to_timedelta(rng.integers(0, 200, n_offers), "D"),
            "valid_to": start + pd.to_timedelta(rng.integers(100, 400, n_offers), "D"),
            "region": rng.choice(["global", "global", "europe", "oceania"], n_offers),
            "min_age": rng.choice([np.nan, 18.0], n_offers),
            "max_age": rng.choice([np.nan, 65.0], n_offers),
            "requires_active_card": rng.choice([True, False], n_offers),
            "quota_left": rng.choice([np.nan, 0.0, 5.0], n_offers),
            "category": rng.choice(["hotel", "rail", "sim", None], n_offers),
        },
        index=offer_ids,
    )
    candidates = pd.DataFrame(
        {
            "card_key": rng.choice([*cards.index, "unknown"], n_rows),
            "offer_id": rng.choice([*offer_ids, "gone"], n_rows),
            "score": np.round(rng.random(n_rows), 1),
        }
    )
    candidates.loc[rng.random(n_rows) < 0.02, "score"] = np.nan
    return candidates, cards, offers


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("max_per_category", [None, 1, 2])
def test_vectorised_and_per_card_paths_agree_on_random_frames(
    seed: int, max_per_category: int | None
) -> None:
    candidates, cards, offers = random_frames(seed)
    exclude = {"o03", "o07"}

    fast = apply_rules(candidates, cards, offers, AT, 4, max_per_category, exclude)
    slow = apply_rules_per_card(
        candidates, cards, offers, AT, 4, max_per_category, exclude
    )

    assert len(fast) > 0
    pd.testing.assert_frame_equal(fast, slow)


def test_shuffled_candidates_give_the_same_lists() -> None:
    candidates, cards, offers = random_frames(11)
    shuffled = candidates.sample(frac=1.0, random_state=3)

    ordered = apply_rules(candidates, cards, offers, AT, 3)
    reordered = apply_rules(shuffled, cards, offers, AT, 3)

    def lists(frame: pd.DataFrame) -> dict[str, list[str]]:
        return frame.groupby("card_key")["offer_id"].apply(list).to_dict()

    assert lists(ordered) == lists(reordered)


@pytest.mark.parametrize(
    "redeemed",
    [np.array(["o1", "o7"]), "o1", ("o1",)],
    ids=["numpy-array", "single-string", "tuple"],
)
def test_redeemed_offers_are_read_from_any_sequence(redeemed: object) -> None:
    candidates, cards, offers = frames(
        {"c1": card(redeemed_offer_ids=redeemed)}, {"o1": offer()}, [("c1", "o1", 1)]
    )

    assert rule_outcomes(candidates, cards, offers, AT, 5).iloc[0] == "already_redeemed"


def test_empty_batches_and_empty_tables_give_empty_lists() -> None:
    candidates, cards, offers = frames(
        {"c1": card()}, {"o1": offer()}, [("c1", "o1", 1)]
    )

    for fast_or_slow in (apply_rules, apply_rules_per_card):
        assert fast_or_slow(candidates.head(0), cards, offers, AT, 3).empty
        assert fast_or_slow(candidates, cards.head(0), offers, AT, 3).empty
        assert fast_or_slow(candidates, cards, offers.head(0), AT, 3).empty


def test_offers_without_age_limits_reach_a_card_of_unknown_age() -> None:
    """Unknown cards once got no offers: the feature table's "no limit" ages (0 and
    120) reached the rules as real bounds, which an unknown age always fails."""
    from training.evaluation import rule_inputs

    card_features = pd.DataFrame(
        {
            "card_key": ["unknown"],
            "age": [np.nan],
            "card_status": ["active"],
            "region": ["europe"],
            "marketing_consent": [1],
            "redeemed_offer_ids": [[]],
        }
    )
    offer_facts = pd.DataFrame(
        {
            "offer_id": ["open", "youth"],
            "valid_from": pd.to_datetime(["2026-01-01", "2026-01-01"], utc=True),
            "valid_to": pd.to_datetime(["2027-01-01", "2027-01-01"], utc=True),
            "offer_region": ["global", "global"],
            "min_age": [0, 16],
            "max_age": [120, 30],
            "requires_active_card": [1, 1],
            "has_quota": [0, 0],
            "quota_left": [0, 0],
            "offer_category": ["hotel", "tour"],
        }
    )
    cards, offers = rule_inputs(card_features, offer_facts)
    candidates = pd.DataFrame(
        {
            "card_key": ["unknown", "unknown"],
            "offer_id": ["open", "youth"],
            "score": [1.0, 2.0],
        }
    )

    kept = apply_rules(
        candidates, cards, offers, pd.Timestamp("2026-06-01", tz="UTC"), 5
    )

    assert kept["offer_id"].tolist() == ["open"]

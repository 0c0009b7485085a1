"""Per-card parsing, the feature cache and card statuses, without a server.

Scores themselves are checked against the offline pipeline in
``tests/e2e/test_service.py``, where real champion models are trained.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from features.cards import pseudonym
from features.errors import LimitExceededError
from serving.ranking import (
    FeatureCache,
    _flag,
    _for_rules,
    _known_to_store,
    _result_for,
    _row_flag,
    _row_known,
    card_frame,
    parse_cards,
)
from serving.schemas import CardResult

SECRET = b"serving-ranking-test-secret-0123"


def test_each_card_is_parsed_on_its_own() -> None:
    parsed = parse_cards(["0000000042", 42, "12-ab", None, 1.5, {"x": 1}], SECRET, 10)

    assert [p.number for p in parsed[:2]] == ["0000000042", "0000000042"]
    assert parsed[0].card_key == pseudonym("0000000042", SECRET)
    assert parsed[0].card_key == parsed[1].card_key
    assert [p.problem is not None for p in parsed] == [
        False,
        False,
        True,
        True,
        True,
        True,
    ]
    assert "digits" in parsed[2].problem


def test_more_cards_than_the_limit_are_refused_naming_it() -> None:
    with pytest.raises(LimitExceededError, match="at most 3 card numbers"):
        parse_cards(["1", "2", "3", "4"], SECRET, 3)


def test_an_invalid_card_result_echoes_a_short_input() -> None:
    (card,) = parse_cards(["x" * 500], SECRET, 10)

    result = _result_for(card, {})

    assert result.status == "invalid"
    assert result.card_number is None
    assert len(result.input) <= 40


def test_a_valid_card_result_carries_its_canonical_number() -> None:
    (card,) = parse_cards([7], SECRET, 10)
    results = {card.card_key: CardResult(card_number=None, status="ok", offers=[])}

    assert _result_for(card, results).card_number == "0000000007"


class Store:
    """A counting stand-in for the online store's read (not Feast itself)."""

    def __init__(self) -> None:
        self.reads: list[list[str]] = []

    def __call__(self, keys: list[str]) -> list[dict[str, object]]:
        self.reads.append(list(keys))
        return [{"age": len(k), "card_status": "active"} for k in keys]


def test_cache_reads_only_missing_or_stale_cards() -> None:
    now = [0.0]
    store = Store()
    cache = FeatureCache(store, max_age=10.0, max_size=100, clock=lambda: now[0])

    cache.get(["a", "bb"])
    cache.get(["bb", "ccc"])
    now[0] = 11.0
    frame = cache.get(["a", "ccc"])

    assert store.reads == [["a", "bb"], ["ccc"], ["a", "ccc"]]
    assert frame["age"].tolist() == [1, 3]
    assert (cache.hits, cache.misses) == (1, 5)


def test_cached_rows_keep_integer_features_numeric_beside_unknown_cards() -> None:
    rows = [{"age": 40, "card_status": "active"}, {"age": None, "card_status": None}]

    frame = card_frame(rows)

    assert str(frame["age"].dtype) == "Int64"
    assert frame["age"].tolist()[0] == 40
    assert frame["card_status"].tolist() == ["active", None]


def test_row_flags_read_consent_and_store_membership() -> None:
    rows = [
        {"card_status": "active", "marketing_consent": 1},
        {"card_status": None, "marketing_consent": None},
        {"card_status": "expired", "marketing_consent": 0},
    ]

    assert [_row_known(r) for r in rows] == [True, False, True]
    assert [_row_flag(r, "marketing_consent") for r in rows] == [True, False, False]


def test_cache_off_reads_every_time_and_keeps_nothing() -> None:
    store = Store()
    cache = FeatureCache(store, max_age=0.0, max_size=100)

    cache.get(["a"])
    cache.get(["a"])

    assert store.reads == [["a"], ["a"]]
    assert len(cache._rows) == 0


def test_cache_keeps_at_most_its_size() -> None:
    cache = FeatureCache(Store(), max_age=60.0, max_size=2)

    cache.get(["a", "b", "c"])

    assert list(cache._rows) == ["b", "c"]


def test_unknown_cards_and_consent_flags_are_read_from_features() -> None:
    features = pd.DataFrame(
        {
            "card_status": ["active", None, "expired"],
            "marketing_consent": [1, None, 0],
        }
    )

    assert _known_to_store(features) == [True, False, True]
    assert _flag(features, "marketing_consent") == [True, False, False]
    assert _flag(features, "analytics_consent") == [False, False, False]


def test_rules_see_an_unknown_card_as_active_with_no_redemptions() -> None:
    features = pd.DataFrame(
        {
            "card_key": ["k1", "k2"],
            "card_status": ["expired", None],
            "marketing_consent": [0, None],
            "redeemed_offer_ids": [np.array(["O1"]), None],
        }
    )

    rows = _for_rules(features)

    assert rows["card_status"].tolist() == ["expired", "active"]
    assert rows["marketing_consent"].tolist() == [0, 1]
    assert rows["redeemed_offer_ids"].tolist() == [["O1"], []]

"""Pieces of the compiled scorer that must agree with the frame-based path.

The whole compiled scorer is compared with ``OfferModel.recommend`` followed by
``apply_rules`` on real champion models in ``tests/e2e/test_service.py``.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from serving.compiled import _row_max, _text, age_band_of, frame_rows
from training.offers import age_band


def test_age_bands_match_the_offer_model_for_every_age() -> None:
    ages = pd.Series([-1, 0, 17, 18, 29, 30, 44, 45, 59, 60, 120, 200, 201, np.nan])

    expected = age_band(ages).tolist()

    assert [age_band_of(float(a)) for a in ages] == expected


def test_row_max_skips_missing_and_gives_missing_for_empty_rows() -> None:
    table = np.array([[0.1, np.nan, 0.3], [np.nan, np.nan, np.nan]])

    best = _row_max(table)

    assert best[0] == pytest.approx(0.3)
    assert math.isnan(best[1])
    assert best.tolist()[0] == pd.DataFrame(table).max(axis=1).tolist()[0]


@pytest.mark.parametrize("value", [None, np.nan, "", "hotel", 3, 1.5], ids=str)
def test_text_matches_pandas_string_conversion(value: object) -> None:
    expected = pd.Series([value], dtype=object).astype(str).iloc[0]

    assert _text(value) == expected


def test_frame_rows_turn_missing_values_into_none_and_keep_lists() -> None:
    frame = pd.DataFrame(
        {
            "card_key": ["a", "b"],
            "age": pd.array([40, None], dtype="Int64"),
            "redeemed_offer_ids": [["O1"], None],
        }
    )

    rows = frame_rows(frame)

    assert rows == [
        {"age": 40, "redeemed_offer_ids": ["O1"]},
        {"age": None, "redeemed_offer_ids": None},
    ]

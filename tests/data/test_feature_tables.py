"""Feature tables computed from a hand-made warehouse whose answers are known."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from features.cards import pseudonym
from features.errors import InputError
from features.feature_tables import (
    CARD_VIEWS,
    build_feature_tables,
    default_snapshots,
)
from tests.data.handmade import (
    ALICE,
    AS_OF,
    BORIS,
    CHEN,
    CUTOFF,
    EARLIER,
    SECRET,
    SNAPSHOTS,
    handmade_warehouse,
)


@pytest.fixture(scope="module")
def tables(tmp_path_factory: pytest.TempPathFactory) -> dict[str, pd.DataFrame]:
    root = tmp_path_factory.mktemp("feature_tables")
    warehouse = handmade_warehouse(root / "warehouse")
    paths = build_feature_tables(warehouse, SECRET, root / "features", SNAPSHOTS)
    return {view: pd.read_parquet(path) for view, path in paths.items()}


def row(frame: pd.DataFrame, card: str, at: pd.Timestamp) -> pd.Series:
    """The feature row of one card at one snapshot."""
    key = pseudonym(card, SECRET)
    match = frame[(frame["card_key"] == key) & (frame["event_timestamp"] == at)]
    assert len(match) == 1, f"expected one row for {card} at {at}, got {len(match)}"
    return match.iloc[0]


def test_card_tables_carry_pseudonyms_and_never_card_numbers(tables):
    numbers = {ALICE, BORIS, CHEN}
    for view in CARD_VIEWS:
        frame = tables[view]
        assert "card_number" not in frame.columns
        assert set(frame["card_key"]) <= {pseudonym(n, SECRET) for n in numbers}
        text = frame.astype(str).to_numpy().ravel()
        assert not numbers.intersection(text), f"{view} holds a card number"


def test_rows_are_stamped_with_snapshots_and_cards_appear_once_issued(tables):
    profile = tables["card_profile"]
    assert set(profile["event_timestamp"]) == set(SNAPSHOTS)
    chen = profile[profile["card_key"] == pseudonym(CHEN, SECRET)]
    assert sorted(chen["event_timestamp"]) == [CUTOFF, AS_OF]
    assert not profile.duplicated(["card_key", "event_timestamp"]).any()


def test_event_one_second_before_snapshot_counts_and_one_after_does_not(tables):
    at_cutoff = row(tables["service_use"], ALICE, CUTOFF)
    later = row(tables["service_use"], ALICE, AS_OF)
    assert at_cutoff["svc_study_in_taiwan_30d"] == 1
    assert at_cutoff["days_since_study_in_taiwan"] == pytest.approx(1 / 86400)
    assert later["svc_study_in_taiwan_90d"] == 2

    offers = row(tables["offer_history"], ALICE, CUTOFF)
    assert offers["offer_redemptions_90d"] == 1
    assert list(offers["redeemed_offer_ids"]) == ["O1"]
    assert list(row(tables["offer_history"], ALICE, AS_OF)["redeemed_offer_ids"]) == [
        "O1",
        "O2",
    ]

    push = row(tables["push_engagement"], ALICE, CUTOFF)
    assert (push["push_sent_90d"], push["push_opened_90d"]) == (2, 1)
    assert push["days_since_push_open"] == pytest.approx(4.0)
    assert row(tables["push_engagement"], BORIS, CUTOFF)["push_blocked"] == 0
    assert row(tables["push_engagement"], BORIS, AS_OF)["push_blocked"] == 1


def test_consent_is_the_latest_record_before_the_snapshot(tables):
    profile = tables["card_profile"]
    assert row(profile, ALICE, CUTOFF)["marketing_consent"] == 1
    assert row(profile, ALICE, AS_OF)["marketing_consent"] == 0
    assert row(profile, BORIS, CUTOFF)["marketing_consent"] == 0
    assert row(profile, BORIS, AS_OF)["marketing_consent"] == 1
    assert row(profile, BORIS, EARLIER)["analytics_consent"] == 1
    assert row(profile, CHEN, AS_OF)["marketing_consent"] == 0


def test_profile_reports_age_tenure_and_expiry_at_the_snapshot(tables):
    profile = tables["card_profile"]
    boris_before, boris_after = row(profile, BORIS, CUTOFF), row(profile, BORIS, AS_OF)
    assert (boris_before["card_status"], boris_before["is_active"]) == ("active", 1)
    assert (boris_after["card_status"], boris_after["is_active"]) == ("expired", 0)
    assert row(profile, ALICE, AS_OF)["age"] == 35
    assert row(profile, CHEN, CUTOFF)["tenure_days"] == 16
    assert row(profile, CHEN, CUTOFF)["region"] == "southeast_asia"


def test_favourite_category_follows_clicks_and_redemptions(tables):
    history = tables["offer_history"]
    assert row(history, ALICE, CUTOFF)["favourite_category_365d"] == "airline"
    assert row(history, BORIS, CUTOFF)["favourite_category_365d"] == "hotel"
    assert row(history, CHEN, CUTOFF)["favourite_category_365d"] == ""
    assert row(history, ALICE, CUTOFF)["offer_click_rate_365d"] == pytest.approx(0.5)


def test_offer_stats_count_recent_events_and_quota_left(tables):
    stats = tables["offer_stats"].set_index(["offer_id", "event_timestamp"])
    first = stats.loc[("O1", CUTOFF)]
    assert (first["offer_clicks_30d"], first["offer_redemptions_30d"]) == (1, 1)
    assert (first["has_quota"], first["quota_left"]) == (1, 9)
    assert stats.loc[("O1", EARLIER), "quota_left"] == 10
    assert (
        stats.loc[("O2", AS_OF), "min_age"],
        stats.loc[("O2", AS_OF), "max_age"],
    ) == (
        0,
        70,
    )


def test_post_stats_divide_service_use_by_the_cards_of_the_post(tables):
    posts = tables["post_stats"].set_index(["post_id", "event_timestamp"])
    assert posts.loc[("P01", CUTOFF), "post_card_count"] == 2
    assert posts.loc[("P01", AS_OF), "post_active_card_count"] == 1
    assert posts.loc[("P01", CUTOFF), "post_study_in_taiwan_per_card_90d"] == 0.5
    assert posts.loc[("P02", EARLIER), "post_card_count"] == 0


def test_default_snapshots_are_monthly_and_end_at_as_of():
    stamps = default_snapshots(pd.Timestamp("2026-11-01"))
    assert len(stamps) == 12
    assert stamps[-1] == pd.Timestamp("2026-11-01", tz="UTC")
    assert stamps[0] == pd.Timestamp("2025-12-01", tz="UTC")


def test_snapshot_after_the_warehouse_ends_is_refused(tmp_path: Path):
    warehouse = handmade_warehouse(tmp_path / "warehouse")
    with pytest.raises(InputError, match="up to the warehouse's as_of"):
        build_feature_tables(
            warehouse, SECRET, tmp_path / "features", [AS_OF + pd.Timedelta(days=1)]
        )
    assert not (tmp_path / "features" / "card_profile.parquet").exists()


@pytest.mark.parametrize("source", ["handmade", "generated"])
def test_tables_equal_the_plain_join_of_events_with_snapshots(
    source, small_warehouse, tmp_path: Path
):
    """The vectorised window counts give exactly what the plain SQL join gives."""
    from tests.data import reference_tables

    if source == "handmade":
        warehouse, snapshots = handmade_warehouse(tmp_path / "warehouse"), SNAPSHOTS
    else:
        warehouse, snapshots = small_warehouse, None
    fast = build_feature_tables(warehouse, SECRET, tmp_path / "fast", snapshots)
    plain = reference_tables.build_feature_tables(
        warehouse, SECRET, tmp_path / "plain", snapshots
    )
    assert set(fast) == set(plain)
    for view, path in fast.items():
        ours, reference = pd.read_parquet(path), pd.read_parquet(plain[view])
        if "redeemed_offer_ids" in ours:
            for frame in (ours, reference):
                frame["redeemed_offer_ids"] = frame["redeemed_offer_ids"].map(list)
        assert len(ours) > 0, f"{view} is empty"
        pd.testing.assert_frame_equal(ours, reference, check_exact=True, obj=view)

"""The synthetic warehouse: deterministic, structured as planted, true to its oracle."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from features.errors import InputError
from features.generator import (
    TOP_OFFERS,
    GeneratedWarehouse,
    age_band_index,
    generate,
    write_generated,
)
from features.schema import ORACLE_NEEDS_FILE, ORACLE_OFFERS_FILE
from features.warehouse import Warehouse

PLANTED_CARDS = 3_000


@pytest.fixture(scope="module")
def planted() -> GeneratedWarehouse:
    """Enough card holders for the planted effects to show."""
    return generate(cards=PLANTED_CARDS, seed=21)


def _with_age(generated: GeneratedWarehouse, frame: pd.DataFrame) -> pd.DataFrame:
    holders = generated.tables["card_holders"][["card_number", "birth_year"]]
    joined = frame.merge(holders.astype({"card_number": object}), on="card_number")
    as_of = pd.Timestamp(generated.meta["as_of"])
    joined["band"] = age_band_index(as_of.year - joined["birth_year"].to_numpy())
    return joined


def test_same_seed_gives_identical_frames() -> None:
    first = generate(cards=250, seed=3)
    second = generate(cards=250, seed=3)

    for name, frame in first.tables.items():
        pd.testing.assert_frame_equal(frame, second.tables[name], check_exact=True)
    pd.testing.assert_frame_equal(first.oracle_needs, second.oracle_needs)
    pd.testing.assert_frame_equal(first.oracle_offers, second.oracle_offers)
    assert first.meta == second.meta


def test_other_seed_gives_other_card_holders() -> None:
    first = generate(cards=250, seed=3).tables["card_holders"]
    other = generate(cards=250, seed=4).tables["card_holders"]

    assert not first["card_number"].equals(other["card_number"])


def test_same_data_written_twice_has_the_same_fingerprint(tmp_path: Path) -> None:
    generated = generate(cards=120, seed=9)
    first, second = Warehouse(tmp_path / "a"), Warehouse(tmp_path / "b")

    write_generated(generated, first)
    write_generated(generated, second)

    assert first.fingerprint() == second.fingerprint()
    assert first.fingerprint() != ""


def test_store_holds_tables_oracle_and_meta(small_warehouse: Warehouse) -> None:
    meta = small_warehouse.meta()

    assert small_warehouse.exists()
    assert meta["source"] == "synthetic"
    assert meta["cards"] == len(small_warehouse.read_table("card_holders"))
    assert small_warehouse.as_of() == pd.Timestamp("2026-11-01T00:00:00Z")
    assert (small_warehouse.directory / ORACLE_NEEDS_FILE).exists()
    assert (small_warehouse.directory / ORACLE_OFFERS_FILE).exists()
    connection = small_warehouse.connect()
    counts = connection.execute("SELECT count(*) FROM oracle_needs").fetchone()
    assert counts == (meta["cards"] * 12,)


def test_events_lie_between_card_issue_and_as_of(planted: GeneratedWarehouse) -> None:
    holders = planted.tables["card_holders"].set_index("card_number")["issued_at"]
    as_of = pd.Timestamp(planted.meta["as_of"])

    for name in ("service_events", "offer_events", "push_events"):
        events = planted.tables[name]
        issued = holders.reindex(events["card_number"].astype(object)).to_numpy()
        assert (events["event_time"] < as_of).all(), name
        assert (events["event_time"].to_numpy() >= issued).all(), name


def test_study_in_taiwan_is_a_young_persons_need(planted: GeneratedWarehouse) -> None:
    events = _with_age(planted, planted.tables["service_events"])
    holders = _with_age(planted, planted.tables["card_holders"][["card_number"]])
    study = events[events["need_id"] == "study_in_taiwan"]

    per_card = study.groupby("band").size() / holders.groupby("band").size()

    assert per_card.get(0, 0) > 5 * per_card.loc[[4, 5]].fillna(0).max()


def test_senior_visits_peak_around_lunar_new_year(planted: GeneratedWarehouse) -> None:
    events = planted.tables["service_events"]
    senior = events[events["need_id"] == "senior_return_visits"]
    month = senior["event_time"].dt.month

    assert month.isin([1, 2]).sum() > 2 * month.isin([6, 7]).sum()


def test_a_recent_use_makes_the_next_more_likely(planted: GeneratedWarehouse) -> None:
    events = planted.tables["service_events"]
    news = events[events["need_id"] == "news_media"]
    months = news["event_time"].dt.tz_convert(None).dt.to_period("M")
    used = pd.crosstab(news["card_number"].astype(object), months) > 0
    cards_without_use = PLANTED_CARDS - len(used)

    before, after = used.iloc[:, 1:-2].to_numpy(), used.iloc[:, 2:-1].to_numpy()
    again = after[before].mean()
    fresh = after[~before].sum() / (
        (~before).sum() + cards_without_use * before.shape[1]
    )

    assert again > 2 * fresh


def test_holdout_needs_follow_the_oracle(planted: GeneratedWarehouse) -> None:
    oracle = planted.oracle_needs
    start = pd.Timestamp(planted.meta["holdout_start"])
    events = planted.tables["service_events"]
    holdout = events[events["event_time"] >= start]
    used = holdout.groupby([holdout["card_number"].astype(object), "need_id"]).size()

    expected = oracle["probability"].sum()
    spread = np.sqrt((oracle["probability"] * (1 - oracle["probability"])).sum())

    assert abs(len(used) - expected) < 4 * spread
    assert oracle["window_start"].eq(start).all()


def test_holdout_offer_responses_follow_the_oracle(
    planted: GeneratedWarehouse,
) -> None:
    oracle = planted.oracle_offers.astype({"card_number": object})
    start = pd.Timestamp(planted.meta["holdout_start"])
    events = planted.tables["offer_events"].astype({"card_number": object})
    responses = events[(events["event_time"] >= start) & (events["kind"] == "click")]
    pairs = responses[["card_number", "offer_id"]].drop_duplicates()
    hits = oracle.merge(pairs, on=["card_number", "offer_id"])

    expected = oracle["probability"].sum()
    spread = np.sqrt((oracle["probability"] * (1 - oracle["probability"])).sum())

    assert abs(len(hits) - expected) < 4 * spread
    assert len(hits) > 0.8 * len(pairs)  # the top offers carry most responses


def test_oracle_offers_are_valid_top_offers(planted: GeneratedWarehouse) -> None:
    oracle = planted.oracle_offers
    offers = planted.tables["offers"].set_index("offer_id")
    start = pd.Timestamp(planted.meta["holdout_start"])
    end = pd.Timestamp(planted.meta["holdout_end"])

    assert oracle.groupby("card_number").size().max() <= TOP_OFFERS
    assert oracle["probability"].between(0, 1, inclusive="right").all()
    valid_from = offers["valid_from"].reindex(oracle["offer_id"]).to_numpy()
    valid_to = offers["valid_to"].reindex(oracle["offer_id"]).to_numpy()
    assert ((valid_from < end) & (valid_to > start)).all()


def test_offer_taste_follows_the_offers_need(planted: GeneratedWarehouse) -> None:
    oracle = _with_age(planted, planted.oracle_offers)
    need = planted.tables["offers"].set_index("offer_id")["need_id"]
    oracle["need_id"] = need.reindex(oracle["offer_id"]).to_numpy()
    study = oracle[oracle["need_id"] == "study_in_taiwan"]

    young = study.loc[study["band"] == 0, "probability"].mean()
    older = study.loc[study["band"] >= 4, "probability"].mean()

    assert young > 1.5 * older


def test_pushes_go_only_to_cards_with_marketing_consent(
    planted: GeneratedWarehouse,
) -> None:
    consents = planted.tables["consents"]
    marketing = consents[consents["purpose"] == "marketing_push"].sort_values(
        "recorded_at"
    )
    sent = planted.tables["push_events"]
    sent = sent[sent["kind"] == "sent"].astype({"card_number": object})
    sent = sent.sort_values("event_time")

    state = pd.merge_asof(
        sent,
        marketing.astype({"card_number": object}),
        left_on="event_time",
        right_on="recorded_at",
        by="card_number",
    )

    assert state["granted"].fillna(False).astype(bool).all()


def test_offers_count_scales_gently_with_size(planted: GeneratedWarehouse) -> None:
    small = generate(cards=100, seed=1).tables["offers"]

    assert 60 <= len(small) < len(planted.tables["offers"]) <= 400


def test_more_impressions_add_impressions_only() -> None:
    """The event-volume knob adds impressions; click counts and services stay."""
    usual = generate(cards=500, seed=3)
    busier = generate(cards=500, seed=3, impressions_per_period=2.5)

    def kinds(generated: GeneratedWarehouse) -> pd.Series:
        return generated.tables["offer_events"]["kind"].value_counts()

    assert kinds(busier)["impression"] > 3 * kinds(usual)["impression"]
    assert kinds(busier)["click"] == kinds(usual)["click"]
    pd.testing.assert_frame_equal(
        busier.tables["service_events"], usual.tables["service_events"]
    )
    assert busier.meta["impressions_per_period"] == 2.5


@pytest.mark.parametrize("rate", [-0.1, 101.0])
def test_impressions_outside_their_range_are_refused(rate: float) -> None:
    with pytest.raises(InputError, match="impressions_per_period"):
        generate(cards=50, impressions_per_period=rate)

"""Training labels never see what happened after the cut-off."""

from __future__ import annotations

import shutil

import pandas as pd
import pytest

from features.schema import CARD_KEY, CARD_NUMBER
from features.warehouse import Warehouse
from training.datasets import LabelSource, sample_cards, sample_keys, time_split

SECRET = b"unit-test-secret-0123456789"
WEIGHTS = {"impression": 0.1, "click": 1.0, "redemption": 3.0}


def _training_frames(warehouse: Warehouse) -> dict[str, pd.DataFrame]:
    split = time_split(warehouse.as_of() - pd.Timedelta(days=30), 30, 3)
    source = LabelSource(warehouse, SECRET)
    t0 = split.cutoff - split.horizon
    return {
        "needs": source.need_labels(split.train_times, split.horizon),
        "offers": source.offer_labels(t0, split.horizon),
        "interactions": source.interactions_before(split.cutoff, WEIGHTS),
    }


@pytest.fixture(scope="module")
def truncated_warehouse(small_warehouse, tmp_path_factory) -> Warehouse:
    """A copy of the small warehouse without any event at or after the cut-off."""
    folder = tmp_path_factory.mktemp("truncated") / "warehouse"
    shutil.copytree(small_warehouse.directory, folder)
    copy = Warehouse(folder)
    cutoff = copy.as_of() - pd.Timedelta(days=30)
    tables = {}
    for name in ("service_events", "offer_events", "push_events"):
        events = copy.read_table(name)
        tables[name] = events[events["event_time"] < cutoff]
    copy.write_tables(tables)
    return copy


def test_events_after_the_cutoff_leave_training_frames_unchanged(
    small_warehouse, truncated_warehouse
):
    full = _training_frames(small_warehouse)
    truncated = _training_frames(truncated_warehouse)
    for name, frame in full.items():
        assert len(frame) > 0, name
        pd.testing.assert_frame_equal(frame, truncated[name], obj=name)


def test_holdout_labels_do_change_when_later_events_are_removed(
    small_warehouse, truncated_warehouse
):
    split = time_split(small_warehouse.as_of() - pd.Timedelta(days=30), 30, 3)
    full = LabelSource(small_warehouse, SECRET).offer_labels(
        split.cutoff, split.horizon
    )
    cut = LabelSource(truncated_warehouse, SECRET).offer_labels(
        split.cutoff, split.horizon
    )
    assert len(full) > 0 and len(cut) == 0


def test_frames_carry_pseudonyms_never_card_numbers(small_warehouse):
    numbers = set(small_warehouse.read_table("card_holders")[CARD_NUMBER])
    for name, frame in _training_frames(small_warehouse).items():
        assert CARD_NUMBER not in frame.columns, name
        assert not set(frame[CARD_KEY]) & numbers, name


def test_training_windows_end_by_the_cutoff():
    cutoff = pd.Timestamp("2026-10-02", tz="UTC")
    split = time_split(cutoff, 30, 3)
    assert split.train_times[-1] + split.horizon == cutoff
    assert list(split.train_times) == sorted(split.train_times)
    assert split.holdout_end == cutoff + pd.Timedelta(days=30)


def test_sample_keys_keeps_every_key_up_to_the_limit():
    keys = ["c", "a", "b", "a"]
    assert sample_keys(keys, None, seed=1) == ["a", "b", "c"]
    assert sample_keys(keys, 3, seed=1) == ["a", "b", "c"]


def test_sample_keys_draws_a_sorted_seeded_subset():
    keys = [f"card-{i:04d}" for i in range(1_000)]
    first = sample_keys(keys, 100, seed=42, stream=3)
    assert len(first) == 100 == len(set(first))
    assert first == sorted(first) and set(first) <= set(keys)
    assert sample_keys(list(reversed(keys)), 100, seed=42, stream=3) == first
    assert sample_keys(keys, 100, seed=42, stream=4) != first
    assert sample_keys(keys, 100, seed=43, stream=3) != first


def test_sample_cards_leaves_windows_within_the_limit_as_they_are():
    frame = pd.DataFrame(
        {CARD_KEY: list("dcbaef"), "event_timestamp": [1, 1, 1, 2, 2, 2]}
    )
    assert sample_cards(frame, 3, seed=1) is frame
    sampled = sample_cards(frame, 2, seed=1)
    assert sampled.groupby("event_timestamp").size().tolist() == [2, 2]
    assert sampled.equals(sample_cards(frame, 2, seed=1))


def test_the_oracle_of_some_cards_equals_the_whole_oracle_filtered(small_warehouse):
    source = LabelSource(small_warehouse, SECRET)
    split = time_split(small_warehouse.as_of() - pd.Timedelta(days=30), 30, 3)
    whole_offers = source.oracle_offers(split)
    cards = sorted(set(whole_offers[CARD_KEY]))[::7]

    some_offers = source.oracle_offers(split, cards)
    expected = whole_offers[whole_offers[CARD_KEY].isin(cards)]
    pd.testing.assert_frame_equal(some_offers, expected.reset_index(drop=True))

    whole_needs = source.oracle_needs(split)
    some_needs = source.oracle_needs(split, cards)
    expected = whole_needs[whole_needs[CARD_KEY].isin(cards)]
    pd.testing.assert_frame_equal(some_needs, expected.reset_index(drop=True))
    assert len(source.oracle_offers(split, [])) == len(whole_offers)

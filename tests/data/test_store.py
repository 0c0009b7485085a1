"""The Feast store on the hand-made warehouse: point-in-time joins and online reads."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from features.cards import pseudonym
from features.errors import InputError
from features.feature_tables import build_feature_tables
from features.settings import Settings
from tests.data.handmade import (
    ALICE,
    AS_OF,
    BORIS,
    CHEN,
    CUTOFF,
    EARLIER,
    SECOND,
    SECRET,
    SNAPSHOTS,
    handmade_warehouse,
)

STOCK_PROJECT = "precision_stock"
KEYS = [pseudonym(card, SECRET) for card in (ALICE, BORIS, CHEN)]


@pytest.fixture(scope="module")
def settings(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    """Feature tables, an applied repo and a fast-materialized online store."""
    from features import store

    root = tmp_path_factory.mktemp("store")
    settings = Settings(data_dir=root, pseudonym_secret=SECRET.decode())
    warehouse = handmade_warehouse(settings.warehouse_dir)
    build_feature_tables(warehouse, SECRET, settings.feature_dir, SNAPSHOTS)
    store.apply(settings)
    store.materialize(settings, progress=False, engine="fast")
    return settings


def candidate_rows() -> pd.DataFrame:
    """A ranker's frame: several offers per card at one time, plus edge times."""
    alice, boris, chen = KEYS
    return pd.DataFrame(
        {
            "card_key": [alice, alice, alice, boris, boris, chen, alice, chen],
            "offer_id": ["O1", "O2", "O1", "O2", "O1", "O2", "O2", "O1"],
            "event_timestamp": [
                CUTOFF,
                CUTOFF,
                CUTOFF,
                CUTOFF - SECOND,
                AS_OF,
                CUTOFF,
                EARLIER - SECOND,  # before the first snapshot: no features
                EARLIER,  # before the card was issued: no card features
            ],
            "label": [1, 0, 1, 0, 1, 0, 1, 0],
        },
        index=[10, 11, 12, 13, 14, 15, 16, 17],
    )


def test_both_engines_keep_every_row_in_order_with_extra_columns(settings):
    from features.store import historical_features

    entities = candidate_rows()
    for engine in ("duckdb", "feast"):
        result = historical_features(entities, "offers_v1", settings, engine=engine)
        assert len(result) == len(entities)
        assert list(result.index) == list(entities.index)
        pd.testing.assert_frame_equal(result[entities.columns], entities)


def test_feast_and_duckdb_engines_agree_value_for_value(settings):
    from features.store import historical_features

    for service in ("offers_v1", "needs_v1"):
        entities = candidate_rows()
        if service == "needs_v1":
            entities = entities.drop(columns=["offer_id"])
        fast = historical_features(entities, service, settings, engine="duckdb")
        reference = historical_features(entities, service, settings, engine="feast")
        pd.testing.assert_frame_equal(fast, reference)


def test_label_at_t_sees_events_before_t_and_none_after(settings):
    from features.store import historical_features

    alice = pseudonym(ALICE, SECRET)
    entities = pd.DataFrame(
        {"card_key": [alice, alice], "event_timestamp": [CUTOFF - SECOND, CUTOFF]}
    )
    for engine in ("duckdb", "feast"):
        result = historical_features(entities, "needs_v1", settings, engine=engine)
        # One second before the cutoff, the latest snapshot is a month older.
        assert result["svc_study_in_taiwan_30d"].tolist() == [0, 1]
        assert result["offer_redemptions_90d"].tolist() == [0, 1]
        assert result["push_opened_90d"].tolist() == [0, 1]
        assert result["marketing_consent"].tolist() == [0, 1]


def test_rows_before_any_feature_row_get_nulls_in_both_engines(settings):
    from features.store import historical_features

    result = historical_features(candidate_rows(), "offers_v1", settings)
    assert result.loc[16, ["age", "offer_clicks_30d"]].isna().all()
    assert result.loc[17, "age"] is pd.NA
    assert result.loc[17, "quota_left"] == 10


@pytest.mark.parametrize("engine", ["duckdb", "feast"])
def test_naive_utc_and_other_zones_for_one_instant_give_the_same_features(
    settings, engine
):
    from features.store import historical_features

    alice = pseudonym(ALICE, SECRET)
    instant = CUTOFF + pd.Timedelta(hours=5)
    spellings = {
        "utc": pd.Series([instant]),
        "naive": pd.Series([instant.tz_localize(None)]),
        "taipei": pd.Series([instant.tz_convert("Asia/Taipei")]),
        "los_angeles": pd.Series([instant.tz_convert("America/Los_Angeles")]),
    }
    results = []
    for stamps in spellings.values():
        entities = pd.DataFrame({"card_key": [alice], "event_timestamp": stamps})
        found = historical_features(entities, "needs_v1", settings, engine=engine)
        results.append(found.drop(columns=["event_timestamp"]))
    for result in results[1:]:
        pd.testing.assert_frame_equal(result, results[0])
    assert results[0].loc[0, "svc_study_in_taiwan_30d"] == 1


def test_online_features_equal_offline_features_at_the_latest_snapshot(settings):
    from features.store import historical_features, online_features

    online = online_features(KEYS, "needs_v1", settings)
    entities = pd.DataFrame({"card_key": KEYS, "event_timestamp": [AS_OF] * 3})
    offline = historical_features(entities, "needs_v1", settings)
    columns = [c for c in offline.columns if c != "event_timestamp"]
    pd.testing.assert_frame_equal(online[columns], offline[columns])


def test_fast_and_stock_materialization_give_identical_online_values(settings):
    from features import store

    store.apply(settings, project=STOCK_PROJECT)
    store.materialize(settings, progress=False, engine="feast", project=STOCK_PROJECT)
    candidates = candidate_rows()[["card_key", "offer_id"]]
    for service, entities in (("offers_v1", candidates), ("needs_v1", KEYS)):
        fast = store.online_features(entities, service, settings)
        stock = store.online_features(
            entities, service, settings, project=STOCK_PROJECT
        )
        pd.testing.assert_frame_equal(fast, stock)
    assert fast["redeemed_offer_ids"].tolist()[0] == ["O1", "O2"]


def test_online_features_equal_feasts_own_online_response(settings):
    """The direct read of the online store gives what get_online_features gives."""
    from features import store

    feast_store = store.open_store(settings)
    candidates = candidate_rows()[["card_key", "offer_id"]]
    cases = (
        ("offers_v1", candidates, candidates.to_dict("list")),
        ("needs_v1", [*KEYS, KEYS[0], "not-a-known-key"], None),
    )
    for service, entities, rows in cases:
        rows = rows or {"card_key": list(entities)}
        response = feast_store.get_online_features(
            features=feast_store.get_feature_service(service), entity_rows=rows
        )
        expected = store._canonical(response.to_df(), store._service_views(service))
        found = store.online_features(entities, service, settings, store=feast_store)
        # Feast orders a view's features differently from call to call.
        assert sorted(found.columns) == sorted(expected.columns)
        pd.testing.assert_frame_equal(found, expected[found.columns])


def test_unknown_card_gets_nulls_online(settings):
    from features.store import online_features

    result = online_features(["not-a-known-key"], "needs_v1", settings)
    assert len(result) == 1
    assert result["age"].isna().all()


def test_missing_join_key_is_refused_with_the_columns_needed(settings):
    from features.store import historical_features, online_features

    entities = candidate_rows().drop(columns=["offer_id"])
    with pytest.raises(InputError, match=r"missing \['offer_id'\]"):
        historical_features(entities, "offers_v1", settings)
    with pytest.raises(InputError, match="offers_v1 reads features keyed by"):
        online_features(KEYS, "offers_v1", settings)
    with pytest.raises(InputError, match="service: expected one of"):
        online_features(KEYS, "needs_v9", settings)


def test_feature_store_yaml_follows_the_data_folder(settings):
    config = (Path(settings.feast_dir) / "feature_store.yaml").read_text("utf-8")
    assert str(settings.feast_dir.resolve()) in config
    assert "type: sqlite" in config


def test_layout_reads_equal_feasts_online_response_for_both_loaders(settings):
    """Direct reads of the SQLite layout give get_online_features' rows exactly.

    Both the bulk loader's table and stock materialization's table are read,
    with an unknown key and a repeated one among the keys.
    """
    from features import store
    from features.online_layout import LayoutReader

    store.apply(settings, project=STOCK_PROJECT)
    store.materialize(settings, progress=False, engine="feast", project=STOCK_PROJECT)
    keys = [*KEYS, "not-a-known-key", KEYS[1]]
    for project in (store.DEFAULT_PROJECT, STOCK_PROJECT):
        feast_store = store.open_store(settings, project)
        expected = feast_store.get_online_features(
            features=feast_store.get_feature_service("needs_v1"),
            entity_rows={"card_key": keys},
        ).to_dict()
        rows = LayoutReader(feast_store, "needs_v1").rows(keys)
        assert sorted(rows[0]) == sorted(expected)
        assert rows == [
            {name: values[i] for name, values in expected.items()}
            for i in range(len(keys))
        ]
        assert rows[0]["redeemed_offer_ids"] == ["O1", "O2"]
        assert all(value is None for n, value in rows[3].items() if n != "card_key")


def test_layout_reader_hands_out_lists_the_caller_may_change(settings):
    """Decoded values are shared between cards, so lists are handed out as copies."""
    from features import store
    from features.online_layout import LayoutReader

    reader = LayoutReader(store.open_store(settings), "needs_v1")
    first = reader.rows([KEYS[0]])[0]["redeemed_offer_ids"]
    first.append("changed")
    assert reader.rows([KEYS[0]])[0]["redeemed_offer_ids"] == ["O1", "O2"]

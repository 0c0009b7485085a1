"""Both models trained on the small warehouse, checked against their baselines."""

from __future__ import annotations

import pandas as pd
import pytest
from mlflow import MlflowClient

from features.schema import CARD_KEY, CARD_NUMBER
from features.warehouse import Warehouse
from training import tracking
from training.cli import format_report

pytestmark = pytest.mark.slow


def test_training_registers_both_models(trained_run, model_workspace):
    client = MlflowClient(model_workspace.tracking_uri)
    for name in tracking.MODEL_NAMES:
        version = client.get_model_version(name, trained_run.versions[name])
        assert version.run_id == trained_run.run_id
    run = client.get_run(trained_run.run_id)
    assert run.data.tags[tracking.TAG_RUN_COMPLETE] == "true"
    assert run.data.tags[tracking.TAG_FINGERPRINT] == trained_run.fingerprint
    assert run.data.tags["feature_service.needs"] == "needs_v1"
    assert run.data.params["k"] == "10"


def test_needs_model_beats_the_category_prior_and_keeps_up_with_logistic(
    trained_run,
):
    metrics = trained_run.metrics
    model = metrics["needs.macro.roc_auc"]
    assert model > metrics["needs.baseline_prior.macro.roc_auc"]
    assert model > metrics["needs.baseline_logistic.macro.roc_auc"] - 0.02
    assert model < metrics["needs.oracle.macro.roc_auc"]


def test_offer_model_beats_most_popular_on_ndcg_and_stays_below_the_oracle(
    trained_run,
):
    # Known shortcoming: 400 cards are too few to beat ALS alone reliably here;
    # the margin over ALS alone is measured on the demo warehouse instead.
    metrics = trained_run.metrics
    model = metrics["offers.ndcg_at_10"]
    assert model > metrics["offers.most_popular.ndcg_at_10"]
    assert model < metrics["offers.oracle.ndcg_at_10"]


def test_report_shows_the_gap_to_the_oracle(trained_run):
    report = format_report(trained_run.metrics, 10)
    assert "oracle" in report and "gap" in report
    assert "offers NDCG@10" in report


def test_plots_and_metric_tables_are_logged(trained_run, model_workspace):
    client = MlflowClient(model_workspace.tracking_uri)
    names = {a.path for a in client.list_artifacts(trained_run.run_id, "evaluation")}
    assert "evaluation/needs_calibration.png" in names
    assert "evaluation/offers_vs_baselines.png" in names
    assert "evaluation/needs_metrics.csv" in names


def test_no_card_number_reaches_the_run(trained_run, model_workspace, small_warehouse):
    numbers = set(small_warehouse.read_table("card_holders")[CARD_NUMBER])
    client = MlflowClient(model_workspace.tracking_uri)
    run = client.get_run(trained_run.run_id)
    logged = " ".join([*run.data.params.values(), *run.data.tags.values()])
    path = client.download_artifacts(trained_run.run_id, "evaluation/needs_metrics.csv")
    with open(path, encoding="utf-8") as handle:
        logged += handle.read()
    assert not any(number in logged for number in numbers)


def test_a_card_without_interactions_gets_only_cold_start_offers(trained_run):
    model = trained_run.offer_model
    card = "no-such-card-key"
    assert card not in model.known_cards_
    cards = pd.DataFrame({"card_key": [card], "post_id": ["P01"], "age": [33]})
    out = model.recommend([card], cards, pd.DataFrame(), model.offer_facts_, 20)
    assert len(out) > 0
    assert "collaborative" not in set(out["source"])
    assert out["reason"].str.len().gt(0).all()


def test_same_seed_gives_the_same_metrics(trained_run, repeated_evaluation):
    assert repeated_evaluation.metrics == pytest.approx(trained_run.metrics)


def test_registered_offer_model_knows_the_cards_active_after_the_cutoff(
    trained_run, model_workspace
):
    from training.config import TrainingConfig
    from training.datasets import LabelSource

    source = LabelSource(
        Warehouse(model_workspace.settings.warehouse_dir),
        model_workspace.settings.secret_bytes,
    )
    weights = TrainingConfig().offers.event_weights
    before = set(
        source.interactions_before(trained_run.split.cutoff, weights)[CARD_KEY]
    )
    recent = set(
        source.interactions_before(source.warehouse.as_of(), weights)[CARD_KEY]
    )
    assert recent - before, (
        "the small warehouse has no card first active after the cutoff"
    )
    assert recent <= trained_run.offer_model.known_cards_


def test_the_default_run_samples_nothing_and_logs_the_sizes(
    trained_run, model_workspace
):
    params = (
        MlflowClient(model_workspace.tracking_uri)
        .get_run(trained_run.run_id)
        .data.params
    )
    used = {k: v for k, v in params.items() if k.startswith("sampled.")}
    assert "sampled.offers_evaluation_cards.used" in used
    assert "sampled.ranker_cards.window_0.used" in used
    for name, value in used.items():
        if name.endswith(".used"):
            assert value == params[name.removesuffix(".used") + ".available"]
    assert params["sampling.ranker_cards"] == "10000"


def test_a_sampled_run_draws_the_same_seeded_samples_and_scores_on_them(
    model_workspace, make_config
):
    from training.pipeline import fit_and_evaluate

    config = make_config(
        max_training_cards=200,
        sampling={
            "ranker_cards": 25,
            "holdout_cards": 300,
            "evaluation_cards": 20,
            "baseline_rows": 300,
        },
    )
    first = fit_and_evaluate(model_workspace.settings, config)
    again = fit_and_evaluate(model_workspace.settings, config)

    assert first.sampled["sampled.needs_training_rows.used"] <= 3 * 200
    assert len(first.frames.needs_holdout) == 300
    assert first.sampled["sampled.holdout_cards.used"] == 300
    assert first.sampled["sampled.offers_evaluation_cards.used"] == 20
    assert first.metrics["offers.users"] == 20
    assert first.sampled["sampled.baseline_logistic_rows.used"] == 300
    windows = [k for k in first.sampled if k.startswith("sampled.ranker_cards.")]
    assert windows
    for name in windows:
        if name.endswith(".used"):
            available = first.sampled[name.removesuffix(".used") + ".available"]
            assert first.sampled[name] == min(25, available)
    assert again.metrics == pytest.approx(first.metrics)


@pytest.fixture(scope="module")
def ranker_window(model_workspace, make_config):
    """The latest re-ranker window of the small warehouse, with full card features."""
    import numpy as np

    from features.schema import OFFER_ID
    from training.datasets import NEEDS, LabelSource, offers_service_frames
    from training.pipeline import _ranker_window, split_for

    settings = model_workspace.settings
    config = make_config()
    source = LabelSource(Warehouse(settings.warehouse_dir), settings.secret_bytes)
    split = split_for(source.warehouse, config)
    catalogue = sorted(source.warehouse.read_table("offers", [OFFER_ID])[OFFER_ID])
    start = split.cutoff - split.horizon
    cards = sorted(source.cards_at([start])[CARD_KEY])
    rng = np.random.default_rng(3)
    propensities = pd.DataFrame(
        rng.uniform(0.0, 0.3, (len(cards), len(NEEDS))), columns=list(NEEDS)
    ).assign(**{CARD_KEY: cards})
    window = _ranker_window(
        source,
        settings,
        config,
        catalogue,
        (0, start, propensities),
        split.horizon,
        {},
    )
    full_cards, _ = offers_service_frames(settings, cards, catalogue, start)
    return window, full_cards


def test_window_rows_built_in_blocks_equal_the_rows_built_at_once(
    trained_run, ranker_window, monkeypatch
):
    from features.schema import OFFER_ID
    from training import offers
    from training.offers import _clone_stage, offer_needs

    window, full_cards = ranker_window
    model = trained_run.offer_model
    catalogue = sorted(window.offer_facts[OFFER_ID].astype(str).unique())

    # The straightforward path: every engaged card at once, every card column.
    stage = _clone_stage(model.candidate).fit(
        window.interactions, full_cards, catalogue, offer_needs(window.offer_facts)
    )
    engaged = set(window.labels[CARD_KEY])
    cards = [card for card in full_cards[CARD_KEY] if card in engaged]
    expected = model._candidate_rows(
        stage,
        cards,
        full_cards,
        window.propensities,
        window.offer_facts,
        model.n_candidates,
    )
    expected = expected.merge(window.labels, on=[CARD_KEY, OFFER_ID], how="left")
    expected["relevance"] = expected["relevance"].fillna(0).astype(int)
    positive = expected.groupby(CARD_KEY)["relevance"].transform("max") > 0
    expected = expected[positive.to_numpy()]

    monkeypatch.setattr(offers, "WINDOW_BLOCK_CARDS", 7)
    got = model._window_rows(window, catalogue, 0)

    columns = [CARD_KEY, OFFER_ID, "relevance", *model.feature_names_]
    order = [CARD_KEY, OFFER_ID]
    assert len(cards) > 7
    pd.testing.assert_frame_equal(
        got[columns].sort_values(order).reset_index(drop=True),
        expected[columns].sort_values(order).reset_index(drop=True),
    )
    assert set(got["_query"]) == {f"0:{card}" for card in got[CARD_KEY]}


def test_recommendations_in_blocks_equal_one_call(trained_run, monkeypatch):
    from training import pipeline

    model = trained_run.offer_model
    cards = sorted(model.known_cards_)[:23]
    card_features = pd.DataFrame(
        {CARD_KEY: cards, "post_id": "P01", "age": 40, "region": "asia"}
    )
    propensities = pd.DataFrame({CARD_KEY: cards, "study_in_taiwan": 0.2})
    expected = model.recommend(
        cards, card_features, propensities, model.offer_facts_, 30
    )
    monkeypatch.setattr(pipeline, "CANDIDATE_BLOCK_CARDS", 5)
    got = pipeline._recommend_in_blocks(
        model, cards, card_features, propensities, model.offer_facts_, 30
    )
    pd.testing.assert_frame_equal(got, expected)


def test_card_and_offer_frames_from_one_join_equal_two_joins(model_workspace):
    from features.schema import EVENT_TIMESTAMP, OFFER_ID
    from training.config import OFFERS_SERVICE
    from training.datasets import (
        LabelSource,
        offers_service_frames,
        point_in_time_features,
    )

    settings = model_workspace.settings
    source = LabelSource(Warehouse(settings.warehouse_dir), settings.secret_bytes)
    at = source.warehouse.as_of() - pd.Timedelta(days=45)
    cards = sorted(source.cards_at([at])[CARD_KEY])
    offers = sorted(source.warehouse.read_table("offers", [OFFER_ID])[OFFER_ID])
    card_frame, offer_frame = offers_service_frames(settings, cards, offers, at)

    # The straightforward path: one join for the cards, another for the offers.
    card_rows = pd.DataFrame(
        {CARD_KEY: cards, OFFER_ID: offers[0], EVENT_TIMESTAMP: at}
    )
    offer_rows = pd.DataFrame(
        {CARD_KEY: cards[0], OFFER_ID: offers, EVENT_TIMESTAMP: at}
    )
    cards_alone = point_in_time_features(card_rows, OFFERS_SERVICE, settings)
    offers_alone = point_in_time_features(offer_rows, OFFERS_SERVICE, settings)
    pd.testing.assert_frame_equal(card_frame, cards_alone[card_frame.columns])
    pd.testing.assert_frame_equal(offer_frame, offers_alone[offer_frame.columns])


def test_features_read_at_snapshot_times_equal_the_point_in_time_join(
    trained_run, model_workspace
):
    from features.schema import EVENT_TIMESTAMP, OFFER_ID
    from features.store import features_at_snapshots, historical_features
    from training.config import NEEDS_SERVICE, OFFERS_SERVICE
    from training.datasets import LabelSource

    settings = model_workspace.settings
    split = trained_run.split
    source = LabelSource(Warehouse(settings.warehouse_dir), settings.secret_bytes)
    offers = sorted(source.warehouse.read_table("offers", [OFFER_ID])[OFFER_ID])
    labels = source.need_labels([*split.train_times, split.cutoff], split.horizon)
    pairs = labels[[CARD_KEY, EVENT_TIMESTAMP]].assign(
        **{OFFER_ID: [offers[i % len(offers)] for i in range(len(labels))]}
    )
    for service, entities in ((NEEDS_SERVICE, labels), (OFFERS_SERVICE, pairs)):
        fast = features_at_snapshots(entities, service, settings)
        assert fast is not None, service
        # The straightforward path: the store's point-in-time (ASOF) join.
        slow = historical_features(entities, service, settings, engine="duckdb")
        pd.testing.assert_frame_equal(fast, slow, obj=service)

    between = labels.assign(
        **{EVENT_TIMESTAMP: labels[EVENT_TIMESTAMP] + pd.Timedelta(hours=1)}
    )
    assert features_at_snapshots(between, NEEDS_SERVICE, settings) is None

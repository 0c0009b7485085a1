"""The batch top-k path gives the per-card path's offers, ranks and scores."""

from __future__ import annotations

import shutil

import pandas as pd
import pytest

from features.errors import InputError
from features.feature_tables import build_feature_tables
from features.schema import CARD_KEY, OFFER_ID
from features.settings import Settings
from features.warehouse import Warehouse
from training import batch
from training.batch import OUTPUT_COLUMNS, batch_top_offers
from training.config import TrainingConfig
from training.evaluation import rule_inputs
from training.rules import apply_rules, apply_rules_per_card
from training.scoring import PROPENSITY_COLUMNS, score_needs

pytestmark = pytest.mark.slow

K = 5
N_CANDIDATES = 30


@pytest.fixture(scope="module")
def scored_inputs(small_warehouse: Warehouse, tmp_path_factory):
    """A small fitted model and the card, propensity and offer frames at as_of."""
    from training.datasets import LabelSource, offers_service_frames
    from training.pipeline import fit_and_evaluate

    data_dir = tmp_path_factory.mktemp("batch-data")
    shutil.copytree(small_warehouse.directory, data_dir / "warehouse")
    settings = Settings(data_dir=data_dir, pseudonym_secret="batch-tests-secret-01")
    warehouse = Warehouse(settings.warehouse_dir)
    build_feature_tables(warehouse, settings.secret_bytes, settings.feature_dir)
    config = TrainingConfig.model_validate(
        {
            "seed": 3,
            "needs": {"n_estimators": 20, "num_leaves": 7},
            "offers": {"ranker_n_estimators": 20, "ranker_num_leaves": 7},
        }
    )
    fitted = fit_and_evaluate(settings, config)

    at = warehouse.as_of()
    segments = LabelSource(warehouse, settings.secret_bytes).card_segments(at)
    propensities = score_needs(fitted.needs_model, segments, at, settings)
    cards = propensities[CARD_KEY].astype(str).tolist()
    catalogue = sorted(warehouse.read_table("offers", [OFFER_ID])[OFFER_ID])
    card_features, offer_facts = offers_service_frames(settings, cards, catalogue, at)
    return (
        fitted.offer_model,
        card_features,
        propensities[[CARD_KEY, *PROPENSITY_COLUMNS]],
        offer_facts,
        at,
    )


def _per_card(model, card_features, propensities, offer_facts, at) -> pd.DataFrame:
    """The straightforward path: recommend and apply the rules one card at a time."""
    cards, offers = rule_inputs(card_features, offer_facts)
    frames = []
    for card in card_features[CARD_KEY].astype(str):
        own = card_features[card_features[CARD_KEY] == card]
        recommended = model.recommend(
            [card], own, propensities, offer_facts, N_CANDIDATES
        )
        frames.append(apply_rules_per_card(recommended, cards, offers, at, K))
    frame = pd.concat(frames, ignore_index=True)
    return frame[OUTPUT_COLUMNS].astype({"rank": "int64"})


def test_batch_top_offers_equal_the_per_card_path(scored_inputs):
    model, card_features, propensities, offer_facts, at = scored_inputs
    sample = card_features.head(120)

    fast = batch_top_offers(
        model, sample, propensities, offer_facts, at, K, N_CANDIDATES, chunk_cards=37
    )
    expected = _per_card(model, sample, propensities, offer_facts, at)

    assert len(expected) > 0
    pd.testing.assert_frame_equal(fast, expected)


def test_specialised_trees_on_two_workers_equal_the_per_card_path(
    scored_inputs, monkeypatch
):
    model, card_features, propensities, offer_facts, at = scored_inputs
    sample = card_features.head(120)
    specialised_calls = []
    score_by_offer = batch.predict_by_offer

    def counted(*args, **kwargs):
        specialised_calls.append(1)
        return score_by_offer(*args, **kwargs)

    monkeypatch.setattr(batch, "predict_by_offer", counted)

    fast = batch_top_offers(
        model,
        sample,
        propensities,
        offer_facts,
        at,
        K,
        N_CANDIDATES,
        chunk_cards=29,
        workers=2,
        specialise=True,
    )
    expected = _per_card(model, sample, propensities, offer_facts, at)

    assert specialised_calls, "the specialised trees scored no chunk"
    assert len(expected) > 0
    pd.testing.assert_frame_equal(fast, expected)


@pytest.mark.parametrize(
    ("workers", "specialise"),
    [(1, False), (2, True)],
    ids=["one-worker-full-booster", "two-workers-specialised"],
)
def test_batch_top_offers_equal_the_whole_frame_path(
    scored_inputs, workers, specialise
):
    model, card_features, propensities, offer_facts, at = scored_inputs

    fast = batch_top_offers(
        model,
        card_features,
        propensities,
        offer_facts,
        at,
        K,
        N_CANDIDATES,
        chunk_cards=100,
        workers=workers,
        specialise=specialise,
    )
    recommended = model.recommend(
        card_features[CARD_KEY].astype(str).tolist(),
        card_features,
        propensities,
        offer_facts,
        N_CANDIDATES,
    )
    cards, offers = rule_inputs(card_features, offer_facts)
    expected = apply_rules(recommended, cards, offers, at, K)[OUTPUT_COLUMNS]

    pd.testing.assert_frame_equal(fast, expected.astype({"rank": "int64"}))


def test_batch_top_offers_leave_out_cards_without_consent(scored_inputs):
    model, card_features, propensities, offer_facts, at = scored_inputs
    refused = card_features.assign(marketing_consent=0)

    fast = batch_top_offers(
        model, refused, propensities, offer_facts, at, K, N_CANDIDATES
    )

    assert fast.empty
    assert list(fast.columns) == OUTPUT_COLUMNS


def test_batch_top_offers_refuse_zero_workers(scored_inputs):
    model, card_features, propensities, offer_facts, at = scored_inputs

    with pytest.raises(InputError, match="workers"):
        batch_top_offers(
            model, card_features, propensities, offer_facts, at, K, 5, workers=0
        )

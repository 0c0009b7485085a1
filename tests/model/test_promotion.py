"""The champion alias moves only to versions that are not worse on the same holdout."""

from __future__ import annotations

import pytest
from mlflow import MlflowClient

from training import pipeline, tracking

pytestmark = pytest.mark.slow


def _champion(workspace, name):
    return tracking.champion_version(name, workspace.settings)


def test_first_promotion_makes_the_champion(trained_run, model_workspace):
    for name in tracking.MODEL_NAMES:
        decision = tracking.promote(
            name, model_workspace.settings, version=trained_run.versions[name]
        )
        assert decision.promoted
        assert _champion(model_workspace, name) == trained_run.versions[name]
    fitted, version = tracking.load_champion(
        tracking.OFFER_MODEL, model_workspace.settings
    )
    assert version == trained_run.versions[tracking.OFFER_MODEL]
    assert fitted.known_cards_ == trained_run.offer_model.known_cards_


def test_a_worse_candidate_is_refused_and_the_reason_recorded(
    trained_run, weak_run, model_workspace
):
    before = _champion(model_workspace, tracking.NEEDS_MODEL)

    decision = tracking.promote(
        tracking.NEEDS_MODEL, model_workspace.settings, tolerance=0.0
    )

    assert decision.version == weak_run.versions[tracking.NEEDS_MODEL]
    assert not decision.promoted
    assert _champion(model_workspace, tracking.NEEDS_MODEL) == before
    client = MlflowClient(model_workspace.tracking_uri)
    tags = client.get_model_version(tracking.NEEDS_MODEL, decision.version).tags
    assert tags[tracking.TAG_DECISION] == "refused"
    assert "champion" in tags[tracking.TAG_REASON]


def test_a_worse_candidate_within_the_tolerance_is_promoted(
    trained_run, weak_run, model_workspace
):
    decision = tracking.promote(
        tracking.OFFER_MODEL, model_workspace.settings, tolerance=1.0
    )

    assert decision.version == weak_run.versions[tracking.OFFER_MODEL]
    assert decision.promoted, decision.reason
    assert _champion(model_workspace, tracking.OFFER_MODEL) == decision.version


def test_an_interrupted_run_moves_no_alias(
    weak_run, model_workspace, monkeypatch, make_weak_config
):
    for name in tracking.MODEL_NAMES:
        tracking.promote(name, model_workspace.settings)
    before = {n: _champion(model_workspace, n) for n in tracking.MODEL_NAMES}

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt("stopped while reading the training set")

    monkeypatch.setattr(pipeline, "_needs_frames", interrupted)
    with pytest.raises(KeyboardInterrupt):
        pipeline.train(model_workspace.settings, make_weak_config())
    for name in tracking.MODEL_NAMES:
        tracking.promote(name, model_workspace.settings)

    after = {n: _champion(model_workspace, n) for n in tracking.MODEL_NAMES}
    assert after == before

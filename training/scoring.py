"""Batch scores of every card holder with the champion models.

Writes two files under ``Settings.scores_dir`` that segment previews read:

* ``propensities.parquet``: ``card_key, post_id, country, language, age_band,
  generation, card_status, consent_marketing`` and one ``p_<need_id>`` column per
  need category;
* ``top_offers.parquet``: ``card_key, offer_id, rank, score``, the offers that pass
  the business rules, best first.

Both are written aside and renamed, so a reader never sees a half-written file.
"""

from __future__ import annotations

import logging
import os
import uuid
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from features.schema import CARD_KEY, EVENT_TIMESTAMP, NEED_CATEGORIES, OFFER_ID
from features.settings import Settings
from features.warehouse import Warehouse
from training import tracking
from training.batch import batch_top_offers
from training.config import NEEDS_SERVICE, TrainingConfig
from training.datasets import LabelSource, offers_service_frames, point_in_time_features
from training.offers import PROPENSITY_PREFIX, age_band

logger = logging.getLogger(__name__)

PROPENSITIES_FILE = "propensities.parquet"
TOP_OFFERS_FILE = "top_offers.parquet"
SEGMENT_COLUMNS = [
    CARD_KEY,
    "post_id",
    "country",
    "language",
    "age_band",
    "generation",
    "card_status",
    "consent_marketing",
]
PROPENSITY_COLUMNS = [f"{PROPENSITY_PREFIX}{need}" for need in NEED_CATEGORIES]
TOP_OFFER_COLUMNS = [CARD_KEY, OFFER_ID, "rank", "score"]


@dataclass(frozen=True)
class ScoreFiles:
    """The written score files and the model versions behind them."""

    propensities: Path
    top_offers: Path
    cards: int
    needs_version: str
    offers_version: str


def score_all(settings: Settings, config: TrainingConfig | None = None) -> ScoreFiles:
    """Score every card holder with the champions and write the score files.

    Args:
        settings: where the warehouse, features, registry and scores are.
        config: ``k`` and ``offers.n_candidates`` come from it.

    Returns:
        The files written and the model versions used.

    Raises:
        NotReadyError: when no champion exists yet.
    """
    config = config or TrainingConfig()
    needs_model, needs_version = tracking.load_champion(tracking.NEEDS_MODEL, settings)
    offer_model, offers_version = tracking.load_champion(tracking.OFFER_MODEL, settings)
    warehouse = Warehouse(settings.warehouse_dir)
    source = LabelSource(warehouse, settings.secret_bytes)
    at = warehouse.as_of()

    segments = source.card_segments(at)
    propensities = score_needs(needs_model, segments, at, settings)
    top = score_offers(offer_model, propensities, at, settings, config)

    out = settings.scores_dir
    paths = (
        write_atomically(propensities, out / PROPENSITIES_FILE),
        write_atomically(top, out / TOP_OFFERS_FILE),
    )
    logger.info(
        "scored %d cards with needs v%s and offers v%s",
        len(propensities),
        needs_version,
        offers_version,
    )
    return ScoreFiles(*paths, len(propensities), needs_version, offers_version)


def score_needs(
    model: object, segments: pd.DataFrame, at: pd.Timestamp, settings: Settings
) -> pd.DataFrame:
    """Segment columns and calibrated propensities of every card at ``at``."""
    entities = pd.DataFrame({CARD_KEY: segments[CARD_KEY], EVENT_TIMESTAMP: at})
    features = point_in_time_features(entities, NEEDS_SERVICE, settings)
    scored = model.predict_proba(features)  # type: ignore[attr-defined]
    frame = segments.assign(age_band=age_band(segments["age"]).to_numpy())
    frame = frame[SEGMENT_COLUMNS].reset_index(drop=True)
    for need in NEED_CATEGORIES:
        frame[f"{PROPENSITY_PREFIX}{need}"] = scored[need].to_numpy(dtype=float)
    frame["generation"] = frame["generation"].astype(int)
    frame["consent_marketing"] = frame["consent_marketing"].astype(bool)
    return frame


def score_offers(
    model: object,
    propensities: pd.DataFrame,
    at: pd.Timestamp,
    settings: Settings,
    config: TrainingConfig,
) -> pd.DataFrame:
    """Top offers of every card after the business rules."""
    cards = propensities[CARD_KEY].astype(str).tolist()
    catalogue = sorted(
        Warehouse(settings.warehouse_dir).read_table("offers", [OFFER_ID])[OFFER_ID]
    )
    card_features, offer_facts = offers_service_frames(settings, cards, catalogue, at)
    kept = batch_top_offers(
        model,  # type: ignore[arg-type]
        card_features,
        propensities[[CARD_KEY, *PROPENSITY_COLUMNS]],
        offer_facts,
        at,
        config.k,
        config.offers.n_candidates,
    )
    kept["rank"] = kept["rank"].astype(int)
    return kept[TOP_OFFER_COLUMNS].reset_index(drop=True)


def write_atomically(frame: pd.DataFrame, path: Path) -> Path:
    """Write a parquet file aside, then rename it into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    aside = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.partial")
    try:
        frame.to_parquet(aside, index=False)
        os.replace(aside, path)
    finally:
        aside.unlink(missing_ok=True)
    return path

"""The Feast feature repository: entities, sources, feature views, feature services.

Objects are built by :func:`feature_repo` for a given feature folder, so the data
folder stays configurable; ``features.store.apply`` registers them through the Python
SDK. The repository reads top-down: project, entities, sources, views, services.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

from feast import Entity, FeatureService, FeatureView, Field, FileSource, ValueType
from feast.types import Array, Float64, Int64, String, UnixTimestamp

from features.feature_tables import (
    OFFER_STATS_WINDOW_DAYS,
    offer_history_columns,
    post_stats_columns,
    service_use_columns,
)
from features.schema import CARD_KEY, EVENT_TIMESTAMP, OFFER_ID, POST_ID

PROJECT = "precision_outreach"

# Views keep no time-to-live: a training row takes the latest snapshot at or before
# its time in both retrieval engines, and the snapshot cadence bounds staleness.
NO_TTL = timedelta(0)

# Card holders, keyed by the pseudonym of their card number.
card_holder = Entity(
    name="card_holder",
    join_keys=[CARD_KEY],
    value_type=ValueType.STRING,
    description="A card holder, keyed by the keyed pseudonym of the card number.",
)

# Partner offers.
offer = Entity(
    name="offer",
    join_keys=[OFFER_ID],
    value_type=ValueType.STRING,
    description="A partner offer for card holders.",
)

# Overseas service posts.
post = Entity(
    name="post",
    join_keys=[POST_ID],
    value_type=ValueType.STRING,
    description="An overseas service post.",
)

CARD_PROFILE_FIELDS = [
    Field(name="age", dtype=Int64),
    Field(name="generation", dtype=Int64),
    Field(name="gender", dtype=String),
    Field(name=POST_ID, dtype=String),
    Field(name="country", dtype=String),
    Field(name="language", dtype=String),
    Field(name="region", dtype=String),
    Field(name="card_status", dtype=String),
    Field(name="is_active", dtype=Int64),
    Field(name="tenure_days", dtype=Int64),
    Field(name="marketing_consent", dtype=Int64),
    Field(name="analytics_consent", dtype=Int64),
]

PUSH_ENGAGEMENT_FIELDS = [
    Field(name="push_sent_90d", dtype=Int64),
    Field(name="push_opened_90d", dtype=Int64),
    Field(name="push_clicked_90d", dtype=Int64),
    Field(name="push_open_rate_90d", dtype=Float64),
    Field(name="push_click_rate_90d", dtype=Float64),
    Field(name="push_blocked", dtype=Int64),
    Field(name="days_since_push_open", dtype=Float64),
]

SERVICE_USE_FIELDS = [
    Field(name=name, dtype=Float64 if name.startswith("days_since") else Int64)
    for name in service_use_columns()
]

OFFER_HISTORY_FIELDS = [
    *(Field(name=name, dtype=Int64) for name in offer_history_columns()),
    Field(name="offer_click_rate_365d", dtype=Float64),
    Field(name="offer_distinct_categories_365d", dtype=Int64),
    Field(name="favourite_category_365d", dtype=String),
    Field(name="redeemed_offer_ids", dtype=Array(String)),
]

_DAYS = OFFER_STATS_WINDOW_DAYS
OFFER_STATS_FIELDS = [
    Field(name=f"offer_clicks_{_DAYS}d", dtype=Int64),
    Field(name=f"offer_redemptions_{_DAYS}d", dtype=Int64),
    Field(name=f"offer_ctr_{_DAYS}d", dtype=Float64),
    Field(name="has_quota", dtype=Int64),
    Field(name="quota_left", dtype=Int64),
    Field(name="valid_from", dtype=UnixTimestamp),
    Field(name="valid_to", dtype=UnixTimestamp),
    Field(name="offer_region", dtype=String),
    Field(name="min_age", dtype=Int64),
    Field(name="max_age", dtype=Int64),
    Field(name="requires_active_card", dtype=Int64),
    Field(name="offer_need_id", dtype=String),
    Field(name="offer_category", dtype=String),
    Field(name="discount_pct", dtype=Float64),
]

POST_STATS_FIELDS = [
    Field(name=name, dtype=Float64 if "_per_card_" in name else Int64)
    for name in post_stats_columns()
]

VIEW_FIELDS: dict[str, list[Field]] = {
    "card_profile": CARD_PROFILE_FIELDS,
    "push_engagement": PUSH_ENGAGEMENT_FIELDS,
    "service_use": SERVICE_USE_FIELDS,
    "offer_history": OFFER_HISTORY_FIELDS,
    "offer_stats": OFFER_STATS_FIELDS,
    "post_stats": POST_STATS_FIELDS,
}
VIEW_ENTITIES: dict[str, Entity] = {
    "card_profile": card_holder,
    "push_engagement": card_holder,
    "service_use": card_holder,
    "offer_history": card_holder,
    "offer_stats": offer,
    "post_stats": post,
}
VIEW_DESCRIPTIONS: dict[str, str] = {
    "card_profile": "Demographics, card status, tenure and consent at the snapshot.",
    "push_engagement": "Pushes sent, opened and clicked in 90 days; blocked flag.",
    "service_use": "Service use per need category over 30, 90 and 365 days.",
    "offer_history": "A card's offer impressions, clicks and redemptions.",
    "offer_stats": "Recent clicks and redemptions of an offer, quota and rules.",
    "post_stats": "Card counts of a post and its service use per card by need.",
}

# Views read by each model; the version suffix changes when the list changes.
SERVICE_VIEWS: dict[str, tuple[str, ...]] = {
    "needs_v1": ("card_profile", "push_engagement", "service_use", "offer_history"),
    "offers_v1": ("card_profile", "push_engagement", "offer_history", "offer_stats"),
    "posts_v1": ("post_stats",),
}


def feature_source(view: str, feature_dir: Path) -> FileSource:
    """The parquet file of ``view`` as a Feast file source."""
    return FileSource(
        name=f"{view}_source",
        path=str((feature_dir / f"{view}.parquet").resolve()),
        timestamp_field=EVENT_TIMESTAMP,
        description=f"Feature table {view}.parquet built from the warehouse.",
    )


def feature_view(view: str, feature_dir: Path) -> FeatureView:
    """The feature view ``<view>_fv`` over its parquet table."""
    return FeatureView(
        name=f"{view}_fv",
        entities=[VIEW_ENTITIES[view]],
        ttl=NO_TTL,
        schema=VIEW_FIELDS[view],
        source=feature_source(view, feature_dir),
        online=True,
        description=VIEW_DESCRIPTIONS[view],
    )


def feature_repo(feature_dir: Path) -> dict[str, Any]:
    """Every Feast object of the repository for feature tables in ``feature_dir``.

    Returns:
        ``entities``, ``views`` (by view name) and ``services`` (by service name).
    """
    views = {name: feature_view(name, feature_dir) for name in VIEW_FIELDS}
    services = {
        name: FeatureService(
            name=name,
            features=[views[view] for view in view_names],
            description=f"Features read by the {name.split('_')[0]} model.",
        )
        for name, view_names in SERVICE_VIEWS.items()
    }
    return {
        "entities": [card_holder, offer, post],
        "views": views,
        "services": services,
    }


def feature_names(view: str) -> list[str]:
    """Feature columns of ``view`` in their declared order."""
    return [field.name for field in VIEW_FIELDS[view]]

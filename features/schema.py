"""The warehouse schema: tables, columns, keys, references and value ranges.

Column names here are the single source of truth: feature tables, Feast fields,
training sets and the service use these strings. The validator reads the specs below
to check every load.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

ColumnKind = Literal["string", "int", "float", "bool", "timestamp"]

# Keys that cross module boundaries.
CARD_NUMBER = "card_number"
CARD_KEY = "card_key"  # keyed pseudonym of the card number; never the number itself
OFFER_ID = "offer_id"
POST_ID = "post_id"
NEED_ID = "need_id"
EVENT_TIMESTAMP = "event_timestamp"

NEED_CATEGORIES: dict[str, str] = {
    "study_in_taiwan": "studying in Taiwan",
    "mandarin_learning": "Mandarin learning",
    "youth_programmes": "youth programmes",
    "business_networking": "business networking",
    "investment_finance": "investment and finance",
    "cultural_events": "cultural events",
    "health_insurance": "health insurance on return",
    "emergency_assistance": "emergency assistance",
    "senior_return_visits": "return visits for seniors",
    "news_media": "news and media",
    "jobs_in_taiwan": "jobs in Taiwan",
    "identity_documents": "identity and document services",
}

REGIONS = (
    "east_asia",
    "southeast_asia",
    "north_america",
    "latin_america",
    "europe",
    "oceania",
    "africa",
)
OFFER_REGION_GLOBAL = "global"
CARD_STATUSES = ("active", "expired", "suspended")
GENDERS = ("F", "M", "X")
SERVICE_EVENT_KINDS = ("inquiry", "application", "attendance")
OFFER_EVENT_KINDS = ("impression", "click", "redemption")
PUSH_EVENT_KINDS = ("sent", "opened", "clicked", "blocked")
CONSENT_PURPOSES = ("marketing_push", "analytics")


@dataclass(frozen=True)
class Column:
    """One column of a warehouse table and the rules its values obey."""

    name: str
    kind: ColumnKind
    required: bool = True
    nullable: bool = False
    allowed: tuple[str, ...] | None = None
    min_value: float | None = None
    max_value: float | None = None
    references: str | None = None  # "table.column" this value must exist in
    pattern: str | None = None  # regular expression a string must match fully


@dataclass(frozen=True)
class Table:
    """A warehouse table: its columns and its unique key."""

    name: str
    columns: tuple[Column, ...]
    key: tuple[str, ...]
    identity: bool = False  # holds personal data that never leaves the warehouse
    description: str = ""
    extra: dict[str, str] = field(default_factory=dict)

    @property
    def file_name(self) -> str:
        """The parquet file that stores this table."""
        return f"{self.name}.parquet"

    def column(self, name: str) -> Column:
        """The column called ``name``."""
        return next(c for c in self.columns if c.name == name)


CARD_PATTERN = r"[0-9]{10}"

POSTS = Table(
    name="posts",
    description="Overseas service posts; each serves a region.",
    key=(POST_ID,),
    columns=(
        Column(POST_ID, "string"),
        Column("post_name", "string"),
        Column("region", "string", allowed=REGIONS),
        Column("country", "string", pattern=r"[A-Z]{2}"),
    ),
)

CARD_HOLDERS = Table(
    name="card_holders",
    description="One row per card; the card number keys the whole warehouse.",
    key=(CARD_NUMBER,),
    columns=(
        Column(CARD_NUMBER, "string", pattern=CARD_PATTERN),
        Column(POST_ID, "string", references="posts.post_id"),
        Column("country", "string", pattern=r"[A-Z]{2}"),
        Column("language", "string"),
        Column("birth_year", "int", min_value=1900, max_value=2026),
        Column("gender", "string", allowed=GENDERS),
        Column("generation", "int", min_value=1, max_value=5),
        Column("occupation", "string"),
        Column("card_status", "string", allowed=CARD_STATUSES),
        Column("issued_at", "timestamp"),
        Column("expires_at", "timestamp", required=False, nullable=True),
    ),
)

IDENTITY = Table(
    name="identity",
    description="Personal data; read by nothing outside the warehouse.",
    key=(CARD_NUMBER,),
    identity=True,
    columns=(
        Column(CARD_NUMBER, "string", references="card_holders.card_number"),
        Column("name", "string"),
        Column("email", "string", nullable=True),
        Column("phone", "string", nullable=True),
        Column("line_user_id", "string", nullable=True),
    ),
)

NEEDS = Table(
    name="need_categories",
    description="Kinds of service a card holder may need next.",
    key=(NEED_ID,),
    columns=(
        Column(NEED_ID, "string"),
        Column("label", "string"),
    ),
)

OFFERS = Table(
    name="offers",
    description="Partner discounts with validity, region scope and eligibility.",
    key=(OFFER_ID,),
    columns=(
        Column(OFFER_ID, "string"),
        Column("partner", "string"),
        Column("category", "string"),
        Column("title", "string"),
        Column(NEED_ID, "string", nullable=True, references="need_categories.need_id"),
        Column("region", "string", allowed=(*REGIONS, OFFER_REGION_GLOBAL)),
        Column("valid_from", "timestamp"),
        Column("valid_to", "timestamp"),
        Column("min_age", "int", nullable=True, min_value=0, max_value=120),
        Column("max_age", "int", nullable=True, min_value=0, max_value=120),
        Column("requires_active_card", "bool"),
        Column("quota", "int", nullable=True, min_value=0),
        Column("discount_pct", "float", min_value=0, max_value=100),
    ),
)

CONSENTS = Table(
    name="consents",
    description="Consent per card and purpose over time; the latest record wins.",
    key=(CARD_NUMBER, "purpose", "recorded_at"),
    columns=(
        Column(CARD_NUMBER, "string", references="card_holders.card_number"),
        Column("purpose", "string", allowed=CONSENT_PURPOSES),
        Column("granted", "bool"),
        Column("recorded_at", "timestamp"),
    ),
)

SERVICE_EVENTS = Table(
    name="service_events",
    description="Use of a service: inquiry, application or attendance.",
    key=("event_id",),
    columns=(
        Column("event_id", "string"),
        Column(CARD_NUMBER, "string", references="card_holders.card_number"),
        Column(NEED_ID, "string", references="need_categories.need_id"),
        Column(POST_ID, "string", references="posts.post_id"),
        Column("kind", "string", allowed=SERVICE_EVENT_KINDS),
        Column("event_time", "timestamp"),
    ),
)

OFFER_EVENTS = Table(
    name="offer_events",
    description="Impressions, clicks and redemptions of partner offers.",
    key=("event_id",),
    columns=(
        Column("event_id", "string"),
        Column(CARD_NUMBER, "string", references="card_holders.card_number"),
        Column(OFFER_ID, "string", references="offers.offer_id"),
        Column("kind", "string", allowed=OFFER_EVENT_KINDS),
        Column("event_time", "timestamp"),
    ),
)

PUSH_EVENTS = Table(
    name="push_events",
    description="LINE official-account pushes: sent, opened, clicked, blocked.",
    key=("event_id",),
    columns=(
        Column("event_id", "string"),
        Column(CARD_NUMBER, "string", references="card_holders.card_number"),
        Column("campaign_id", "string"),
        Column("kind", "string", allowed=PUSH_EVENT_KINDS),
        Column("event_time", "timestamp"),
    ),
)

# Order matters: a table only references tables listed before it.
TABLES: tuple[Table, ...] = (
    POSTS,
    CARD_HOLDERS,
    IDENTITY,
    NEEDS,
    OFFERS,
    CONSENTS,
    SERVICE_EVENTS,
    OFFER_EVENTS,
    PUSH_EVENTS,
)
TABLES_BY_NAME: dict[str, Table] = {t.name: t for t in TABLES}

# Oracle files the generator writes beside the warehouse (not warehouse tables):
# oracle_needs: card_number, need_id, window_start, window_end, probability
# oracle_offers: card_number, offer_id, window_start, window_end, probability
ORACLE_NEEDS_FILE = "oracle_needs.parquet"
ORACLE_OFFERS_FILE = "oracle_offers.parquet"

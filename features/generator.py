"""Seeded synthetic warehouse with planted structure and its oracle.

Card holders live across the 37 posts. Their need for each service follows a hazard
that depends on age band, generation, occupation, region, calendar month and habit
(a recent use makes the next more likely). Their taste for partner offers follows
latent factors of card and offer plus an affinity between the offer's need and the
card holder's needs. Push engagement is a per-person propensity.

Time runs in 30-day periods ending at ``as_of``; the last period is the holdout
window. Events of every period, the holdout included, are drawn from the same rates
that give the oracle probabilities, so the oracle is the true ceiling of any model.
All randomness comes from one seed; the work is vectorised over cards (and chunked
for the card x offer stage) so 1,000,000 cards fit in memory.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from features.errors import InputError
from features.schema import (
    CARD_NUMBER,
    NEED_CATEGORIES,
    NEED_ID,
    OFFER_ID,
    ORACLE_NEEDS_FILE,
    ORACLE_OFFERS_FILE,
    POST_ID,
)
from features.times import utc_timestamp
from features.warehouse import Warehouse

logger = logging.getLogger(__name__)

DEFAULT_AS_OF = pd.Timestamp("2026-11-01T00:00:00Z")
PERIOD_DAYS = 30
PERIODS = 25  # about two years of history, the last period is the holdout window
BURN_IN_PERIODS = 3  # habit warms up before the first stored period
TOP_OFFERS = 50
OFFER_CHUNK_CARDS = 50_000
LATENT_DIM = 8
DAY_NS = 86_400 * 10**9
PERIOD_NS = PERIOD_DAYS * DAY_NS

NEED_IDS: tuple[str, ...] = tuple(NEED_CATEGORIES)
AGE_BAND_EDGES = (0, 25, 35, 45, 55, 65, 200)
AGE_BANDS = ("<25", "25-34", "35-44", "45-54", "55-64", "65+")

Progress = Callable[[str], None]

# post_id, city, region, country, local language, relative size
POST_LIST: tuple[tuple[str, str, str, str, str, float], ...] = (
    ("P01", "Tokyo", "east_asia", "JP", "ja", 3.0),
    ("P02", "Osaka", "east_asia", "JP", "ja", 1.5),
    ("P03", "Seoul", "east_asia", "KR", "ko", 1.2),
    ("P04", "Hong Kong", "east_asia", "HK", "yue", 2.0),
    ("P05", "Bangkok", "southeast_asia", "TH", "th", 2.0),
    ("P06", "Kuala Lumpur", "southeast_asia", "MY", "ms", 2.5),
    ("P07", "Singapore", "southeast_asia", "SG", "en", 2.0),
    ("P08", "Jakarta", "southeast_asia", "ID", "id", 2.0),
    ("P09", "Manila", "southeast_asia", "PH", "fil", 1.5),
    ("P10", "Ho Chi Minh City", "southeast_asia", "VN", "vi", 2.5),
    ("P11", "Hanoi", "southeast_asia", "VN", "vi", 1.0),
    ("P12", "Yangon", "southeast_asia", "MM", "my", 0.8),
    ("P13", "New York", "north_america", "US", "en", 3.0),
    ("P14", "Los Angeles", "north_america", "US", "en", 3.5),
    ("P15", "San Francisco", "north_america", "US", "en", 3.0),
    ("P16", "Houston", "north_america", "US", "en", 1.5),
    ("P17", "Chicago", "north_america", "US", "en", 1.0),
    ("P18", "Boston", "north_america", "US", "en", 1.0),
    ("P19", "Seattle", "north_america", "US", "en", 1.2),
    ("P20", "Atlanta", "north_america", "US", "en", 0.8),
    ("P21", "Toronto", "north_america", "CA", "en", 2.0),
    ("P22", "Vancouver", "north_america", "CA", "en", 2.5),
    ("P23", "São Paulo", "latin_america", "BR", "pt", 1.5),
    ("P24", "Buenos Aires", "latin_america", "AR", "es", 0.8),
    ("P25", "Mexico City", "latin_america", "MX", "es", 0.6),
    ("P26", "Asunción", "latin_america", "PY", "es", 0.5),
    ("P27", "Guatemala City", "latin_america", "GT", "es", 0.4),
    ("P28", "London", "europe", "GB", "en", 1.5),
    ("P29", "Paris", "europe", "FR", "fr", 1.2),
    ("P30", "Berlin", "europe", "DE", "de", 1.0),
    ("P31", "Amsterdam", "europe", "NL", "nl", 0.6),
    ("P32", "Madrid", "europe", "ES", "es", 0.5),
    ("P33", "Vienna", "europe", "AT", "de", 0.4),
    ("P34", "Sydney", "oceania", "AU", "en", 2.0),
    ("P35", "Melbourne", "oceania", "AU", "en", 1.5),
    ("P36", "Auckland", "oceania", "NZ", "en", 1.0),
    ("P37", "Johannesburg", "africa", "ZA", "en", 0.6),
)

OCCUPATIONS = (
    "student",
    "professional",
    "engineer",
    "business_owner",
    "academic",
    "service_worker",
    "homemaker",
    "retired",
    "other",
)

# Log-rate effects by age band (AGE_BANDS order); the planted demographic signal.
NEED_AGE_EFFECTS: dict[str, tuple[float, ...]] = {
    "study_in_taiwan": (1.8, 0.6, -0.8, -1.5, -2.0, -2.5),
    "mandarin_learning": (0.8, 0.3, 0.2, 0.0, -0.3, -0.8),
    "youth_programmes": (2.0, 0.5, -1.5, -2.5, -3.0, -3.0),
    "business_networking": (-1.5, 0.3, 0.8, 0.8, 0.3, -0.8),
    "investment_finance": (-1.5, 0.0, 0.5, 0.8, 0.6, 0.0),
    "cultural_events": (0.0, 0.0, 0.2, 0.2, 0.3, 0.4),
    "health_insurance": (-0.8, -0.3, 0.0, 0.3, 0.8, 1.2),
    "emergency_assistance": (0.2, 0.1, 0.0, 0.0, 0.1, 0.3),
    "senior_return_visits": (-3.0, -3.0, -2.5, -1.0, 0.8, 1.8),
    "news_media": (-0.5, 0.0, 0.2, 0.3, 0.5, 0.6),
    "jobs_in_taiwan": (0.6, 1.2, 0.5, -0.3, -1.5, -3.0),
    "identity_documents": (0.3, 0.3, 0.2, 0.2, 0.2, 0.1),
}
NEED_BASE_LOG_RATE: dict[str, float] = {
    "study_in_taiwan": -4.6,
    "mandarin_learning": -4.3,
    "youth_programmes": -4.6,
    "business_networking": -4.2,
    "investment_finance": -4.6,
    "cultural_events": -3.6,
    "health_insurance": -4.4,
    "emergency_assistance": -5.4,
    "senior_return_visits": -5.0,
    "news_media": -3.8,
    "jobs_in_taiwan": -4.6,
    "identity_documents": -4.0,
}
# By generation 1..5: later generations learn Mandarin, need fewer documents.
NEED_GENERATION_EFFECTS: dict[str, tuple[float, ...]] = {
    "mandarin_learning": (-1.5, -0.2, 0.6, 0.9, 1.0),
    "identity_documents": (0.5, 0.2, -0.2, -0.5, -0.8),
    "study_in_taiwan": (-0.5, 0.0, 0.4, 0.5, 0.5),
    "senior_return_visits": (0.5, 0.0, -0.5, -1.0, -1.0),
    "news_media": (0.6, 0.2, -0.3, -0.6, -0.8),
    "youth_programmes": (-0.5, 0.0, 0.5, 0.7, 0.7),
}
NEED_OCCUPATION_EFFECTS: dict[str, dict[str, float]] = {
    "student": {
        "study_in_taiwan": 1.0,
        "mandarin_learning": 0.5,
        "youth_programmes": 0.6,
        "jobs_in_taiwan": 0.3,
    },
    "business_owner": {"business_networking": 1.3, "investment_finance": 0.9},
    "professional": {
        "business_networking": 0.4,
        "investment_finance": 0.4,
        "jobs_in_taiwan": 0.3,
    },
    "engineer": {"jobs_in_taiwan": 0.7},
    "retired": {
        "senior_return_visits": 0.6,
        "health_insurance": 0.5,
        "cultural_events": 0.3,
    },
    "academic": {"study_in_taiwan": 0.3, "cultural_events": 0.4, "news_media": 0.4},
    "homemaker": {"cultural_events": 0.4, "health_insurance": 0.2},
    "service_worker": {"jobs_in_taiwan": 0.4, "emergency_assistance": 0.3},
}
NEED_REGION_EFFECTS: dict[str, dict[str, float]] = {
    "southeast_asia": {
        "business_networking": 0.6,
        "investment_finance": 0.4,
        "emergency_assistance": 0.3,
    },
    "north_america": {"youth_programmes": 0.4, "study_in_taiwan": 0.3},
    "latin_america": {"emergency_assistance": 0.7, "identity_documents": 0.4},
    "europe": {"cultural_events": 0.3, "mandarin_learning": 0.3},
    "oceania": {"youth_programmes": 0.3},
    "east_asia": {"news_media": 0.3, "business_networking": 0.3},
    "africa": {"emergency_assistance": 0.6, "identity_documents": 0.5},
}
# Calendar month (1-12) effects: study peaks before the September and February
# semesters, senior return visits around Lunar New Year, culture at Double Ten.
NEED_MONTH_EFFECTS: dict[str, dict[int, float]] = {
    "study_in_taiwan": {6: 1.0, 7: 1.2, 8: 0.8, 12: 0.7, 1: 0.8},
    "senior_return_visits": {12: 0.4, 1: 1.3, 2: 1.0},
    "cultural_events": {2: 0.5, 9: 0.5, 10: 0.9},
    "youth_programmes": {6: 0.6, 7: 1.0},
    "health_insurance": {12: 0.3, 1: 0.5},
    "jobs_in_taiwan": {3: 0.3, 9: 0.3},
    "identity_documents": {6: 0.3, 12: 0.3},
}
HABIT_STRENGTH = 2.5  # a fresh use multiplies the next period's rate by up to 3.5
NEED_LEVEL_SHIFT = -0.7  # moves every need's rate together
HABIT_DECAY = 0.6
STATUS_EFFECT = {"active": 0.0, "expired": -0.7, "suspended": -1.2}
SERVICE_KIND_SHARES = (0.6, 0.25, 0.15)  # inquiry, application, attendance

# category -> (related need or None, fictional partners)
OFFER_CATEGORIES: dict[str, tuple[str | None, tuple[str, ...]]] = {
    "airline": ("senior_return_visits", ("Formosa Wings", "Pacific Crane Air")),
    "hotel": ("cultural_events", ("Jade Mountain Hotels", "Harbour Lantern Inn")),
    "telecom_sim": ("jobs_in_taiwan", ("Island Link Mobile", "Bluewave SIM")),
    "health_checkup": ("health_insurance", ("Harbor Health Clinic", "Lotus Care")),
    "tour": ("cultural_events", ("Sun Moon Tours", "Alishan Trails")),
    "retail": (None, ("Night Market Mall", "Pineapple Cake Co.")),
    "rail": ("youth_programmes", ("Round-Island Rail Pass", "Coastline Rail")),
    "language_school": ("mandarin_learning", ("Mandarin House", "Bopomofo Academy")),
    "university_fair": ("study_in_taiwan", ("Campus Taiwan Fair", "Study Isle Expo")),
    "bank": ("investment_finance", ("Orchid Bank", "Keelung Savings")),
    "coworking": ("business_networking", ("Xinyi Desk", "Tradewinds Hub")),
    "bookstore": ("news_media", ("Eslite-style Books", "Paper Crane Books")),
    "insurance": ("emergency_assistance", ("Typhoon Shield", "SafeHarbor Cover")),
    "document_service": ("identity_documents", ("Quick Notary", "Passport Helper")),
}
YOUTH_CATEGORIES = ("rail", "university_fair", "language_school")
SENIOR_CATEGORIES = ("airline", "health_checkup", "tour")
NEED_AFFINITY = 0.8
CLICKS_PER_PERIOD = 0.35
REDEMPTION_SHIFT = -1.2
IMPRESSIONS_PER_PERIOD = 0.5

CAMPAIGNS_PER_PERIOD = 2
PUSH_REACH = 0.3

SURNAMES = (
    "Chen", "Lin", "Huang", "Chang", "Lee", "Wang", "Wu", "Liu", "Tsai", "Yang",
    "Hsu", "Cheng", "Hsieh", "Kuo", "Hung", "Tseng", "Chiu", "Liao", "Lai", "Chou",
)  # fmt: skip
GIVEN_NAMES = (
    "Wei-Ting", "Yu-Chen", "Chia-Hao", "Hsin-Yi", "Po-Han", "Shu-Fen", "Chih-Ming",
    "Ya-Ting", "Kuan-Yu", "Mei-Ling", "Jun-Jie", "Pei-Shan", "Tzu-Hsuan", "Ming-Hui",
    "Yi-Hsuan", "Cheng-En", "Li-Hua", "Jia-Wei", "Hui-Chun", "Zhi-Wei",
)  # fmt: skip


@dataclass
class GeneratedWarehouse:
    """Tables of a synthetic warehouse and the true probabilities behind them.

    Attributes:
        tables: frames by warehouse table name (schema.TABLES).
        oracle_needs: card_number, need_id, window_start, window_end, probability
            of at least one use of the need in the holdout window.
        oracle_offers: card_number, offer_id, window_start, window_end, probability
            of a click or redemption in the holdout window, top offers per card.
        meta: source, seed, cards, as_of and the holdout window.
    """

    tables: dict[str, pd.DataFrame]
    oracle_needs: pd.DataFrame
    oracle_offers: pd.DataFrame
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass
class _Timeline:
    """Period boundaries in nanoseconds since the epoch (UTC)."""

    as_of: pd.Timestamp
    starts: np.ndarray  # start of every stored period, the holdout last
    months: np.ndarray  # calendar month of each period's midpoint

    @property
    def start(self) -> int:
        return int(self.starts[0])

    @property
    def end(self) -> int:
        return int(self.starts[-1] + PERIOD_NS)

    @property
    def holdout(self) -> tuple[pd.Timestamp, pd.Timestamp]:
        return (pd.Timestamp(int(self.starts[-1]), tz="UTC"), self.as_of)


def _timeline(as_of: pd.Timestamp, periods: int) -> _Timeline:
    """Periods of 30 days ending at ``as_of``, burn-in periods first."""
    end = as_of.value
    starts = end - PERIOD_NS * np.arange(periods, 0, -1, dtype=np.int64)
    middles = pd.to_datetime(starts + PERIOD_NS // 2, utc=True)
    return _Timeline(as_of, starts, np.asarray(middles.month))


def _strings(values: np.ndarray | list[str] | pa.Array) -> pd.Series:
    """A compact pyarrow-backed string column."""
    array = values if isinstance(values, pa.Array) else pa.array(values, pa.string())
    return pd.Series(pd.arrays.ArrowStringArray(array))


def _take(labels: Sequence[str] | np.ndarray, index: np.ndarray) -> pd.Series:
    """Labels picked by position, as a compact string column."""
    return _strings(pa.array(list(labels), pa.string()).take(pa.array(index)))


def _times(nanoseconds: np.ndarray) -> pd.Series:
    """Nanoseconds since the epoch as a UTC timestamp column."""
    return pd.Series(pd.to_datetime(nanoseconds.astype("int64"), utc=True))


def _ns(times: pd.Series) -> np.ndarray:
    """A UTC timestamp column as nanoseconds since the epoch."""
    return np.asarray(times.array.asi8, dtype=np.int64)


def _sequential_ids(prefix: str, count: int) -> pd.Series:
    """Identifiers ``<prefix><zero-padded number>`` built without Python loops."""
    numbers = pc.cast(pa.array(np.arange(count, dtype=np.int64)), pa.string())
    padded = pc.utf8_lpad(numbers, width=10, padding="0")
    return _strings(pc.binary_join_element_wise(prefix, padded, ""))


def generate(
    cards: int = 20_000,
    seed: int = 7,
    as_of: pd.Timestamp | str = DEFAULT_AS_OF,
    progress: Progress | None = None,
    impressions_per_period: float = IMPRESSIONS_PER_PERIOD,
) -> GeneratedWarehouse:
    """Generate a synthetic warehouse with planted structure and its oracle.

    Args:
        cards: number of card holders.
        seed: seed of every random draw; the same seed gives identical frames.
        as_of: the UTC time the data ends; the holdout window is its last 30 days.
        progress: called with a short message as each stage starts.
        impressions_per_period: mean offer impressions per card and month (before
            the card's activity); the knob for a larger event volume, since
            impressions are drawn at random and carry no taste.

    Returns:
        The tables, the oracle frames and the metadata.
    """
    if not 0 <= impressions_per_period <= 100:
        raise InputError(
            f"impressions_per_period must be between 0 and 100, got "
            f"{impressions_per_period}"
        )
    started = time.perf_counter()
    say = progress or (lambda message: None)
    as_of = utc_timestamp(as_of)
    seeds = np.random.SeedSequence(seed).spawn(8)
    timeline = _timeline(as_of, PERIODS + BURN_IN_PERIODS)

    say("posts and card holders")
    posts = posts_table()
    holders = _card_holders(np.random.default_rng(seeds[0]), cards, posts, timeline)
    identity = _identity(np.random.default_rng(seeds[1]), holders)
    consents = _consents(np.random.default_rng(seeds[2]), holders, timeline)

    say("service needs")
    needs = need_categories_table()
    services, oracle_needs, need_logits = _service_events(
        np.random.default_rng(seeds[3]), holders, timeline
    )

    say("offers and offer events")
    offers = _offers(np.random.default_rng(seeds[4]), cards, timeline)
    offer_events, oracle_offers = _offer_events(
        seeds[5], holders, offers, need_logits, timeline, impressions_per_period
    )

    say("push campaigns")
    push_events = _push_events(
        np.random.default_rng(seeds[6]), holders, consents, timeline
    )

    window_start, window_end = timeline.holdout
    meta = {
        "source": "synthetic",
        "seed": seed,
        "cards": cards,
        "as_of": as_of.isoformat(),
        "start": pd.Timestamp(timeline.starts[BURN_IN_PERIODS], tz="UTC").isoformat(),
        "holdout_start": window_start.isoformat(),
        "holdout_end": window_end.isoformat(),
        "offers": len(offers),
        "impressions_per_period": impressions_per_period,
    }
    tables = {
        "posts": posts,
        "card_holders": holders.drop(columns=["_region", "_age"]),
        "identity": identity,
        "need_categories": needs,
        "offers": offers,
        "consents": consents,
        "service_events": services,
        "offer_events": offer_events,
        "push_events": push_events,
    }
    logger.info(
        "generated %d card holders and %d events in %.1f s",
        cards,
        len(services) + len(offer_events) + len(push_events),
        time.perf_counter() - started,
    )
    return GeneratedWarehouse(tables, oracle_needs, oracle_offers, meta)


def write_generated(generated: GeneratedWarehouse, warehouse: Warehouse) -> None:
    """Store a generated warehouse and its oracle files, replacing what was there.

    Raises:
        WarehouseValidationError: when a table breaks a rule; nothing is written.
    """
    warehouse.write_tables(
        generated.tables,
        generated.meta,
        extra_files={
            ORACLE_NEEDS_FILE: generated.oracle_needs,
            ORACLE_OFFERS_FILE: generated.oracle_offers,
        },
        replace=True,
    )


def posts_table() -> pd.DataFrame:
    """The 37 overseas service posts, shared by the generator and the importers."""
    return pd.DataFrame(
        {
            POST_ID: [p[0] for p in POST_LIST],
            "post_name": [f"Overseas Community Service Post {p[1]}" for p in POST_LIST],
            "region": [p[2] for p in POST_LIST],
            "country": [p[3] for p in POST_LIST],
        }
    )


def need_categories_table() -> pd.DataFrame:
    """The twelve need categories of the schema as a table."""
    return pd.DataFrame(
        {NEED_ID: list(NEED_CATEGORIES), "label": list(NEED_CATEGORIES.values())}
    )


def _card_numbers(rng: np.random.Generator, count: int) -> np.ndarray:
    """Distinct random 10-digit card numbers (some with leading zeros)."""
    drawn = np.unique(rng.integers(0, 10**10, size=int(count * 1.05) + 16))
    while len(drawn) < count:
        extra = rng.integers(0, 10**10, size=count)
        drawn = np.unique(np.concatenate([drawn, extra]))
    return rng.permutation(drawn)[:count]


def _card_holders(
    rng: np.random.Generator, count: int, posts: pd.DataFrame, timeline: _Timeline
) -> pd.DataFrame:
    """Card holders with demographics; ``_region`` and ``_age`` are helper columns."""
    weights = np.array([p[5] for p in POST_LIST])
    post_index = rng.choice(len(POST_LIST), size=count, p=weights / weights.sum())
    age = np.clip(rng.gamma(4.0, 10.0, size=count) + 14, 16, 95).astype(int)
    generation = _generations(rng, age)
    language = _languages(rng, post_index, generation)
    occupation = _occupations(rng, age)
    status = rng.choice(3, size=count, p=[0.86, 0.11, 0.03])

    # Most cards predate the history; some are issued during it, never in the holdout.
    earliest = timeline.start - 8 * 365 * DAY_NS
    latest = timeline.holdout[0].value - DAY_NS
    issued = rng.integers(earliest, latest, size=count)
    expires = issued + rng.integers(4 * 365, 6 * 365, size=count) * DAY_NS
    expired = status == 1
    expires[expired] = rng.integers(
        timeline.start, timeline.end - DAY_NS, expired.sum()
    )
    issued[expired] = np.minimum(issued[expired], expires[expired] - 365 * DAY_NS)

    card_numbers = np.char.zfill(_card_numbers(rng, count).astype(str), 10)
    gender = np.array(["F", "M", "X"])[rng.choice(3, size=count, p=[0.5, 0.48, 0.02])]
    return pd.DataFrame(
        {
            CARD_NUMBER: _strings(card_numbers.tolist()),
            POST_ID: posts[POST_ID].to_numpy()[post_index],
            "country": posts["country"].to_numpy()[post_index],
            "language": language,
            "birth_year": (timeline.as_of.year - age).astype("int64"),
            "gender": gender,
            "generation": generation.astype("int64"),
            "occupation": np.array(OCCUPATIONS)[occupation],
            "card_status": np.array(["active", "expired", "suspended"])[status],
            "issued_at": _times(issued),
            "expires_at": _times(expires),
            "_region": posts["region"].to_numpy()[post_index],
            "_age": age,
        }
    )


def _generations(rng: np.random.Generator, age: np.ndarray) -> np.ndarray:
    """Generation abroad (1 = emigrated); older holders are mostly first generation."""
    older = np.clip((age - 20) / 50, 0, 1)
    first = rng.random(age.size) < 0.25 + 0.6 * older
    later = 2 + np.minimum(rng.poisson(0.8, size=age.size), 3)
    return np.where(first, 1, later)


def _languages(
    rng: np.random.Generator, post_index: np.ndarray, generation: np.ndarray
) -> np.ndarray:
    """Traditional Chinese for early generations, the local language for later ones."""
    local = np.array([p[4] for p in POST_LIST])[post_index]
    speaks_local = rng.random(post_index.size) < 0.1 + 0.2 * (generation - 1)
    return np.where(speaks_local, local, "zh-Hant")


def _occupations(rng: np.random.Generator, age: np.ndarray) -> np.ndarray:
    """Occupation indices (OCCUPATIONS order) drawn by age."""
    young = np.array([0.7, 0.08, 0.07, 0.01, 0.01, 0.08, 0.01, 0.0, 0.04])
    middle = np.array([0.02, 0.26, 0.18, 0.16, 0.05, 0.14, 0.1, 0.01, 0.08])
    old = np.array([0.0, 0.06, 0.03, 0.1, 0.03, 0.04, 0.08, 0.6, 0.06])
    table = np.select(
        [age[:, None] < 24, age[:, None] < 63], [young[None], middle[None]], old[None]
    )
    cumulative = table.cumsum(axis=1)
    draws = rng.random(age.size)[:, None] * cumulative[:, -1:]
    return (draws > cumulative).sum(axis=1)


def _identity(rng: np.random.Generator, holders: pd.DataFrame) -> pd.DataFrame:
    """Fake names, e-mail addresses, phone numbers and LINE ids (reserved domains)."""
    count = len(holders)
    surname = np.array(SURNAMES)[rng.integers(0, len(SURNAMES), count)]
    given = np.array(GIVEN_NAMES)[rng.integers(0, len(GIVEN_NAMES), count)]
    serial = np.arange(count)
    name = np.char.add(np.char.add(given, " "), surname)
    email = [
        f"{g.lower().replace('-', '')}.{s.lower()}{n}@example.org"
        for g, s, n in zip(given, surname, serial, strict=True)
    ]
    phone = [f"+000-555-{n:07d}" for n in rng.integers(0, 10**7, count)]
    line_id = [f"U{n:016x}" for n in rng.integers(0, 2**62, count)]
    frame = pd.DataFrame(
        {
            CARD_NUMBER: holders[CARD_NUMBER],
            "name": name,
            "email": email,
            "phone": phone,
            "line_user_id": line_id,
        }
    )
    for column, share in (("email", 0.1), ("phone", 0.2), ("line_user_id", 0.35)):
        frame.loc[rng.random(count) < share, column] = None
    return frame


def _consents(
    rng: np.random.Generator, holders: pd.DataFrame, timeline: _Timeline
) -> pd.DataFrame:
    """A consent per card and purpose at issue, and for some a later change."""
    count = len(holders)
    issued = _ns(holders["issued_at"])
    frames = []
    for purpose, share in (("marketing_push", 0.7), ("analytics", 0.85)):
        granted = rng.random(count) < share
        changed = rng.random(count) < 0.12
        lower = np.maximum(issued, timeline.start) + DAY_NS
        change_at = lower + (rng.random(count) * (timeline.end - DAY_NS - lower))
        first = pd.DataFrame(
            {"i": np.arange(count), "granted": granted, "at": issued, "p": purpose}
        )
        later = pd.DataFrame(
            {
                "i": np.flatnonzero(changed),
                "granted": ~granted[changed],
                "at": change_at[changed].astype("int64"),
                "p": purpose,
            }
        )
        frames += [first, later]
    rows = pd.concat(frames, ignore_index=True).sort_values(["i", "p", "at"])
    return pd.DataFrame(
        {
            CARD_NUMBER: holders[CARD_NUMBER].take(rows["i"].to_numpy()).to_numpy(),
            "purpose": rows["p"].to_numpy(),
            "granted": rows["granted"].to_numpy(),
            "recorded_at": _times(rows["at"].to_numpy()).array,
        }
    )


def age_band_index(age: np.ndarray) -> np.ndarray:
    """Index into AGE_BANDS for ages in years."""
    return np.searchsorted(np.array(AGE_BAND_EDGES[1:-1]), age, side="right")


def need_log_rates(holders: pd.DataFrame, rng: np.random.Generator) -> np.ndarray:
    """Cards x needs log-rates per period before season and habit."""
    band = age_band_index(holders["_age"].to_numpy())
    generation = holders["generation"].to_numpy() - 1
    occupation = holders["occupation"].to_numpy()
    region = holders["_region"].to_numpy()
    status = holders["card_status"].map(STATUS_EFFECT).to_numpy()

    logits = np.empty((len(holders), len(NEED_IDS)))
    for j, need in enumerate(NEED_IDS):
        logits[:, j] = NEED_BASE_LOG_RATE[need] + NEED_LEVEL_SHIFT
        logits[:, j] += np.array(NEED_AGE_EFFECTS[need])[band]
        by_generation = NEED_GENERATION_EFFECTS.get(need, (0.0,) * 5)
        logits[:, j] += np.array(by_generation)[generation]
        for name, effects in NEED_OCCUPATION_EFFECTS.items():
            logits[:, j] += np.where(occupation == name, effects.get(need, 0.0), 0.0)
        for name, effects in NEED_REGION_EFFECTS.items():
            logits[:, j] += np.where(region == name, effects.get(need, 0.0), 0.0)

    person = rng.normal(0.0, 0.5, size=(len(holders), 1))
    person_need = rng.normal(0.0, 0.4, size=logits.shape)
    return logits + person + person_need + status[:, None]


def _month_effects(months: np.ndarray) -> np.ndarray:
    """Periods x needs log-rate effects of the calendar month."""
    effects = np.zeros((months.size, len(NEED_IDS)))
    for j, need in enumerate(NEED_IDS):
        for month, effect in NEED_MONTH_EFFECTS.get(need, {}).items():
            effects[months == month, j] = effect
    return effects


def _active_fraction(holders: pd.DataFrame, timeline: _Timeline) -> np.ndarray:
    """Cards x periods share of each period after the card was issued."""
    issued = _ns(holders["issued_at"])
    elapsed = timeline.starts[None, :] + PERIOD_NS - issued[:, None]
    return np.clip(elapsed / PERIOD_NS, 0.0, 1.0)


def _service_events(
    rng: np.random.Generator, holders: pd.DataFrame, timeline: _Timeline
) -> tuple[pd.DataFrame, pd.DataFrame, np.ndarray]:
    """Service events from need hazards with habit, the needs oracle, the log-rates."""
    base = need_log_rates(holders, rng)
    season = _month_effects(timeline.months)
    active = _active_fraction(holders, timeline)
    habit = np.zeros_like(base)
    cards_parts, needs_parts, times_parts = [], [], []
    last = len(timeline.starts) - 1

    for period, start in enumerate(timeline.starts):
        rate = np.exp(base + season[period]) * (
            1 + HABIT_STRENGTH * (1 - np.exp(-habit))
        )
        rate *= active[:, period : period + 1]
        if period == last:
            probability = 1.0 - np.exp(-rate)
        counts = rng.poisson(rate)
        habit = HABIT_DECAY * habit + counts
        if period < BURN_IN_PERIODS:
            continue
        card_index, need_index = np.nonzero(counts)
        repeats = counts[card_index, need_index]
        card_index = np.repeat(card_index, repeats)
        need_index = np.repeat(need_index, repeats)
        span = active[card_index, period] * PERIOD_NS
        times = start + PERIOD_NS - (rng.random(card_index.size) * span).astype("int64")
        cards_parts.append(card_index)
        needs_parts.append(need_index)
        times_parts.append(np.minimum(times, timeline.end - 1))

    events = _service_frame(rng, holders, cards_parts, needs_parts, times_parts)
    oracle = _oracle_needs(holders, probability, timeline)
    return events, oracle, base


def _service_frame(
    rng: np.random.Generator,
    holders: pd.DataFrame,
    cards_parts: list[np.ndarray],
    needs_parts: list[np.ndarray],
    times_parts: list[np.ndarray],
) -> pd.DataFrame:
    """Service events sorted by time with kinds and the card's post."""
    card_index = np.concatenate(cards_parts)
    need_index = np.concatenate(needs_parts)
    times = np.concatenate(times_parts)
    order = np.lexsort((card_index, times))
    card_index, need_index, times = card_index[order], need_index[order], times[order]
    kinds = np.array(["inquiry", "application", "attendance"])
    kind = _take(kinds, rng.choice(3, size=times.size, p=SERVICE_KIND_SHARES))
    card_numbers = pa.array(holders[CARD_NUMBER].array).take(pa.array(card_index))
    return pd.DataFrame(
        {
            "event_id": _sequential_ids("S", times.size),
            CARD_NUMBER: _strings(card_numbers),
            NEED_ID: _take(NEED_IDS, need_index),
            POST_ID: _take(holders[POST_ID].to_numpy(), card_index),
            "kind": kind,
            "event_time": _times(times),
        }
    )


def _oracle_needs(
    holders: pd.DataFrame, probability: np.ndarray, timeline: _Timeline
) -> pd.DataFrame:
    """Card x need probability of at least one use in the holdout window."""
    cards, needs = probability.shape
    window_start, window_end = timeline.holdout
    card_numbers = pa.array(holders[CARD_NUMBER].array)
    return pd.DataFrame(
        {
            CARD_NUMBER: _strings(
                card_numbers.take(pa.array(np.repeat(np.arange(cards), needs)))
            ),
            NEED_ID: _take(NEED_IDS, np.tile(np.arange(needs), cards)),
            "window_start": window_start,
            "window_end": window_end,
            "probability": probability.ravel(),
        }
    )


def _offer_count(cards: int) -> int:
    """About 300 offers for 20,000 cards, growing gently with size."""
    return int(np.clip(round(300 * (cards / 20_000) ** 0.2), 60, 1_000))


def _offers(rng: np.random.Generator, cards: int, timeline: _Timeline) -> pd.DataFrame:
    """Partner offers with validity windows, region scope, eligibility and quotas."""
    count = _offer_count(cards)
    names = list(OFFER_CATEGORIES)
    category = np.array(names)[rng.integers(0, len(names), count)]
    partner = [OFFER_CATEGORIES[c][1][rng.integers(0, 2)] for c in category]
    need = [OFFER_CATEGORIES[c][0] for c in category]
    discount = rng.choice([5.0, 10.0, 15.0, 20.0, 25.0, 30.0, 40.0, 50.0], size=count)

    first = timeline.starts[BURN_IN_PERIODS] - 120 * DAY_NS
    valid_from = rng.integers(first, timeline.end - 5 * DAY_NS, size=count)
    valid_to = valid_from + rng.integers(60, 540, size=count) * DAY_NS
    regions = np.array(["global", *sorted({p[2] for p in POST_LIST})])
    region_draw = rng.integers(1, len(regions), size=count)
    region = np.where(rng.random(count) < 0.4, "global", regions[region_draw])

    youth = np.isin(category, YOUTH_CATEGORIES) & (rng.random(count) < 0.6)
    senior = np.isin(category, SENIOR_CATEGORIES) & (rng.random(count) < 0.3)
    min_age = pd.array(np.where(senior, 60, np.where(youth, 16, 0)), dtype="Int64")
    min_age[~(youth | senior)] = pd.NA
    max_age = pd.array(np.where(youth, 30, 0), dtype="Int64")
    max_age[~youth] = pd.NA
    quota = pd.array(np.maximum(10, cards * rng.uniform(0.001, 0.01, count)).round())
    quota = pd.array(quota, dtype="Int64")
    quota[rng.random(count) < 0.7] = pd.NA

    return pd.DataFrame(
        {
            OFFER_ID: [f"O{i + 1:04d}" for i in range(count)],
            "partner": partner,
            "category": category,
            "title": [
                f"{d:.0f}% off {c.replace('_', ' ')} at {p}"
                for d, c, p in zip(discount, category, partner, strict=True)
            ],
            NEED_ID: need,
            "region": region,
            "valid_from": _times(valid_from),
            "valid_to": _times(valid_to),
            "min_age": min_age,
            "max_age": max_age,
            "requires_active_card": rng.random(count) < 0.5,
            "quota": quota,
            "discount_pct": discount,
        }
    )


@dataclass
class _OfferModel:
    """Hidden offer-side parameters and the period overlaps of every offer."""

    bias: np.ndarray  # offers
    factors: np.ndarray  # offers x LATENT_DIM
    need_index: np.ndarray  # offers; -1 when the offer has no need
    overlap: np.ndarray  # offers x stored periods: share of the period it is valid
    valid_from: np.ndarray
    valid_to: np.ndarray
    region: np.ndarray
    min_age: np.ndarray
    max_age: np.ndarray
    requires_active: np.ndarray
    mean_valid: float


def _offer_model(
    rng: np.random.Generator, offers: pd.DataFrame, starts: np.ndarray
) -> _OfferModel:
    """Draw latent offer factors and compute validity overlaps per period."""
    count = len(offers)
    valid_from = _ns(offers["valid_from"])
    valid_to = _ns(offers["valid_to"])
    lo = np.maximum(valid_from[:, None], starts[None, :])
    hi = np.minimum(valid_to[:, None], starts[None, :] + PERIOD_NS)
    overlap = np.clip((hi - lo) / PERIOD_NS, 0.0, 1.0)
    need_lookup = {need: j for j, need in enumerate(NEED_IDS)}
    return _OfferModel(
        bias=rng.normal(0.0, 0.7, count),
        factors=rng.normal(0.0, 0.6, (count, LATENT_DIM)),
        need_index=np.array([need_lookup.get(n, -1) for n in offers[NEED_ID]]),
        overlap=overlap,
        valid_from=valid_from,
        valid_to=valid_to,
        region=offers["region"].to_numpy().astype(str),
        min_age=offers["min_age"].fillna(0).to_numpy(dtype="int64"),
        max_age=offers["max_age"].fillna(200).to_numpy(dtype="int64"),
        requires_active=offers["requires_active_card"].to_numpy(dtype=bool),
        mean_valid=float(overlap.sum(axis=0).mean()),
    )


def offer_utilities(
    model: _OfferModel, card_factors: np.ndarray, need_scores: np.ndarray
) -> np.ndarray:
    """Cards x offers taste: offer bias, latent match and need affinity."""
    utility = model.bias[None, :] + card_factors @ model.factors.T
    has_need = model.need_index >= 0
    affinity = need_scores[:, np.where(has_need, model.need_index, 0)]
    return utility + NEED_AFFINITY * np.where(has_need[None, :], affinity, 0.0)


def _eligible(model: _OfferModel, holders: pd.DataFrame) -> np.ndarray:
    """Cards x offers: region scope, age limits and active-card rule."""
    region = holders["_region"].to_numpy().astype(str)[:, None]
    age = holders["_age"].to_numpy()[:, None]
    active = (holders["card_status"].to_numpy() == "active")[:, None]
    in_region = (model.region[None, :] == "global") | (model.region[None, :] == region)
    in_age = (age >= model.min_age[None, :]) & (age <= model.max_age[None, :])
    return in_region & in_age & (active | ~model.requires_active[None, :])


def _sample_categorical(
    rng: np.random.Generator, weights: np.ndarray, counts: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Draw ``counts[i]`` columns of row i in proportion to ``weights[i]``.

    Rows whose weights are all zero draw nothing.

    Returns:
        Row indices and drawn column indices, one pair per draw.
    """
    cumulative = np.cumsum(weights, axis=1, dtype=np.float64)
    totals = cumulative[:, -1]
    rows = np.flatnonzero((counts > 0) & (totals > 0))
    if rows.size == 0:
        return np.empty(0, dtype=np.int64), np.empty(0, dtype=np.int64)
    cumulative = cumulative[rows] / totals[rows, None] + np.arange(rows.size)[:, None]
    slot = np.repeat(np.arange(rows.size), counts[rows])
    targets = slot + rng.random(slot.size) * (1 - 1e-12)
    flat_position = np.searchsorted(cumulative.ravel(), targets, side="right")
    columns = flat_position - slot * weights.shape[1]
    return rows[slot], np.minimum(columns, weights.shape[1] - 1)


def _offer_events(
    seed: np.random.SeedSequence,
    holders: pd.DataFrame,
    offers: pd.DataFrame,
    need_logits: np.ndarray,
    timeline: _Timeline,
    impressions_per_period: float,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Offer impressions, clicks and redemptions, and the offers oracle."""
    chunks = range(0, len(holders), OFFER_CHUNK_CARDS)
    children = seed.spawn(1 + len(chunks))
    starts = timeline.starts[BURN_IN_PERIODS:]
    model = _offer_model(np.random.default_rng(children[0]), offers, starts)
    need_scores = (need_logits - need_logits.mean(axis=0)) / need_logits.std(axis=0)
    active = _active_fraction(holders, timeline)[:, BURN_IN_PERIODS:]

    events, oracles = [], []
    for chunk_number, first in enumerate(chunks):
        part = slice(first, first + OFFER_CHUNK_CARDS)
        rng = np.random.default_rng(children[1 + chunk_number])
        chunk_events, chunk_oracle = _offer_chunk(
            rng,
            model,
            holders.iloc[part],
            (need_scores[part], active[part]),
            starts,
            impressions_per_period,
        )
        chunk_events["card"] += first
        chunk_oracle["card"] += first
        events.append(chunk_events)
        oracles.append(chunk_oracle)

    merged = {key: np.concatenate([e[key] for e in events]) for key in events[0]}
    merged = _apply_quotas(
        merged, offers["quota"].to_numpy(dtype="float64", na_value=np.inf)
    )
    oracle = {key: np.concatenate([o[key] for o in oracles]) for key in oracles[0]}
    return _offer_frame(holders, offers, merged), _oracle_offer_frame(
        holders, offers, oracle, timeline
    )


def _offer_chunk(
    rng: np.random.Generator,
    model: _OfferModel,
    holders: pd.DataFrame,
    scores_and_activity: tuple[np.ndarray, np.ndarray],
    starts: np.ndarray,
    impressions_per_period: float,
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Events and oracle rows for one chunk of cards (indices local to the chunk).

    ``scores_and_activity`` holds the chunk's standardised need scores and its
    cards' active fraction per period.
    """
    need_scores, active = scores_and_activity
    count = len(holders)
    card_factors = rng.normal(0.0, 0.6, (count, LATENT_DIM))
    activity = rng.lognormal(-0.2, 0.7, count)
    utility = offer_utilities(model, card_factors, need_scores)
    taste = np.exp(utility)
    scale = activity * CLICKS_PER_PERIOD / (taste.mean(axis=1) * model.mean_valid)
    weights = (taste * _eligible(model, holders)).astype(np.float32)
    period_rates = (weights @ model.overlap.astype(np.float32)) * scale[:, None]
    period_rates *= active
    clicks = rng.poisson(period_rates)
    shown = rng.poisson(impressions_per_period * activity[:, None] * active)

    issued = _ns(holders["issued_at"])
    parts = []
    for period, start in enumerate(starts):
        valid = np.flatnonzero(model.overlap[:, period] > 0)
        if valid.size == 0:
            continue
        clicked = np.flatnonzero(clicks[:, period])
        period_weights = weights[np.ix_(clicked, valid)] * model.overlap[valid, period]
        row, column = _sample_categorical(rng, period_weights, clicks[clicked, period])
        card, offer = clicked[row], valid[column]
        parts.append(_click_events(rng, model, utility, issued, start, card, offer))

        # Impressions: offers valid in the period, shown uniformly, eligible ones kept.
        card = np.repeat(np.arange(count), shown[:, period])
        offer = valid[rng.integers(0, valid.size, card.size)]
        keep = weights[card, offer] > 0
        card, offer = card[keep], offer[keep]
        times = _uniform_times(rng, model, issued, start, card, offer)
        parts.append((card, offer, np.zeros(card.size, dtype=np.int8), times))

    last = model.overlap[:, -1].astype(np.float32)[None, :]
    probability = 1.0 - np.exp(-(weights * last) * (scale * active[:, -1])[:, None])
    oracle = _top_offers(probability)
    card, offer, kind, times = (np.concatenate(p) for p in zip(*parts, strict=True))
    keep = times >= 0
    events = {"card": card[keep], "offer": offer[keep], "kind": kind[keep]}
    events["time"] = times[keep]
    return events, oracle


def _uniform_times(
    rng: np.random.Generator,
    model: _OfferModel,
    issued: np.ndarray,
    start: int,
    card: np.ndarray,
    offer: np.ndarray,
) -> np.ndarray:
    """Times uniform in the period where offer and card are both valid; -1 if none."""
    lo = np.maximum(np.maximum(model.valid_from[offer], issued[card]), start)
    hi = np.minimum(model.valid_to[offer], start + PERIOD_NS)
    times = lo + (rng.random(card.size) * (hi - lo)).astype("int64")
    return np.where(hi > lo, times, -1)


def _click_events(
    rng: np.random.Generator,
    model: _OfferModel,
    utility: np.ndarray,
    issued: np.ndarray,
    start: int,
    card: np.ndarray,
    offer: np.ndarray,
) -> tuple[np.ndarray, ...]:
    """Each click with the impression before it and, for some, a redemption after."""
    clicked = _uniform_times(rng, model, issued, start, card, offer)
    lead = rng.integers(60, 7_200, card.size) * 10**9
    lower = np.maximum(np.maximum(model.valid_from[offer], issued[card]), start)
    impressed = np.where(clicked >= 0, np.maximum(clicked - lead, lower), -1)

    chance = 0.6 / (1.0 + np.exp(-(utility[card, offer] + REDEMPTION_SHIFT)))
    redeemed = (rng.random(card.size) < chance) & (clicked >= 0)
    delay = rng.integers(600, 72 * 3_600, card.size) * 10**9
    upper = np.minimum(model.valid_to[offer], start + PERIOD_NS) - 10**9
    redeemed_at = np.minimum(clicked + delay, np.maximum(upper, clicked))

    cards = np.concatenate([card, card, card[redeemed]])
    offers = np.concatenate([offer, offer, offer[redeemed]])
    kinds = np.concatenate(
        [np.zeros(card.size), np.ones(card.size), np.full(redeemed.sum(), 2)]
    ).astype(np.int8)
    times = np.concatenate([impressed, clicked, redeemed_at[redeemed]])
    return cards, offers, kinds, times


def _top_offers(probability: np.ndarray) -> dict[str, np.ndarray]:
    """For each card, its TOP_OFFERS offers of highest positive probability."""
    top = min(TOP_OFFERS, probability.shape[1])
    best = np.argpartition(-probability, top - 1, axis=1)[:, :top]
    chosen = np.take_along_axis(probability, best, axis=1)
    order = np.argsort(-chosen, axis=1, kind="stable")
    best = np.take_along_axis(best, order, axis=1)
    chosen = np.take_along_axis(chosen, order, axis=1)
    card = np.repeat(np.arange(probability.shape[0]), top)
    keep = chosen.ravel() > 0
    return {
        "card": card[keep],
        "offer": best.ravel()[keep],
        "probability": chosen.ravel()[keep].astype(np.float64),
    }


def _apply_quotas(events: dict[str, np.ndarray], quota: np.ndarray) -> dict:
    """Drop redemptions beyond an offer's quota, first come first served."""
    redemption = np.flatnonzero(events["kind"] == 2)
    order = redemption[
        np.lexsort((events["time"][redemption], events["offer"][redemption]))
    ]
    offers = events["offer"][order]
    group_start = np.r_[0, np.flatnonzero(np.diff(offers)) + 1]
    sizes = np.diff(np.r_[group_start, offers.size])
    rank = np.arange(offers.size) - np.repeat(group_start, sizes)
    over = order[rank >= quota[offers]]
    keep = np.ones(events["kind"].size, dtype=bool)
    keep[over] = False
    return {key: values[keep] for key, values in events.items()}


def _offer_frame(
    holders: pd.DataFrame, offers: pd.DataFrame, events: dict[str, np.ndarray]
) -> pd.DataFrame:
    """Offer events sorted by time with sequential ids."""
    order = np.lexsort((events["kind"], events["card"], events["time"]))
    card = events["card"][order]
    card_numbers = pa.array(holders[CARD_NUMBER].array).take(pa.array(card))
    kinds = np.array(["impression", "click", "redemption"])
    return pd.DataFrame(
        {
            "event_id": _sequential_ids("E", order.size),
            CARD_NUMBER: _strings(card_numbers),
            OFFER_ID: _take(offers[OFFER_ID].to_numpy(), events["offer"][order]),
            "kind": _take(kinds, events["kind"][order]),
            "event_time": _times(events["time"][order]),
        }
    )


def _oracle_offer_frame(
    holders: pd.DataFrame,
    offers: pd.DataFrame,
    oracle: dict[str, np.ndarray],
    timeline: _Timeline,
) -> pd.DataFrame:
    """Card x offer probability of a click or redemption in the holdout window."""
    window_start, window_end = timeline.holdout
    card_numbers = pa.array(holders[CARD_NUMBER].array).take(pa.array(oracle["card"]))
    return pd.DataFrame(
        {
            CARD_NUMBER: _strings(card_numbers),
            OFFER_ID: _take(offers[OFFER_ID].to_numpy(), oracle["offer"]),
            "window_start": window_start,
            "window_end": window_end,
            "probability": oracle["probability"],
        }
    )


def _marketing_consent_at(
    consents: pd.DataFrame, holders: pd.DataFrame
) -> tuple[np.ndarray, np.ndarray]:
    """Per card: marketing-push consent at issue, and when it flipped (or never)."""
    marketing = consents[consents["purpose"] == "marketing_push"]
    position = pd.Index(holders[CARD_NUMBER]).get_indexer(marketing[CARD_NUMBER])
    times = _ns(marketing["recorded_at"])
    first = np.zeros(len(holders), dtype=bool)
    change = np.full(len(holders), np.iinfo(np.int64).max)
    is_first = ~pd.Series(position).duplicated().to_numpy()
    first[position[is_first]] = marketing["granted"].to_numpy()[is_first]
    change[position[~is_first]] = times[~is_first]
    return first, change


def _push_events(
    rng: np.random.Generator,
    holders: pd.DataFrame,
    consents: pd.DataFrame,
    timeline: _Timeline,
) -> pd.DataFrame:
    """LINE pushes of campaigns to consenting cards, with per-person engagement."""
    count = len(holders)
    engagement = rng.beta(2.0, 5.0, count)
    issued = _ns(holders["issued_at"])
    granted_first, changed_at = _marketing_consent_at(consents, holders)
    blocked = np.zeros(count, dtype=bool)
    parts, campaigns = [], []

    for period, start in enumerate(timeline.starts[BURN_IN_PERIODS:]):
        for campaign in range(CAMPAIGNS_PER_PERIOD):
            at = int(start + rng.integers(0, PERIOD_NS - DAY_NS))
            granted = np.where(at >= changed_at, ~granted_first, granted_first)
            reached = granted & (issued < at) & ~blocked
            reached &= rng.random(count) < PUSH_REACH
            card = np.flatnonzero(reached)
            parts.append(_campaign_events(rng, card, engagement[card], at))
            campaigns.append(np.full(parts[-1][0].size, period * 10 + campaign))
            blocked[parts[-1][0][parts[-1][1] == 3]] = True

    card, kind, times = (np.concatenate(p) for p in zip(*parts, strict=True))
    campaign_codes, campaign_position = np.unique(
        np.concatenate(campaigns), return_inverse=True
    )
    campaign_names = [f"C{code:04d}" for code in campaign_codes]
    times = np.minimum(times, timeline.end - 1)
    order = np.lexsort((kind, card, times))
    card_numbers = pa.array(holders[CARD_NUMBER].array).take(pa.array(card[order]))
    kinds = np.array(["sent", "opened", "clicked", "blocked"])
    return pd.DataFrame(
        {
            "event_id": _sequential_ids("M", order.size),
            CARD_NUMBER: _strings(card_numbers),
            "campaign_id": _take(campaign_names, campaign_position[order]),
            "kind": _take(kinds, kind[order]),
            "event_time": _times(times[order]),
        }
    )


def _campaign_events(
    rng: np.random.Generator, card: np.ndarray, engagement: np.ndarray, at: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Sent, opened, clicked and blocked events of one campaign."""
    sent = at + rng.integers(0, 3_600, card.size) * 10**9
    opened = rng.random(card.size) < engagement
    clicked = opened & (rng.random(card.size) < 0.05 + 0.4 * engagement)
    blocked = ~opened & (rng.random(card.size) < 0.01 * (1 - engagement))
    opened_at = sent + (rng.exponential(2 * 3_600, card.size) * 10**9).astype("int64")
    clicked_at = opened_at + rng.integers(5, 600, card.size) * 10**9
    blocked_at = sent + rng.integers(60, 86_400, card.size) * 10**9

    cards = np.concatenate([card, card[opened], card[clicked], card[blocked]])
    kinds = np.repeat(
        np.arange(4, dtype=np.int8),
        [card.size, opened.sum(), clicked.sum(), blocked.sum()],
    )
    times = np.concatenate(
        [sent, opened_at[opened], clicked_at[clicked], blocked_at[blocked]]
    )
    return cards, kinds, times

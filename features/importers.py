"""Real public data in the warehouse schema: MovieLens-100k and IBM Telco customers.

MovieLens users become card holders and films become offers; every rating is a
click on the film's offer and a rating of 4 or 5 is also a redemption, both at the
rating's time. Telco customers become card holders and each add-on service they took
becomes a need category used, with one application event inside their tenure.
Both importers return all nine tables so one ``Warehouse.write_tables`` stores them.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

import numpy as np
import pandas as pd

from features.errors import InputError
from features.generator import POST_LIST, need_categories_table, posts_table
from features.schema import (
    CARD_NUMBER,
    CONSENT_PURPOSES,
    NEED_ID,
    OFFER_ID,
    POST_ID,
    TABLES_BY_NAME,
)
from features.warehouse import Warehouse

logger = logging.getLogger(__name__)

DEFAULT_DATA_DIR = Path(__file__).resolve().parents[2] / "shared" / "data"
MOVIELENS_DIR = DEFAULT_DATA_DIR / "movielens-100k"
TELCO_FILE = DEFAULT_DATA_DIR / "telco-customer-churn-ibm" / "Telco-Customer-Churn.csv"
REDEMPTION_MIN_RATING = 4
# The Telco sample carries no dates; tenures are counted back from this time.
TELCO_AS_OF = pd.Timestamp("2025-01-01T00:00:00Z")
TELCO_SERVICES: dict[str, tuple[str, str]] = {
    # need_id: (column, label)
    "phone_service": ("PhoneService", "phone service"),
    "multiple_lines": ("MultipleLines", "multiple phone lines"),
    "internet_service": ("InternetService", "internet service"),
    "online_security": ("OnlineSecurity", "online security"),
    "online_backup": ("OnlineBackup", "online backup"),
    "device_protection": ("DeviceProtection", "device protection"),
    "tech_support": ("TechSupport", "technical support"),
    "streaming_tv": ("StreamingTV", "streaming TV"),
    "streaming_movies": ("StreamingMovies", "streaming films"),
}
US_POSTS = tuple(p[0] for p in POST_LIST if p[3] == "US")
# First digit of a US ZIP code -> the post serving that part of the country.
ZIP_POSTS = {
    "0": "P18", "1": "P13", "2": "P20", "3": "P20", "4": "P17",
    "5": "P17", "6": "P17", "7": "P16", "8": "P14", "9": "P15",
}  # fmt: skip
ZIP_WEST_COAST = {"90": "P14", "91": "P14", "92": "P14", "93": "P14", "97": "P19"}
ZIP_WEST_COAST |= {"98": "P19", "99": "P19"}


def _stable_int(text: str) -> int:
    """A deterministic non-negative integer from a string (not Python's hash)."""
    return int.from_bytes(hashlib.sha256(text.encode("utf-8")).digest()[:8], "big")


def _require(path: Path, what: str) -> None:
    """Refuse a missing input with the remedy."""
    if not path.exists():
        raise InputError(
            f"{what} expected at {path}, but it does not exist; pass --path with the "
            "folder that holds it"
        )


def empty_table(name: str) -> pd.DataFrame:
    """A table with the schema's columns and no rows."""
    kinds = {
        "string": "object",
        "int": "Int64",
        "float": "float64",
        "bool": "boolean",
        "timestamp": "datetime64[ns, UTC]",
    }
    table = TABLES_BY_NAME[name]
    return pd.DataFrame({c.name: pd.Series(dtype=kinds[c.kind]) for c in table.columns})


def _placeholder_identity(card_numbers: pd.Series, source: str) -> pd.DataFrame:
    """Identity rows that hold no personal data."""
    return pd.DataFrame(
        {
            CARD_NUMBER: card_numbers,
            "name": [f"{source} member {n}" for n in card_numbers],
            "email": None,
            "phone": None,
            "line_user_id": None,
        }
    )


def _granted_consents(card_numbers: pd.Series, at: pd.Series) -> pd.DataFrame:
    """Consent granted for every purpose when the card was issued."""
    rows = []
    for purpose in CONSENT_PURPOSES:
        rows.append(
            pd.DataFrame(
                {
                    CARD_NUMBER: card_numbers,
                    "purpose": purpose,
                    "granted": True,
                    "recorded_at": at,
                }
            )
        )
    return pd.concat(rows, ignore_index=True)


def _zip_post(zip_code: str) -> tuple[str, str]:
    """Post and country of a MovieLens ZIP code; Canadian codes start with a letter."""
    if zip_code[:1].isalpha():
        return ("P22", "CA") if zip_code[:1].upper() == "V" else ("P21", "CA")
    if zip_code[:2] in ZIP_WEST_COAST:
        return ZIP_WEST_COAST[zip_code[:2]], "US"
    return ZIP_POSTS.get(zip_code[:1], "P13"), "US"


def import_movielens(
    path: Path = MOVIELENS_DIR,
) -> tuple[dict[str, pd.DataFrame], dict]:
    """MovieLens-100k as warehouse tables.

    Args:
        path: the folder with ``u.user``, ``u.item``, ``u.genre`` and ``u.data``.

    Returns:
        The tables by name and the metadata (``as_of`` just after the last rating).

    Raises:
        InputError: when a file is missing.
    """
    for name in ("u.user", "u.item", "u.genre", "u.data"):
        _require(path / name, f"MovieLens file {name}")
    ratings = pd.read_csv(
        path / "u.data", sep="\t", names=["user", "item", "rating", "unix"]
    )
    ratings["time"] = pd.to_datetime(ratings["unix"], unit="s", utc=True)
    users = pd.read_csv(
        path / "u.user", sep="|", names=["user", "age", "gender", "occupation", "zip"]
    )
    first_rating = ratings.groupby("user")["time"].min()

    holders = _movielens_card_holders(users, first_rating)
    offers = _movielens_offers(path, ratings)
    events = _movielens_events(ratings)
    as_of = ratings["time"].max() + pd.Timedelta(seconds=1)
    needs = need_categories_table()
    tables = {
        "posts": posts_table(),
        "card_holders": holders,
        "identity": _placeholder_identity(holders[CARD_NUMBER], "MovieLens"),
        "need_categories": needs,
        "offers": offers,
        "consents": _granted_consents(holders[CARD_NUMBER], holders["issued_at"]),
        "service_events": empty_table("service_events"),
        "offer_events": events,
        "push_events": empty_table("push_events"),
    }
    meta = {"source": "movielens-100k", "as_of": as_of.isoformat(), "path": str(path)}
    logger.info(
        "read MovieLens: %d users, %d films, %d ratings",
        len(users),
        len(offers),
        len(ratings),
    )
    return tables, meta


def _movielens_card_holders(
    users: pd.DataFrame, first_rating: pd.Series
) -> pd.DataFrame:
    """Users as card holders; birth year from the age at their first rating."""
    joined = first_rating.reindex(users["user"]).to_numpy()
    joined = pd.DatetimeIndex(joined).tz_convert("UTC")
    zip_codes = users["zip"].astype(str)
    places = [_zip_post(z) for z in zip_codes]
    return pd.DataFrame(
        {
            CARD_NUMBER: users["user"].map(lambda u: f"{u:010d}"),
            POST_ID: [p for p, _ in places],
            "country": [c for _, c in places],
            "language": "en",
            "birth_year": (joined.year - users["age"]).astype("int64"),
            "gender": users["gender"].str.upper(),
            "generation": [1 + _stable_int(z) % 3 for z in zip_codes],
            "occupation": users["occupation"],
            "card_status": "active",
            "issued_at": joined - pd.Timedelta(seconds=1),
            "expires_at": pd.NaT,
        }
    )


def _movielens_offers(path: Path, ratings: pd.DataFrame) -> pd.DataFrame:
    """Films as offers valid over the whole rating period; category = first genre."""
    genres = pd.read_csv(path / "u.genre", sep="|", names=["genre", "index"])
    genres = genres.dropna()
    genre_names = genres.sort_values("index")["genre"].str.lower().tolist()
    columns = ["item", "title", "release", "video", "url", *genre_names]
    items = pd.read_csv(
        path / "u.item", sep="|", names=columns, encoding="latin-1", header=None
    )
    flags = items[genre_names].to_numpy()
    first_genre = np.where(flags.any(axis=1), flags.argmax(axis=1), 0)
    start = ratings["time"].min() - pd.Timedelta(seconds=1)
    end = ratings["time"].max() + pd.Timedelta(days=1)
    return pd.DataFrame(
        {
            OFFER_ID: items["item"].map(lambda i: f"M{i:04d}"),
            "partner": "MovieLens",
            "category": np.array(genre_names)[first_genre],
            "title": items["title"].fillna("untitled").astype(str),
            NEED_ID: None,
            "region": "global",
            "valid_from": start,
            "valid_to": end,
            "min_age": pd.array([pd.NA] * len(items), dtype="Int64"),
            "max_age": pd.array([pd.NA] * len(items), dtype="Int64"),
            "requires_active_card": False,
            "quota": pd.array([pd.NA] * len(items), dtype="Int64"),
            "discount_pct": 0.0,
        }
    )


def _movielens_events(ratings: pd.DataFrame) -> pd.DataFrame:
    """Every rating a click; ratings of 4 or 5 a redemption too, at the same time."""
    liked = ratings[ratings["rating"] >= REDEMPTION_MIN_RATING]
    frames = []
    for kind, rows in (("click", ratings), ("redemption", liked)):
        frames.append(
            pd.DataFrame(
                {
                    CARD_NUMBER: rows["user"].astype(str).str.zfill(10),
                    OFFER_ID: "M" + rows["item"].astype(str).str.zfill(4),
                    "kind": kind,
                    "event_time": rows["time"],
                }
            )
        )
    events = pd.concat(frames, ignore_index=True)
    events = events.sort_values(["event_time", CARD_NUMBER, "kind"], kind="stable")
    numbers = pd.Series(np.arange(len(events)), index=events.index).astype(str)
    events.insert(0, "event_id", "R" + numbers.str.zfill(9))
    return events.reset_index(drop=True)


def import_telco(path: Path = TELCO_FILE) -> tuple[dict[str, pd.DataFrame], dict]:
    """IBM Telco customers as card holders, their add-on services as needs used.

    Args:
        path: ``Telco-Customer-Churn.csv`` or the folder holding it.

    Returns:
        The tables by name and the metadata.

    Raises:
        InputError: when the file is missing.
    """
    path = path / TELCO_FILE.name if path.is_dir() else path
    _require(path, "the IBM Telco customer file")
    customers = pd.read_csv(path).sort_values("customerID", ignore_index=True)

    holders = _telco_card_holders(customers)
    services = _telco_service_events(customers, holders)
    needs = pd.DataFrame(
        {
            NEED_ID: list(TELCO_SERVICES),
            "label": [label for _, label in TELCO_SERVICES.values()],
        }
    )
    tables = {
        "posts": posts_table(),
        "card_holders": holders,
        "identity": _placeholder_identity(holders[CARD_NUMBER], "Telco"),
        "need_categories": needs,
        "offers": empty_table("offers"),
        "consents": _granted_consents(holders[CARD_NUMBER], holders["issued_at"]),
        "service_events": services,
        "offer_events": empty_table("offer_events"),
        "push_events": empty_table("push_events"),
    }
    meta = {"source": "telco", "as_of": TELCO_AS_OF.isoformat(), "path": str(path)}
    logger.info("read Telco: %d customers, %d services", len(holders), len(services))
    return tables, meta


def _telco_card_holders(customers: pd.DataFrame) -> pd.DataFrame:
    """Customers as card holders: senior flag -> birth year band, tenure -> issue."""
    draws = customers["customerID"].map(_stable_int)
    senior = customers["SeniorCitizen"].astype(int) == 1
    age = np.where(senior, 65 + draws % 16, 18 + draws % 47)
    months = customers["tenure"].astype(int)
    issued = pd.Series(
        [TELCO_AS_OF - pd.DateOffset(months=m) - pd.Timedelta(days=1) for m in months]
    )
    churned = customers["Churn"] == "Yes"
    post = np.array(US_POSTS)[(draws // 7) % len(US_POSTS)]
    return pd.DataFrame(
        {
            CARD_NUMBER: [f"{i + 1:010d}" for i in range(len(customers))],
            POST_ID: post,
            "country": "US",
            "language": "en",
            "birth_year": (TELCO_AS_OF.year - age).astype("int64"),
            "gender": customers["gender"].str[0].str.upper(),
            "generation": 1,
            "occupation": "other",
            "card_status": np.where(churned, "expired", "active"),
            "issued_at": pd.to_datetime(issued, utc=True),
            "expires_at": pd.Series(TELCO_AS_OF, index=customers.index).where(churned),
        }
    )


def _telco_service_events(
    customers: pd.DataFrame, holders: pd.DataFrame
) -> pd.DataFrame:
    """One application per service taken, at a seeded time within the tenure."""
    rng = np.random.default_rng(0)
    frames = []
    for need_id, (column, _) in TELCO_SERVICES.items():
        values = customers[column].astype(str)
        took = values.isin(["Yes", "DSL", "Fiber optic"]).to_numpy()
        issued = holders["issued_at"][took]
        span = (TELCO_AS_OF - issued).to_numpy(dtype="timedelta64[ns]")
        share = rng.random(int(took.sum()))
        if need_id == "phone_service":
            share = share * 0.05  # the line comes first, in the first days of tenure
        frames.append(
            pd.DataFrame(
                {
                    CARD_NUMBER: holders[CARD_NUMBER][took],
                    NEED_ID: need_id,
                    POST_ID: holders[POST_ID][took],
                    "kind": "application",
                    "event_time": issued
                    + pd.to_timedelta(share * span.astype("int64")),
                }
            )
        )
    events = pd.concat(frames, ignore_index=True)
    events = events.sort_values(["event_time", CARD_NUMBER], kind="stable")
    events.insert(0, "event_id", [f"T{i:09d}" for i in range(len(events))])
    return events.reset_index(drop=True)


def write_imported(
    tables: dict[str, pd.DataFrame], meta: dict, warehouse: Warehouse
) -> None:
    """Store imported tables as the whole warehouse (oracle files are removed).

    Raises:
        WarehouseValidationError: when a table breaks a rule; nothing is written.
    """
    warehouse.write_tables(tables, meta, replace=True)

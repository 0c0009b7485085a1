"""A hand-made warehouse of three card holders whose features are known exactly.

The snapshot ``CUTOFF`` sits between events one second before and one second after
it, so a point-in-time leak shows as an off-by-one count.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from features.schema import NEED_CATEGORIES
from features.warehouse import Warehouse

AS_OF = pd.Timestamp("2025-06-01 00:00:00", tz="UTC")
CUTOFF = pd.Timestamp("2025-05-01 00:00:00", tz="UTC")
EARLIER = pd.Timestamp("2025-04-01 00:00:00", tz="UTC")
SNAPSHOTS = [EARLIER, CUTOFF, AS_OF]
SECOND = pd.Timedelta(seconds=1)
_DAY = pd.Timedelta(days=1)
SECRET = b"handmade-test-secret-0123456789"

ALICE, BORIS, CHEN = "0000000001", "0012345678", "9000000003"


def _events(rows: list[tuple], columns: list[str], prefix: str) -> pd.DataFrame:
    frame = pd.DataFrame(rows, columns=columns)
    frame.insert(0, "event_id", [f"{prefix}{i}" for i in range(len(frame))])
    return frame


def handmade_tables() -> dict[str, pd.DataFrame]:
    """Warehouse tables with a few events on each side of ``CUTOFF``."""
    posts = pd.DataFrame(
        {
            "post_id": ["P01", "P02"],
            "post_name": ["Los Angeles", "Jakarta"],
            "region": ["north_america", "southeast_asia"],
            "country": ["US", "ID"],
        }
    )
    card_holders = pd.DataFrame(
        {
            "card_number": [ALICE, BORIS, CHEN],
            "post_id": ["P01", "P01", "P02"],
            "country": ["US", "US", "ID"],
            "language": ["en", "zh", "id"],
            "birth_year": [1990, 1960, 2001],
            "gender": ["F", "M", "X"],
            "generation": [2, 1, 3],
            "occupation": ["engineer", "retired", "student"],
            "card_status": ["active", "active", "active"],
            "issued_at": pd.to_datetime(
                ["2020-01-01", "2021-06-01", "2025-04-15"], utc=True
            ),
            "expires_at": pd.to_datetime(
                ["2026-01-01", "2025-05-15", "2026-04-15"], utc=True
            ),
        }
    )
    identity = pd.DataFrame(
        {
            "card_number": [ALICE, BORIS, CHEN],
            "name": ["Alice", "Boris", "Chen"],
            "email": [None, None, None],
            "phone": [None, None, None],
            "line_user_id": [None, None, None],
        }
    )
    needs = pd.DataFrame(
        {"need_id": list(NEED_CATEGORIES), "label": list(NEED_CATEGORIES.values())}
    )
    offers = pd.DataFrame(
        {
            "offer_id": ["O1", "O2"],
            "partner": ["Air", "Hotel"],
            "category": ["airline", "hotel"],
            "title": ["10% off flights", "Night free"],
            "need_id": ["senior_return_visits", None],
            "region": ["global", "north_america"],
            "valid_from": pd.to_datetime(["2025-01-01", "2025-03-01"], utc=True),
            "valid_to": pd.to_datetime(["2025-12-31", "2025-09-30"], utc=True),
            "min_age": [18, None],
            "max_age": [None, 70],
            "requires_active_card": [True, False],
            "quota": [10, None],
            "discount_pct": [10.0, 100.0],
        }
    )
    consents = pd.DataFrame(
        [
            (ALICE, "marketing_push", True, CUTOFF - 10 * SECOND),
            (ALICE, "marketing_push", False, CUTOFF + SECOND),
            (BORIS, "marketing_push", True, CUTOFF + SECOND),
            (BORIS, "analytics", True, EARLIER - SECOND),
        ],
        columns=["card_number", "purpose", "granted", "recorded_at"],
    )
    service_events = _events(
        [
            (ALICE, "study_in_taiwan", "P01", "inquiry", CUTOFF - SECOND),
            (ALICE, "study_in_taiwan", "P01", "application", CUTOFF + SECOND),
            (ALICE, "mandarin_learning", "P01", "attendance", CUTOFF - 40 * _DAY),
            (BORIS, "senior_return_visits", "P01", "inquiry", CUTOFF - 200 * _DAY),
            (CHEN, "youth_programmes", "P02", "inquiry", CUTOFF + SECOND),
        ],
        ["card_number", "need_id", "post_id", "kind", "event_time"],
        "S",
    )
    offer_events = _events(
        [
            (ALICE, "O1", "impression", CUTOFF - 3 * SECOND),
            (ALICE, "O1", "click", CUTOFF - 2 * SECOND),
            (ALICE, "O1", "redemption", CUTOFF - SECOND),
            (ALICE, "O2", "impression", CUTOFF - 5 * _DAY),
            (ALICE, "O2", "redemption", CUTOFF + SECOND),
            (BORIS, "O2", "impression", CUTOFF - 100 * _DAY),
            (BORIS, "O2", "click", CUTOFF - 100 * _DAY + SECOND),
        ],
        ["card_number", "offer_id", "kind", "event_time"],
        "O",
    )
    push_events = _events(
        [
            (ALICE, "C1", "sent", CUTOFF - 10 * _DAY),
            (ALICE, "C1", "opened", CUTOFF - 4 * _DAY),
            (ALICE, "C2", "sent", CUTOFF - SECOND),
            (ALICE, "C2", "opened", CUTOFF + SECOND),
            (BORIS, "C1", "sent", CUTOFF - 10 * _DAY),
            (BORIS, "C1", "blocked", CUTOFF + SECOND),
        ],
        ["card_number", "campaign_id", "kind", "event_time"],
        "M",
    )
    return {
        "posts": posts,
        "card_holders": card_holders,
        "identity": identity,
        "need_categories": needs,
        "offers": offers,
        "consents": consents,
        "service_events": service_events,
        "offer_events": offer_events,
        "push_events": push_events,
    }


def handmade_warehouse(directory: Path) -> Warehouse:
    """Store the hand-made tables in ``directory`` and return the warehouse."""
    warehouse = Warehouse(directory)
    warehouse.write_tables(handmade_tables(), meta={"as_of": AS_OF.isoformat()})
    return warehouse

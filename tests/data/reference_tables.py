"""Reference feature tables: every view as one plain join of events with snapshots.

This is the straightforward formulation the product's vectorised builder replaced
(each card and snapshot joined with all its events, counted with filters). It is
slow but easy to check by eye; tests compare the product's tables with it.

``post_stats`` is built by the product's own SQL (imported below), so comparing it
here proves nothing; hand-made cases in ``test_feature_tables.py`` check it.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import duckdb
import pandas as pd
import pyarrow as pa

from features.cards import pseudonyms
from features.feature_tables import (  # plumbing shared with the product's builder
    NO_AGE_LIMIT,
    OFFER_STATS_WINDOW_DAYS,
    OFFER_WINDOWS_DAYS,
    PUSH_WINDOW_DAYS,
    SERVICE_WINDOWS_DAYS,
    _checked_snapshots,
    _days_between,
    _ratio,
    _utc_timestamps,
    _write_atomically,
    offer_history_columns,
    post_stats_sql,
)
from features.schema import (
    CARD_KEY,
    CARD_NUMBER,
    EVENT_TIMESTAMP,
    NEED_CATEGORIES,
    OFFER_ID,
    POST_ID,
)

logger = logging.getLogger(__name__)


def build_feature_tables(
    warehouse: Any,
    secret: bytes,
    out_dir: Path,
    snapshots: Sequence[pd.Timestamp] | None = None,
) -> dict[str, Path]:
    """Compute every feature table and write one parquet file per feature view.

    Args:
        warehouse: a ``features.warehouse.Warehouse`` (``connect()`` and ``as_of()``).
        secret: the pseudonym secret that keys card numbers.
        out_dir: folder for ``<view>.parquet``; files are written aside and renamed.
        snapshots: times to stamp the rows with; monthly over the last year up to
            the warehouse's ``as_of`` when omitted.

    Returns:
        The parquet path of each feature view, by view name.

    Raises:
        InputError: when no snapshot is given or one lies after ``as_of``.
    """
    stamps = _checked_snapshots(warehouse, snapshots)
    out_dir.mkdir(parents=True, exist_ok=True)
    con = warehouse.connect()
    try:
        _prepare(con, stamps, secret)
        paths = {}
        for view, sql in VIEW_QUERIES.items():
            started = time.perf_counter()
            table = con.sql(sql()).to_arrow_table()
            paths[view] = _write_atomically(_utc_timestamps(table), out_dir, view)
            logger.debug(
                "built %s: %d rows in %.2f s",
                view,
                table.num_rows,
                time.perf_counter() - started,
            )
    finally:
        con.close()
    logger.info("built %d feature tables over %d snapshots", len(paths), len(stamps))
    return paths


def _prepare(
    con: duckdb.DuckDBPyConnection, stamps: list[pd.Timestamp], secret: bytes
) -> None:
    """Register snapshots, card pseudonyms and the card-by-snapshot base."""
    con.execute("SET TimeZone = 'UTC'")
    con.execute(f"SET threads = {max(1, os.cpu_count() or 1)}")
    snapshot_frame = pd.DataFrame({"snapshot": pd.DatetimeIndex(stamps)})
    con.register("snapshot_frame", snapshot_frame)
    con.execute(
        "CREATE OR REPLACE TEMP TABLE snaps AS "
        "SELECT CAST(snapshot AS TIMESTAMPTZ) AS snapshot FROM snapshot_frame"
    )

    numbers = con.execute(f"SELECT {CARD_NUMBER} FROM card_holders").fetchnumpy()
    card_numbers = [str(n) for n in numbers[CARD_NUMBER]]
    keys = pa.table(
        {CARD_NUMBER: card_numbers, CARD_KEY: pseudonyms(card_numbers, secret)}
    )
    con.register("card_key_frame", keys)
    con.execute(
        "CREATE OR REPLACE TEMP TABLE card_keys AS SELECT * FROM card_key_frame"
    )

    # A card exists at a snapshot once it was issued before it.
    con.execute(
        f"""
        CREATE OR REPLACE TEMP TABLE card_snaps AS
        SELECT c.{CARD_NUMBER}, k.{CARD_KEY}, s.snapshot
        FROM card_holders c
        JOIN card_keys k USING ({CARD_NUMBER})
        JOIN snaps s ON CAST(c.issued_at AS TIMESTAMPTZ) < s.snapshot
        """
    )


def card_profile_sql() -> str:
    """Demographics, card status, tenure and consent of every card at a snapshot."""
    tenure = _days_between("b.snapshot", "CAST(c.issued_at AS TIMESTAMPTZ)")
    return f"""
    WITH consent_at AS (
        SELECT b.{CARD_NUMBER}, b.snapshot,
            arg_max(CASE WHEN x.purpose = 'marketing_push' THEN x.granted END,
                    CASE WHEN x.purpose = 'marketing_push' THEN x.recorded_at END)
                AS marketing,
            arg_max(CASE WHEN x.purpose = 'analytics' THEN x.granted END,
                    CASE WHEN x.purpose = 'analytics' THEN x.recorded_at END)
                AS analytics
        FROM card_snaps b
        JOIN consents x ON x.{CARD_NUMBER} = b.{CARD_NUMBER}
            AND CAST(x.recorded_at AS TIMESTAMPTZ) < b.snapshot
        GROUP BY ALL
    ), status_at AS (
        SELECT b.{CARD_NUMBER}, b.snapshot,
            CASE
                WHEN c.expires_at IS NOT NULL
                    AND CAST(c.expires_at AS TIMESTAMPTZ) <= b.snapshot
                    THEN 'expired'
                -- Suspensions carry no date, so a suspended card reads as
                -- suspended at every snapshot.
                WHEN c.card_status = 'suspended' THEN 'suspended'
                ELSE 'active'
            END AS card_status
        FROM card_snaps b JOIN card_holders c USING ({CARD_NUMBER})
    )
    SELECT
        b.{CARD_KEY},
        b.snapshot AS {EVENT_TIMESTAMP},
        CAST(year(b.snapshot) - c.birth_year AS BIGINT) AS age,
        CAST(c.generation AS BIGINT) AS generation,
        c.gender,
        c.{POST_ID},
        c.country,
        c.language,
        p.region,
        st.card_status,
        CAST(st.card_status = 'active' AS BIGINT) AS is_active,
        CAST(floor({tenure}) AS BIGINT) AS tenure_days,
        CAST(coalesce(ca.marketing, false) AS BIGINT) AS marketing_consent,
        CAST(coalesce(ca.analytics, false) AS BIGINT) AS analytics_consent
    FROM card_snaps b
    JOIN card_holders c USING ({CARD_NUMBER})
    JOIN posts p ON p.{POST_ID} = c.{POST_ID}
    JOIN status_at st ON st.{CARD_NUMBER} = b.{CARD_NUMBER}
        AND st.snapshot = b.snapshot
    LEFT JOIN consent_at ca ON ca.{CARD_NUMBER} = b.{CARD_NUMBER}
        AND ca.snapshot = b.snapshot
    ORDER BY b.snapshot, b.{CARD_KEY}
    """


def push_engagement_sql() -> str:
    """Push messages sent, opened and clicked lately, and whether pushes are blocked."""
    window = f"INTERVAL {PUSH_WINDOW_DAYS} DAY"
    in_window = f"e.event_time >= b.snapshot - {window}"
    since_open = _days_between("b.snapshot", "a.last_open")
    return f"""
    WITH agg AS (
        SELECT b.{CARD_NUMBER}, b.snapshot,
            count(*) FILTER (WHERE e.kind = 'sent' AND {in_window}) AS sent,
            count(*) FILTER (WHERE e.kind = 'opened' AND {in_window}) AS opened,
            count(*) FILTER (WHERE e.kind = 'clicked' AND {in_window}) AS clicked,
            count(*) FILTER (WHERE e.kind = 'blocked') AS blocked,
            max(e.event_time) FILTER (WHERE e.kind = 'opened') AS last_open
        FROM card_snaps b
        JOIN push_events e ON e.{CARD_NUMBER} = b.{CARD_NUMBER}
            AND CAST(e.event_time AS TIMESTAMPTZ) < b.snapshot
        GROUP BY ALL
    )
    SELECT
        b.{CARD_KEY},
        b.snapshot AS {EVENT_TIMESTAMP},
        coalesce(a.sent, 0) AS push_sent_90d,
        coalesce(a.opened, 0) AS push_opened_90d,
        coalesce(a.clicked, 0) AS push_clicked_90d,
        {_ratio("coalesce(a.opened, 0)", "coalesce(a.sent, 0)")}
            AS push_open_rate_90d,
        {_ratio("coalesce(a.clicked, 0)", "coalesce(a.sent, 0)")}
            AS push_click_rate_90d,
        CAST(coalesce(a.blocked, 0) > 0 AS BIGINT) AS push_blocked,
        {since_open} AS days_since_push_open
    FROM card_snaps b
    LEFT JOIN agg a ON a.{CARD_NUMBER} = b.{CARD_NUMBER} AND a.snapshot = b.snapshot
    ORDER BY b.snapshot, b.{CARD_KEY}
    """


def service_use_sql() -> str:
    """Service use per need category over 30, 90 and 365 days before a snapshot."""
    longest = max(SERVICE_WINDOWS_DAYS)
    aggregates, selects = [], []
    for need in NEED_CATEGORIES:
        is_need = f"e.need_id = '{need}'"
        for days in SERVICE_WINDOWS_DAYS:
            name = f"svc_{need}_{days}d"
            aggregates.append(
                f"count(*) FILTER (WHERE {is_need} AND "
                f"e.event_time >= b.snapshot - INTERVAL {days} DAY) AS {name}"
            )
            selects.append(f"coalesce(a.{name}, 0) AS {name}")
        aggregates.append(f"max(e.event_time) FILTER (WHERE {is_need}) AS last_{need}")
        selects.append(
            f"{_days_between('b.snapshot', f'a.last_{need}')} AS days_since_{need}"
        )
    for days in SERVICE_WINDOWS_DAYS:
        name = f"svc_total_{days}d"
        aggregates.append(
            f"count(*) FILTER (WHERE e.event_time >= b.snapshot - INTERVAL {days} DAY)"
            f" AS {name}"
        )
        selects.append(f"coalesce(a.{name}, 0) AS {name}")
    aggregates.append("count(DISTINCT e.need_id) AS distinct_needs")
    selects.append("coalesce(a.distinct_needs, 0) AS distinct_needs_365d")
    return f"""
    WITH agg AS (
        SELECT b.{CARD_NUMBER}, b.snapshot,
            {", ".join(aggregates)}
        FROM card_snaps b
        JOIN service_events e ON e.{CARD_NUMBER} = b.{CARD_NUMBER}
            AND CAST(e.event_time AS TIMESTAMPTZ) < b.snapshot
            AND e.event_time >= b.snapshot - INTERVAL {longest} DAY
        GROUP BY ALL
    )
    SELECT b.{CARD_KEY}, b.snapshot AS {EVENT_TIMESTAMP},
        {", ".join(selects)}
    FROM card_snaps b
    LEFT JOIN agg a ON a.{CARD_NUMBER} = b.{CARD_NUMBER} AND a.snapshot = b.snapshot
    ORDER BY b.snapshot, b.{CARD_KEY}
    """


OFFER_EVENT_COUNTS = {
    "impressions": "impression",
    "clicks": "click",
    "redemptions": "redemption",
}


def offer_history_sql() -> str:
    """A card's impressions, clicks and redemptions of offers before a snapshot."""
    long = max(OFFER_WINDOWS_DAYS)
    counts = [
        f"count(*) FILTER (WHERE kind = '{kind}' AND event_time >= snapshot - "
        f"INTERVAL {days} DAY) AS offer_{label}_{days}d"
        for days in OFFER_WINDOWS_DAYS
        for label, kind in OFFER_EVENT_COUNTS.items()
    ]
    selects = [f"coalesce(a.{name}, 0) AS {name}" for name in offer_history_columns()]
    click_rate = _ratio(
        f"coalesce(a.offer_clicks_{long}d, 0)",
        f"coalesce(a.offer_impressions_{long}d, 0)",
    )
    return f"""
    WITH windowed AS (
        SELECT b.{CARD_NUMBER}, b.snapshot, e.kind, e.event_time, o.category
        FROM card_snaps b
        JOIN offer_events e ON e.{CARD_NUMBER} = b.{CARD_NUMBER}
            AND CAST(e.event_time AS TIMESTAMPTZ) < b.snapshot
            AND e.event_time >= b.snapshot - INTERVAL {long} DAY
        JOIN offers o ON o.{OFFER_ID} = e.{OFFER_ID}
    ), agg AS (
        SELECT {CARD_NUMBER}, snapshot, {", ".join(counts)},
            count(DISTINCT category) AS categories
        FROM windowed
        GROUP BY ALL
    ), per_category AS (
        -- The favourite category has the most clicks and redemptions; ties go to
        -- the first name in alphabetical order.
        SELECT {CARD_NUMBER}, snapshot, category,
            row_number() OVER (
                PARTITION BY {CARD_NUMBER}, snapshot
                ORDER BY count(*) DESC, category
            ) AS place
        FROM windowed
        WHERE kind <> 'impression'
        GROUP BY {CARD_NUMBER}, snapshot, category
    ), redeemed AS (
        SELECT b.{CARD_NUMBER}, b.snapshot,
            list_sort(list(DISTINCT e.{OFFER_ID})) AS offer_ids
        FROM card_snaps b
        JOIN offer_events e ON e.{CARD_NUMBER} = b.{CARD_NUMBER}
            AND CAST(e.event_time AS TIMESTAMPTZ) < b.snapshot
            AND e.kind = 'redemption'
        GROUP BY ALL
    )
    SELECT b.{CARD_KEY}, b.snapshot AS {EVENT_TIMESTAMP},
        {", ".join(selects)},
        {click_rate} AS offer_click_rate_{long}d,
        coalesce(a.categories, 0) AS offer_distinct_categories_{long}d,
        coalesce(f.category, '') AS favourite_category_{long}d,
        coalesce(r.offer_ids, CAST([] AS VARCHAR[])) AS redeemed_offer_ids
    FROM card_snaps b
    LEFT JOIN agg a ON a.{CARD_NUMBER} = b.{CARD_NUMBER} AND a.snapshot = b.snapshot
    LEFT JOIN per_category f ON f.{CARD_NUMBER} = b.{CARD_NUMBER}
        AND f.snapshot = b.snapshot AND f.place = 1
    LEFT JOIN redeemed r ON r.{CARD_NUMBER} = b.{CARD_NUMBER}
        AND r.snapshot = b.snapshot
    ORDER BY b.snapshot, b.{CARD_KEY}
    """


def offer_stats_sql() -> str:
    """Recent clicks and redemptions of every offer, its quota left and its rules."""
    days = OFFER_STATS_WINDOW_DAYS
    in_window = f"e.event_time >= s.snapshot - INTERVAL {days} DAY"
    min_age, max_age = NO_AGE_LIMIT
    return f"""
    WITH agg AS (
        SELECT e.{OFFER_ID}, s.snapshot,
            count(*) FILTER (WHERE e.kind = 'impression' AND {in_window})
                AS impressions,
            count(*) FILTER (WHERE e.kind = 'click' AND {in_window}) AS clicks,
            count(*) FILTER (WHERE e.kind = 'redemption' AND {in_window})
                AS redemptions,
            count(*) FILTER (WHERE e.kind = 'redemption') AS redemptions_ever
        FROM snaps s
        JOIN offer_events e ON CAST(e.event_time AS TIMESTAMPTZ) < s.snapshot
        GROUP BY ALL
    )
    SELECT o.{OFFER_ID}, s.snapshot AS {EVENT_TIMESTAMP},
        coalesce(a.clicks, 0) AS offer_clicks_{days}d,
        coalesce(a.redemptions, 0) AS offer_redemptions_{days}d,
        {_ratio("coalesce(a.clicks, 0)", "coalesce(a.impressions, 0)")}
            AS offer_ctr_{days}d,
        CAST(o.quota IS NOT NULL AS BIGINT) AS has_quota,
        CAST(greatest(coalesce(o.quota, 0) - coalesce(a.redemptions_ever, 0), 0)
             AS BIGINT) AS quota_left,
        CAST(o.valid_from AS TIMESTAMPTZ) AS valid_from,
        CAST(o.valid_to AS TIMESTAMPTZ) AS valid_to,
        o.region AS offer_region,
        CAST(coalesce(o.min_age, {min_age}) AS BIGINT) AS min_age,
        CAST(coalesce(o.max_age, {max_age}) AS BIGINT) AS max_age,
        CAST(o.requires_active_card AS BIGINT) AS requires_active_card,
        coalesce(o.{"need_id"}, '') AS offer_need_id,
        o.category AS offer_category,
        CAST(o.discount_pct AS DOUBLE) AS discount_pct
    FROM offers o
    CROSS JOIN snaps s
    LEFT JOIN agg a ON a.{OFFER_ID} = o.{OFFER_ID} AND a.snapshot = s.snapshot
    ORDER BY s.snapshot, o.{OFFER_ID}
    """


VIEW_QUERIES = {
    "card_profile": card_profile_sql,
    "push_engagement": push_engagement_sql,
    "service_use": service_use_sql,
    "offer_history": offer_history_sql,
    "offer_stats": offer_stats_sql,
    "post_stats": post_stats_sql,
}

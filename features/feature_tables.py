"""Point-in-time feature tables computed from the warehouse with DuckDB.

Every table holds one row per key and snapshot. A row stamped
``event_timestamp = t`` is computed only from events with ``event_time < t``, so a
training label observed from ``t`` on never sees its own future. Card-keyed tables
carry the keyed pseudonym ``card_key`` and never the card number.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from features.cards import pseudonyms
from features.errors import InputError
from features.schema import (
    CARD_KEY,
    CARD_NUMBER,
    EVENT_TIMESTAMP,
    NEED_CATEGORIES,
    OFFER_ID,
    POST_ID,
)
from features.times import utc_timestamp as to_utc

logger = logging.getLogger(__name__)

DEFAULT_SNAPSHOT_COUNT = 12
SERVICE_WINDOWS_DAYS = (30, 90, 365)
PUSH_WINDOW_DAYS = 90
OFFER_WINDOWS_DAYS = (90, 365)
OFFER_STATS_WINDOW_DAYS = 30
POST_WINDOW_DAYS = 90
NO_AGE_LIMIT = (0, 120)
US_PER_DAY = 86_400_000_000
US_PER_SECOND = 1_000_000
NO_TIME = np.iinfo(np.int64).min

CARD_VIEWS = ("card_profile", "push_engagement", "service_use", "offer_history")
VIEW_KEYS: dict[str, str] = {
    "card_profile": CARD_KEY,
    "push_engagement": CARD_KEY,
    "service_use": CARD_KEY,
    "offer_history": CARD_KEY,
    "offer_stats": OFFER_ID,
    "post_stats": POST_ID,
}


def default_snapshots(
    as_of: pd.Timestamp, count: int = DEFAULT_SNAPSHOT_COUNT
) -> list[pd.Timestamp]:
    """Monthly snapshot times ending at ``as_of`` (included), oldest first.

    Args:
        as_of: the instant the warehouse ends.
        count: how many monthly snapshots to take.

    Returns:
        ``count`` UTC timestamps one calendar month apart.
    """
    end = to_utc(as_of)
    return [end - pd.DateOffset(months=k) for k in reversed(range(count))]


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
        grid = _prepare(con, stamps, secret)
        paths = {}
        for view, build in VIEW_BUILDERS.items():
            started = time.perf_counter()
            table = build(con, grid)
            paths[view] = _write_atomically(_utc_timestamps(table), out_dir, view)
            logger.debug(
                "built %s: %d rows in %.2f s",
                view,
                table.num_rows,
                time.perf_counter() - started,
            )
            # Written: free it before the next view is built beside it.
            del table
    finally:
        con.close()
    logger.info("built %d feature tables over %d snapshots", len(paths), len(stamps))
    return paths


def _checked_snapshots(
    warehouse: Any, snapshots: Sequence[pd.Timestamp] | None
) -> list[pd.Timestamp]:
    as_of = to_utc(warehouse.as_of())
    if snapshots is None:
        return default_snapshots(as_of)
    stamps = sorted({to_utc(s) for s in snapshots})
    if not stamps:
        raise InputError(
            "snapshots: expected at least one timestamp, got an empty list; pass "
            "None for monthly snapshots over the last year"
        )
    if stamps[-1] > as_of:
        raise InputError(
            f"snapshots: expected times up to the warehouse's as_of {as_of}, got "
            f"{stamps[-1]}; features after the data ends would be empty"
        )
    return stamps


def _prepare(
    con: duckdb.DuckDBPyConnection, stamps: list[pd.Timestamp], secret: bytes
) -> SnapshotGrid:
    """Register snapshots, card pseudonyms and the card-by-snapshot base.

    Returns:
        The grid of card holders by snapshots that card-keyed tables fill.
    """
    con.execute("SET TimeZone = 'UTC'")
    con.execute(f"SET threads = {max(1, os.cpu_count() or 1)}")
    snapshot_frame = pd.DataFrame({"snapshot": pd.DatetimeIndex(stamps)})
    con.register("snapshot_frame", snapshot_frame)
    con.execute(
        "CREATE OR REPLACE TEMP TABLE snaps AS "
        "SELECT CAST(snapshot AS TIMESTAMPTZ) AS snapshot FROM snapshot_frame"
    )

    # Cards never issued get the latest possible time, so they exist nowhere.
    cards = con.execute(
        f"SELECT {CARD_NUMBER}, coalesce(epoch_us(CAST(issued_at AS TIMESTAMPTZ)), "
        f"{np.iinfo(np.int64).max}) AS issued_us FROM card_holders"
    ).fetchnumpy()
    card_numbers = [str(n) for n in cards[CARD_NUMBER]]
    card_keys = np.array(pseudonyms(card_numbers, secret))
    order = np.argsort(card_keys, kind="stable")
    card_index = np.empty(len(order), dtype=np.int64)
    card_index[order] = np.arange(len(order))
    keys = pa.table(
        {
            CARD_NUMBER: card_numbers,
            CARD_KEY: card_keys,
            "card_index": card_index,
        }
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
    snapshots_us = np.array([s.value // 1000 for s in stamps], dtype=np.int64)
    issued_us = np.asarray(cards["issued_us"], dtype=np.int64)[order]
    return SnapshotGrid(snapshots_us, card_keys[order], issued_us)


class SnapshotGrid:
    """Keys by snapshots: event counts in windows and latest event times.

    Every card-keyed table holds one row per card holder and snapshot after the
    card was issued, ordered by snapshot and then card key. Counts come from a
    difference array: an event adds one from the first snapshot after it up to
    the last snapshot whose window still reaches back to it, and a cumulative sum
    along the snapshots turns those steps into counts. That costs one pass over
    the events instead of a join of events with snapshots.

    Attributes:
        snapshots_us: snapshot times in microseconds since the epoch, ascending.
        card_keys: card pseudonyms, ascending; a card's position is its index.
        exists: whether each card was issued before each snapshot.
    """

    def __init__(
        self, snapshots_us: np.ndarray, card_keys: np.ndarray, issued_us: np.ndarray
    ) -> None:
        self.snapshots_us = snapshots_us
        self.card_keys = card_keys
        self.exists = issued_us[:, None] < snapshots_us[None, :]
        snapshot_rows, card_rows = np.nonzero(self.exists.T)
        self._row_cards = card_rows
        self._row_snapshots = snapshot_rows

    @property
    def cards(self) -> int:
        """The number of card holders."""
        return len(self.card_keys)

    def base_columns(self) -> dict[str, pa.Array]:
        """``card_key`` and ``event_timestamp`` of every row, in table order."""
        stamps = pa.array(
            self.snapshots_us[self._row_snapshots], pa.timestamp("us", tz="UTC")
        )
        return {
            CARD_KEY: pa.array(self.card_keys[self._row_cards]),
            EVENT_TIMESTAMP: stamps,
        }

    def rows(self, values: np.ndarray) -> pa.Array:
        """The values of a keys-by-snapshots matrix in table order; NaN is null."""
        flat = values.T[self.exists.T]
        if flat.dtype.kind == "f":
            return pa.array(flat, mask=np.isnan(flat))
        return pa.array(flat)

    def counts(
        self,
        keys: np.ndarray,
        times_us: np.ndarray,
        days: int | None = None,
        key_count: int | None = None,
    ) -> np.ndarray:
        """Events with ``snapshot - days <= time < snapshot``, by key and snapshot.

        Args:
            keys: the key index of each event (a card's position by default).
            times_us: event times in microseconds since the epoch.
            days: the window; all history before the snapshot when omitted.
            key_count: how many keys there are; the card count when omitted.
        """
        size = self.cards if key_count is None else key_count
        width = len(self.snapshots_us) + 1
        first = np.searchsorted(self.snapshots_us, times_us, side="right")
        if days is None:
            past = np.full_like(first, width - 1)
        else:
            reach = times_us + days * US_PER_DAY
            past = np.searchsorted(self.snapshots_us, reach, side="right")
        base = keys.astype(np.int64) * width
        steps = np.bincount(base + first, minlength=size * width)
        steps -= np.bincount(base + past, minlength=size * width)
        return steps.reshape(size, width).cumsum(axis=1)[:, :-1]

    def latest(self, keys: np.ndarray, times_us: np.ndarray) -> np.ndarray:
        """A card's latest event time before each snapshot; ``NO_TIME`` when none."""
        width = len(self.snapshots_us) + 1
        first = np.searchsorted(self.snapshots_us, times_us, side="right")
        latest = np.full(self.cards * width, NO_TIME, dtype=np.int64)
        np.maximum.at(latest, keys.astype(np.int64) * width + first, times_us)
        latest = np.maximum.accumulate(latest.reshape(self.cards, width), axis=1)
        return latest[:, :-1]

    def days_since(
        self, keys: np.ndarray, times_us: np.ndarray, days: int | None = None
    ) -> np.ndarray:
        """Days from a card's latest event before each snapshot; NaN when none.

        Whole seconds are counted, as DuckDB's ``date_diff('second', ...)`` does.
        With ``days``, events older than that window count as none.
        """
        latest = self.latest(keys, times_us)
        seconds = self.snapshots_us // US_PER_SECOND - latest // US_PER_SECOND
        result = seconds.astype(np.float64) / 86400.0
        missing = latest == NO_TIME
        if days is not None:
            missing |= latest < self.snapshots_us - days * US_PER_DAY
        result[missing] = np.nan
        return result


def _encoded(column: pa.ChunkedArray) -> tuple[np.ndarray, list[str]]:
    """Integer codes of a string column (-1 for null) and the distinct values."""
    encoded = pc.dictionary_encode(column.combine_chunks())
    codes = pc.fill_null(encoded.indices, -1).to_numpy(zero_copy_only=False)
    return codes.astype(np.int64), [str(v) for v in encoded.dictionary.to_pylist()]


def _card_events(
    con: duckdb.DuckDBPyConnection, table: str, extra: str, joins: str = ""
) -> pa.Table:
    """Events of known cards before the last snapshot, keyed by card position."""
    return con.sql(
        f"""
        SELECT k.card_index, {extra},
            epoch_us(CAST(e.event_time AS TIMESTAMPTZ)) AS time_us
        FROM {table} e
        JOIN card_keys k ON k.{CARD_NUMBER} = e.{CARD_NUMBER}
        {joins}
        WHERE CAST(e.event_time AS TIMESTAMPTZ) < (SELECT max(snapshot) FROM snaps)
        """
    ).to_arrow_table()


def _numbers(table: pa.Table, column: str) -> np.ndarray:
    return table.column(column).to_numpy().astype(np.int64)


def _rate(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    """A rate that is 0 when nothing was counted."""
    with np.errstate(divide="ignore", invalid="ignore"):
        rate = numerator / denominator
    return np.where(denominator > 0, rate, 0.0)


def _utc_timestamps(table: pa.Table) -> pa.Table:
    """Store every timestamp column as microseconds in UTC."""
    fields = []
    for field in table.schema:
        if pa.types.is_timestamp(field.type):
            field = field.with_type(pa.timestamp("us", tz="UTC"))
        fields.append(field)
    return table.cast(pa.schema(fields))


def _write_atomically(table: pa.Table, out_dir: Path, view: str) -> Path:
    path = out_dir / f"{view}.parquet"
    aside = out_dir / f".{view}.parquet.partial"
    pq.write_table(table, aside, compression="zstd")
    aside.replace(path)
    return path


def _days_between(later: str, earlier: str) -> str:
    """SQL for the whole days from ``earlier`` to ``later``, as a double."""
    return f"CAST(date_diff('second', {earlier}, {later}) AS DOUBLE) / 86400.0"


def _ratio(numerator: str, denominator: str) -> str:
    """SQL for a rate that is 0 when nothing was counted."""
    return (
        f"CASE WHEN {denominator} > 0 "
        f"THEN CAST({numerator} AS DOUBLE) / {denominator} ELSE 0.0 END"
    )


def card_profile_table(con: duckdb.DuckDBPyConnection, grid: SnapshotGrid) -> pa.Table:
    """Demographics, card status, tenure and consent of every card at a snapshot."""
    profile = con.sql(card_profile_sql()).to_arrow_table()
    if profile.num_rows != grid.exists.sum():
        raise InputError(
            f"card_profile: expected {grid.exists.sum()} card rows, got "
            f"{profile.num_rows}; check that card holders are unique"
        )

    records = con.sql(
        f"""
        SELECT k.card_index, x.purpose, x.granted,
            epoch_us(CAST(x.recorded_at AS TIMESTAMPTZ)) AS time_us
        FROM consents x JOIN card_keys k ON k.{CARD_NUMBER} = x.{CARD_NUMBER}
        WHERE x.granted IS NOT NULL AND x.recorded_at IS NOT NULL
        """
    ).to_arrow_table()
    purposes = records.column("purpose").to_numpy(zero_copy_only=False)
    granted = records.column("granted").to_numpy(zero_copy_only=False).astype(bool)
    cards, times = _numbers(records, "card_index"), _numbers(records, "time_us")
    for column, purpose in (
        ("marketing_consent", "marketing_push"),
        ("analytics_consent", "analytics"),
    ):
        # The latest record before the snapshot decides.
        given = (purposes == purpose) & granted
        withdrawn = (purposes == purpose) & ~granted
        latest_given = grid.latest(cards[given], times[given])
        latest_withdrawn = grid.latest(cards[withdrawn], times[withdrawn])
        consent = (latest_given > latest_withdrawn).astype(np.int64)
        profile = profile.append_column(column, grid.rows(consent))
    return profile


def card_profile_sql() -> str:
    """Demographics, card status and tenure of every card at a snapshot."""
    tenure = _days_between("b.snapshot", "CAST(c.issued_at AS TIMESTAMPTZ)")
    return f"""
    WITH status_at AS (
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
        CAST(floor({tenure}) AS BIGINT) AS tenure_days
    FROM card_snaps b
    JOIN card_holders c USING ({CARD_NUMBER})
    LEFT JOIN posts p ON p.{POST_ID} = c.{POST_ID}
    JOIN status_at st ON st.{CARD_NUMBER} = b.{CARD_NUMBER}
        AND st.snapshot = b.snapshot
    ORDER BY b.snapshot, b.{CARD_KEY}
    """


def push_engagement_table(
    con: duckdb.DuckDBPyConnection, grid: SnapshotGrid
) -> pa.Table:
    """Push messages sent, opened and clicked lately, and whether pushes are blocked."""
    events = _card_events(con, "push_events", "e.kind")
    codes, kinds = _encoded(events.column("kind"))
    cards, times = _numbers(events, "card_index"), _numbers(events, "time_us")

    def of_kind(kind: str) -> tuple[np.ndarray, np.ndarray]:
        chosen = codes == (kinds.index(kind) if kind in kinds else -2)
        return cards[chosen], times[chosen]

    days = PUSH_WINDOW_DAYS
    sent = grid.counts(*of_kind("sent"), days)
    opened = grid.counts(*of_kind("opened"), days)
    clicked = grid.counts(*of_kind("clicked"), days)
    blocked = (grid.counts(*of_kind("blocked")) > 0).astype(np.int64)
    return pa.table(
        {
            **grid.base_columns(),
            f"push_sent_{days}d": grid.rows(sent),
            f"push_opened_{days}d": grid.rows(opened),
            f"push_clicked_{days}d": grid.rows(clicked),
            f"push_open_rate_{days}d": grid.rows(_rate(opened, sent)),
            f"push_click_rate_{days}d": grid.rows(_rate(clicked, sent)),
            "push_blocked": grid.rows(blocked),
            "days_since_push_open": grid.rows(grid.days_since(*of_kind("opened"))),
        }
    )


def service_use_columns() -> list[str]:
    """Feature columns of ``service_use``, in table order."""
    columns = []
    for need in NEED_CATEGORIES:
        columns += [f"svc_{need}_{days}d" for days in SERVICE_WINDOWS_DAYS]
        columns.append(f"days_since_{need}")
    totals = [f"svc_total_{days}d" for days in SERVICE_WINDOWS_DAYS]
    return [*columns, *totals, "distinct_needs_365d"]


def service_use_table(con: duckdb.DuckDBPyConnection, grid: SnapshotGrid) -> pa.Table:
    """Service use per need category over 30, 90 and 365 days before a snapshot."""
    longest = max(SERVICE_WINDOWS_DAYS)
    events = _card_events(con, "service_events", "e.need_id")
    codes, needs = _encoded(events.column("need_id"))
    cards, times = _numbers(events, "card_index"), _numbers(events, "time_us")

    columns: dict[str, pa.Array] = grid.base_columns()
    distinct = np.zeros(grid.exists.shape, dtype=np.int64)
    for code in range(len(needs)):
        chosen = codes == code
        distinct += grid.counts(cards[chosen], times[chosen], longest) > 0
    for need in NEED_CATEGORIES:
        chosen = codes == (needs.index(need) if need in needs else -2)
        of_need = cards[chosen], times[chosen]
        for days in SERVICE_WINDOWS_DAYS:
            columns[f"svc_{need}_{days}d"] = grid.rows(grid.counts(*of_need, days))
        since = grid.days_since(*of_need, days=longest)
        columns[f"days_since_{need}"] = grid.rows(since)
    for days in SERVICE_WINDOWS_DAYS:
        columns[f"svc_total_{days}d"] = grid.rows(grid.counts(cards, times, days))
    columns[f"distinct_needs_{longest}d"] = grid.rows(distinct)
    return pa.table(columns)


OFFER_EVENT_COUNTS = {
    "impressions": "impression",
    "clicks": "click",
    "redemptions": "redemption",
}


def offer_history_columns() -> list[str]:
    """Count columns of ``offer_history``, in table order."""
    return [
        f"offer_{label}_{days}d"
        for days in OFFER_WINDOWS_DAYS
        for label in OFFER_EVENT_COUNTS
    ]


def offer_history_table(con: duckdb.DuckDBPyConnection, grid: SnapshotGrid) -> pa.Table:
    """A card's impressions, clicks and redemptions of offers before a snapshot."""
    long = max(OFFER_WINDOWS_DAYS)
    events = _card_events(
        con,
        "offer_events",
        "e.kind, o.category",
        f"JOIN offers o ON o.{OFFER_ID} = e.{OFFER_ID}",
    )
    kind_codes, kinds = _encoded(events.column("kind"))
    category_codes, categories = _encoded(events.column("category"))
    cards, times = _numbers(events, "card_index"), _numbers(events, "time_us")

    columns: dict[str, pa.Array] = grid.base_columns()
    counts: dict[str, np.ndarray] = {}
    for days in OFFER_WINDOWS_DAYS:
        for label, kind in OFFER_EVENT_COUNTS.items():
            chosen = kind_codes == (kinds.index(kind) if kind in kinds else -2)
            name = f"offer_{label}_{days}d"
            counts[name] = grid.counts(cards[chosen], times[chosen], days)
            columns[name] = grid.rows(counts[name])
    click_rate = _rate(
        counts[f"offer_clicks_{long}d"], counts[f"offer_impressions_{long}d"]
    )
    columns[f"offer_click_rate_{long}d"] = grid.rows(click_rate)

    # The favourite category has the most clicks and redemptions; ties go to the
    # first name in alphabetical order.
    seen = np.zeros(grid.exists.shape, dtype=np.int64)
    best = np.zeros(grid.exists.shape, dtype=np.int64)
    favourite = np.full(grid.exists.shape, -1, dtype=np.int64)
    impression = kinds.index("impression") if "impression" in kinds else -2
    ordered = sorted(range(len(categories)), key=categories.__getitem__)
    for place, code in enumerate(ordered):
        of_category = category_codes == code
        seen += grid.counts(cards[of_category], times[of_category], long) > 0
        engaged = of_category & (kind_codes != impression)
        engagements = grid.counts(cards[engaged], times[engaged], long)
        favourite = np.where(engagements > best, place, favourite)
        best = np.maximum(best, engagements)
    names = np.array([*(categories[code] for code in ordered), ""], dtype=object)
    columns[f"offer_distinct_categories_{long}d"] = grid.rows(seen)
    columns[f"favourite_category_{long}d"] = grid.rows(names[favourite])

    history = pa.table(columns).append_column(
        "_row", pa.array(np.arange(len(columns[CARD_KEY])))
    )
    con.register("offer_history_counts", history)
    try:
        return con.sql(redeemed_offers_sql()).to_arrow_table()
    finally:
        con.unregister("offer_history_counts")


def redeemed_offers_sql() -> str:
    """Adds every offer a card redeemed before a snapshot to its history counts."""
    return f"""
    WITH first_redeemed AS (
        SELECT {CARD_NUMBER}, {OFFER_ID},
            min(CAST(event_time AS TIMESTAMPTZ)) AS first_at
        FROM offer_events
        WHERE kind = 'redemption'
        GROUP BY ALL
    ), redeemed AS (
        SELECT b.{CARD_KEY}, b.snapshot, list_sort(list(f.{OFFER_ID})) AS offer_ids
        FROM card_snaps b
        JOIN first_redeemed f ON f.{CARD_NUMBER} = b.{CARD_NUMBER}
            AND f.first_at < b.snapshot
        GROUP BY ALL
    )
    SELECT h.* EXCLUDE (_row),
        coalesce(r.offer_ids, CAST([] AS VARCHAR[])) AS redeemed_offer_ids
    FROM offer_history_counts h
    LEFT JOIN redeemed r ON r.{CARD_KEY} = h.{CARD_KEY}
        AND r.snapshot = h.{EVENT_TIMESTAMP}
    ORDER BY h._row
    """


def offer_stats_table(con: duckdb.DuckDBPyConnection, grid: SnapshotGrid) -> pa.Table:
    """Recent clicks and redemptions of every offer, its quota left and its rules."""
    events = con.sql(
        f"""
        SELECT {OFFER_ID}, kind, epoch_us(CAST(event_time AS TIMESTAMPTZ)) AS time_us
        FROM offer_events
        WHERE CAST(event_time AS TIMESTAMPTZ) < (SELECT max(snapshot) FROM snaps)
        """
    ).to_arrow_table()
    offer_codes, offers = _encoded(events.column(OFFER_ID))
    kind_codes, kinds = _encoded(events.column("kind"))
    times = _numbers(events, "time_us")

    def count(kind: str, days: int | None) -> np.ndarray:
        chosen = kind_codes == (kinds.index(kind) if kind in kinds else -2)
        found = grid.counts(offer_codes[chosen], times[chosen], days, len(offers))
        return found.ravel()

    days = OFFER_STATS_WINDOW_DAYS
    snapshots = len(grid.snapshots_us)
    counts = pa.table(
        {
            OFFER_ID: pa.array(np.repeat(np.array(offers, dtype=object), snapshots)),
            "snapshot": pa.array(
                np.tile(grid.snapshots_us, len(offers)), pa.timestamp("us", tz="UTC")
            ),
            "impressions": count("impression", days),
            "clicks": count("click", days),
            "redemptions": count("redemption", days),
            "redemptions_ever": count("redemption", None),
        }
    )
    con.register("offer_counts", counts)
    try:
        return con.sql(offer_stats_sql()).to_arrow_table()
    finally:
        con.unregister("offer_counts")


def offer_stats_sql() -> str:
    """Offer rules beside the window counts registered as ``offer_counts``."""
    days = OFFER_STATS_WINDOW_DAYS
    min_age, max_age = NO_AGE_LIMIT
    return f"""
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
    LEFT JOIN offer_counts a ON a.{OFFER_ID} = o.{OFFER_ID}
        AND a.snapshot = s.snapshot
    ORDER BY s.snapshot, o.{OFFER_ID}
    """


def post_stats_columns() -> list[str]:
    """Feature columns of ``post_stats``, in table order."""
    per_need = [f"post_{need}_per_card_{POST_WINDOW_DAYS}d" for need in NEED_CATEGORIES]
    return ["post_card_count", "post_active_card_count", *per_need]


def post_stats_sql() -> str:
    """Card counts of every post and its service use per card by need."""
    days = POST_WINDOW_DAYS
    per_need = ", ".join(
        f"count(*) FILTER (WHERE e.need_id = '{need}') AS n_{need}"
        for need in NEED_CATEGORIES
    )
    rates = ", ".join(
        f"{_ratio(f'coalesce(u.n_{need}, 0)', 'coalesce(c.cards, 0)')} "
        f"AS post_{need}_per_card_{days}d"
        for need in NEED_CATEGORIES
    )
    return f"""
    WITH cards AS (
        SELECT c.{POST_ID}, b.snapshot, count(*) AS cards,
            count(*) FILTER (WHERE c.card_status = 'active' AND (
                c.expires_at IS NULL
                OR CAST(c.expires_at AS TIMESTAMPTZ) > b.snapshot)) AS active
        FROM card_snaps b JOIN card_holders c USING ({CARD_NUMBER})
        GROUP BY ALL
    ), used AS (
        SELECT e.{POST_ID}, s.snapshot, {per_need}
        FROM snaps s
        JOIN service_events e ON CAST(e.event_time AS TIMESTAMPTZ) < s.snapshot
            AND e.event_time >= s.snapshot - INTERVAL {days} DAY
        GROUP BY ALL
    )
    SELECT p.{POST_ID}, s.snapshot AS {EVENT_TIMESTAMP},
        coalesce(c.cards, 0) AS post_card_count,
        coalesce(c.active, 0) AS post_active_card_count,
        {rates}
    FROM posts p
    CROSS JOIN snaps s
    LEFT JOIN cards c ON c.{POST_ID} = p.{POST_ID} AND c.snapshot = s.snapshot
    LEFT JOIN used u ON u.{POST_ID} = p.{POST_ID} AND u.snapshot = s.snapshot
    ORDER BY s.snapshot, p.{POST_ID}
    """


TableBuilder = Callable[[duckdb.DuckDBPyConnection, SnapshotGrid], pa.Table]


def _from_sql(sql: Callable[[], str]) -> TableBuilder:
    def build(con: duckdb.DuckDBPyConnection, grid: SnapshotGrid) -> pa.Table:
        return con.sql(sql()).to_arrow_table()

    return build


VIEW_BUILDERS: dict[str, TableBuilder] = {
    "card_profile": card_profile_table,
    "push_engagement": push_engagement_table,
    "service_use": service_use_table,
    "offer_history": offer_history_table,
    "offer_stats": offer_stats_table,
    "post_stats": _from_sql(post_stats_sql),
}

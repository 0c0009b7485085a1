"""Training and holdout sets: labels from the warehouse, features from the store.

Labels are counted with DuckDB straight from the warehouse tables. A label observed
at time ``t`` covers the window ``[t, t + horizon)``; its features come from the
feature service at ``t`` through a point-in-time join, so they only see events
before ``t``. Card numbers appear only inside this module's warehouse queries: every
frame it returns is keyed by the pseudonym ``card_key``.

Time layout around the cut-off ``c`` with horizon ``h`` and ``w`` label windows::

    training labels : [c - w*h, c - (w-1)*h) ... [c - h, c)   (all end by c)
    holdout labels  : [c, c + h)

Nothing observed at or after ``c`` reaches a training frame.
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass

import duckdb
import numpy as np
import pandas as pd

from features.cards import pseudonyms
from features.errors import NotReadyError
from features.schema import (
    CARD_KEY,
    CARD_NUMBER,
    EVENT_TIMESTAMP,
    NEED_CATEGORIES,
    NEED_ID,
    OFFER_ID,
    ORACLE_NEEDS_FILE,
    ORACLE_OFFERS_FILE,
    POST_ID,
)
from features.settings import Settings
from features.warehouse import Warehouse
from training.config import OFFERS_SERVICE

logger = logging.getLogger(__name__)

NEEDS = tuple(NEED_CATEGORIES)
RELEVANCE_GRADES = {"click": 1, "redemption": 2}
RELEVANCE = "relevance"
WEIGHT = "weight"


@dataclass(frozen=True)
class TimeSplit:
    """Label times before the cut-off and the holdout window after it.

    Attributes:
        cutoff: start of the holdout; training sees only what happened before it.
        horizon: length of every label window.
        train_times: start of each training label window, oldest first.
    """

    cutoff: pd.Timestamp
    horizon: pd.Timedelta
    train_times: tuple[pd.Timestamp, ...]

    @property
    def holdout_end(self) -> pd.Timestamp:
        """End (exclusive) of the holdout window."""
        return self.cutoff + self.horizon

    @property
    def label(self) -> str:
        """The holdout window as text, the key of "the same holdout"."""
        return f"{self.cutoff.isoformat()}/{self.holdout_end.isoformat()}"


def time_split(cutoff: pd.Timestamp, horizon_days: int, windows: int) -> TimeSplit:
    """Monthly label windows that end by the cut-off, and the holdout after it."""
    horizon = pd.Timedelta(days=horizon_days)
    times = tuple(cutoff - horizon * i for i in range(windows, 0, -1))
    return TimeSplit(cutoff=cutoff, horizon=horizon, train_times=times)


class LabelSource:
    """Counts labels and interactions in the warehouse; returns pseudonymised frames.

    Args:
        warehouse: the card-keyed warehouse.
        secret: the pseudonym secret (``Settings.secret_bytes``).
    """

    def __init__(self, warehouse: Warehouse, secret: bytes) -> None:
        self.warehouse = warehouse
        self._secret = secret
        self._keys: pd.DataFrame | None = None

    def _connect(self) -> duckdb.DuckDBPyConnection:
        connection = self.warehouse.connect()
        connection.execute("SET TimeZone = 'UTC'")
        connection.register("card_key_map", self._card_keys())
        return connection

    def _card_keys(self) -> pd.DataFrame:
        """Card number to card key, computed once per source."""
        if self._keys is None:
            numbers = self.warehouse.read_table("card_holders", [CARD_NUMBER])
            numbers = numbers[CARD_NUMBER].astype(str).tolist()
            self._keys = pd.DataFrame(
                {CARD_NUMBER: numbers, CARD_KEY: pseudonyms(numbers, self._secret)}
            )
        return self._keys

    def cards_at(self, times: Sequence[pd.Timestamp]) -> pd.DataFrame:
        """Cards issued before each time, with their post.

        Returns:
            ``card_key, post_id, event_timestamp``, sorted by time then card key.
        """
        connection = self._connect()
        try:
            connection.register("label_times", _times_frame(times))
            frame = connection.execute(
                f"""
                SELECT k.{CARD_KEY}, c.{POST_ID}, t.t AS {EVENT_TIMESTAMP}
                FROM card_holders c
                JOIN card_key_map k USING ({CARD_NUMBER})
                JOIN label_times t ON CAST(c.issued_at AS TIMESTAMPTZ) < t.t
                ORDER BY t.t, k.{CARD_KEY}
                """
            ).df()
        finally:
            connection.close()
        return _utc(frame)

    def need_labels(
        self, times: Sequence[pd.Timestamp], horizon: pd.Timedelta
    ) -> pd.DataFrame:
        """Which needs each card used in ``[t, t + horizon)`` for every time ``t``.

        Returns:
            ``card_key, post_id, event_timestamp`` and one 0/1 column per need id,
            for every card issued before ``t``.
        """
        entities = self.cards_at(times)
        connection = self._connect()
        try:
            connection.register("label_times", _times_frame(times))
            used = connection.execute(
                f"""
                SELECT DISTINCT k.{CARD_KEY}, t.t AS {EVENT_TIMESTAMP}, e.{NEED_ID}
                FROM service_events e
                JOIN card_key_map k USING ({CARD_NUMBER})
                JOIN label_times t
                  ON CAST(e.event_time AS TIMESTAMPTZ) >= t.t
                 AND CAST(e.event_time AS TIMESTAMPTZ) < t.t + ?
                """,
                [horizon.to_pytimedelta()],
            ).df()
        finally:
            connection.close()
        used = _utc(used)
        used["used"] = 1
        wide = used.pivot_table(
            index=[CARD_KEY, EVENT_TIMESTAMP],
            columns=NEED_ID,
            values="used",
            aggfunc="max",
            fill_value=0,
        )
        wide = wide.reindex(columns=list(NEEDS), fill_value=0)
        labelled = entities.join(wide, on=[CARD_KEY, EVENT_TIMESTAMP])
        labelled[list(NEEDS)] = labelled[list(NEEDS)].fillna(0).astype(np.int8)
        return labelled.reset_index(drop=True)

    def offer_labels(self, start: pd.Timestamp, horizon: pd.Timedelta) -> pd.DataFrame:
        """Graded relevance of the offers each card engaged with in the window.

        A redemption grades 2, a click 1 (the highest grade per pair wins).

        Returns:
            ``card_key, offer_id, relevance`` for pairs with relevance of at least 1.
        """
        grades = " ".join(
            f"WHEN '{kind}' THEN {grade}" for kind, grade in RELEVANCE_GRADES.items()
        )
        frame = self._offer_pairs(
            f"max(CASE e.kind {grades} ELSE 0 END)",
            RELEVANCE,
            "CAST(e.event_time AS TIMESTAMPTZ) >= ? "
            "AND CAST(e.event_time AS TIMESTAMPTZ) < ?",
            [start.to_pydatetime(), (start + horizon).to_pydatetime()],
        )
        frame[RELEVANCE] = frame[RELEVANCE].astype(np.int8)
        return frame

    def interactions_before(
        self, end: pd.Timestamp, weights: Mapping[str, float]
    ) -> pd.DataFrame:
        """Card x offer interaction weights from offer events before ``end``.

        Args:
            end: only events strictly before this time count.
            weights: weight per event kind (impression, click, redemption).

        Returns:
            ``card_key, offer_id, weight`` with positive weights.
        """
        cases = " ".join(
            f"WHEN '{kind}' THEN {float(weight)!r}" for kind, weight in weights.items()
        )
        return self._offer_pairs(
            f"sum(CASE e.kind {cases} ELSE 0.0 END)",
            WEIGHT,
            "CAST(e.event_time AS TIMESTAMPTZ) < ?",
            [end.to_pydatetime()],
        )

    def _offer_pairs(
        self, aggregate: str, name: str, where: str, parameters: list[object]
    ) -> pd.DataFrame:
        """Card key x offer pairs of the offer events matching ``where``.

        Args:
            aggregate: SQL aggregate over the events of one pair (alias ``e``).
            name: column name of the aggregate.
            where: SQL condition on the events, with ``?`` parameters.
            parameters: values of those parameters.

        Returns:
            ``card_key, offer_id, <name>`` for pairs whose aggregate is positive,
            sorted by card key and offer.
        """
        connection = self._connect()
        try:
            return connection.execute(
                f"""
                SELECT k.{CARD_KEY}, e.{OFFER_ID}, {aggregate} AS {name}
                FROM offer_events e
                JOIN card_key_map k USING ({CARD_NUMBER})
                WHERE {where}
                GROUP BY ALL
                HAVING {aggregate} > 0
                ORDER BY 1, 2
                """,
                parameters,
            ).df()
        finally:
            connection.close()

    def card_segments(self, at: pd.Timestamp) -> pd.DataFrame:
        """Post, country, language, age band and status of every card at ``at``.

        Returns:
            ``card_key, post_id, country, language, age, generation, card_status,
            consent_marketing``, one row per card issued before ``at``.
        """
        connection = self._connect()
        try:
            frame = connection.execute(
                f"""
                WITH consent AS (
                    SELECT {CARD_NUMBER},
                           arg_max(granted, recorded_at) AS granted
                    FROM consents
                    WHERE purpose = 'marketing_push'
                      AND CAST(recorded_at AS TIMESTAMPTZ) < ?
                    GROUP BY ALL
                )
                SELECT k.{CARD_KEY}, c.{POST_ID}, c.country, c.language,
                       CAST(year(CAST(? AS TIMESTAMPTZ)) - c.birth_year AS INTEGER)
                           AS age,
                       CAST(c.generation AS INTEGER) AS generation,
                       CASE WHEN c.expires_at IS NOT NULL
                                 AND CAST(c.expires_at AS TIMESTAMPTZ) <= ?
                            THEN 'expired' ELSE c.card_status END AS card_status,
                       coalesce(x.granted, false) AS consent_marketing
                FROM card_holders c
                JOIN card_key_map k USING ({CARD_NUMBER})
                LEFT JOIN consent x USING ({CARD_NUMBER})
                WHERE CAST(c.issued_at AS TIMESTAMPTZ) < ?
                ORDER BY k.{CARD_KEY}
                """,
                [at.to_pydatetime()] * 4,
            ).df()
        finally:
            connection.close()
        frame["consent_marketing"] = frame["consent_marketing"].astype(bool)
        return frame

    def oracle_needs(
        self, split: TimeSplit, cards: Collection[str] | None = None
    ) -> pd.DataFrame | None:
        """The generator's true need probabilities for the holdout, if stored.

        Args:
            split: the time split whose holdout the oracle must describe.
            cards: card keys to read the oracle of; every card when omitted or
                empty.

        Returns:
            ``card_key`` and one column per need id, or ``None`` when the warehouse
            has no oracle for this holdout window.
        """
        frame = self._oracle(ORACLE_NEEDS_FILE, NEED_ID, split, cards)
        if frame is None:
            return None
        wide = frame.pivot_table(
            index=CARD_KEY, columns=NEED_ID, values="probability", aggfunc="mean"
        )
        return wide.reindex(columns=list(NEEDS)).reset_index()

    def oracle_offers(
        self, split: TimeSplit, cards: Collection[str] | None = None
    ) -> pd.DataFrame | None:
        """The generator's true offer probabilities for the holdout, if stored.

        Args:
            split: the time split whose holdout the oracle must describe.
            cards: card keys to read the oracle of; every card when omitted or
                empty.

        Returns:
            ``card_key, offer_id, probability``, or ``None`` without an oracle.
        """
        return self._oracle(ORACLE_OFFERS_FILE, OFFER_ID, split, cards)

    def _oracle(
        self,
        file_name: str,
        item: str,
        split: TimeSplit,
        cards: Collection[str] | None = None,
    ) -> pd.DataFrame | None:
        path = self.warehouse.directory / file_name
        if not path.exists():
            return None
        if not cards:
            oracle = pd.read_parquet(path)
        else:
            # Only the rows of the wanted cards are read, in the file's order.
            keys = self._card_keys()
            numbers = keys.loc[keys[CARD_KEY].isin(set(cards)), CARD_NUMBER]
            oracle = pd.read_parquet(
                path, filters=[(CARD_NUMBER, "in", numbers.tolist() or [""])]
            )
        starts = pd.to_datetime(oracle["window_start"], utc=True)
        # The oracle describes one window; it serves when it starts at the cut-off.
        matching = oracle[(starts - split.cutoff).abs() <= pd.Timedelta(days=1)]
        if matching.empty:
            logger.info(
                "%s holds no window starting at %s; no oracle for this holdout",
                file_name,
                split.cutoff,
            )
            return None
        keys = self._card_keys()
        numbers = matching[CARD_NUMBER].astype(str)
        keyed = matching.assign(**{CARD_NUMBER: numbers}).merge(keys, on=CARD_NUMBER)
        return keyed[[CARD_KEY, item, "probability"]].reset_index(drop=True)


def point_in_time_features(
    entities: pd.DataFrame, service: str, settings: Settings
) -> pd.DataFrame:
    """Features of ``service`` for every entity row, as of its ``event_timestamp``.

    Args:
        entities: entity keys of the service plus ``event_timestamp``; other
            columns (labels) are carried through.
        service: feature service name (``needs_v1`` or ``offers_v1``).
        settings: locate the feature store.

    Returns:
        The entity rows, in the order given, with the feature columns added.

    Raises:
        NotReadyError: when the store returns a different number of rows.
    """
    from features.store import features_at_snapshots, historical_features

    frame = features_at_snapshots(entities, service, settings)
    if frame is None:
        frame = historical_features(entities, service, settings, engine="duckdb")
    if len(frame) != len(entities):
        raise NotReadyError(
            f"expected {len(entities)} rows from feature service {service!r}, got "
            f"{len(frame)}; rebuild the feature tables ('precision features build')"
        )
    return frame.reset_index(drop=True)


def offers_service_frames(
    settings: Settings, cards: list[str], offers: list[str], at: pd.Timestamp
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Card features and offer facts of the offers_v1 service at one time.

    Returns:
        ``card_key`` with the card-level features, and ``offer_id`` with the offer
        facts (the ``offer_stats`` view).
    """
    from features.repo.definitions import SERVICE_VIEWS, feature_names

    card_columns = [
        name
        for view in SERVICE_VIEWS[OFFERS_SERVICE]
        if view != "offer_stats"
        for name in feature_names(view)
    ]
    offer_columns = list(feature_names("offer_stats"))
    # One join for both: each view's table is read once, and every row's
    # features depend on its own keys and time only.
    rows = pd.DataFrame(
        {
            CARD_KEY: [*cards, *[cards[0]] * len(offers)],
            OFFER_ID: [*[offers[0]] * len(cards), *offers],
            EVENT_TIMESTAMP: at,
        }
    )
    frame = point_in_time_features(rows, OFFERS_SERVICE, settings)
    del rows
    card_frame = frame[[CARD_KEY, *card_columns]].iloc[: len(cards)]
    offer_frame = frame[[OFFER_ID, *offer_columns]].iloc[len(cards) :]
    return card_frame, offer_frame.reset_index(drop=True)


def sample_cards(frame: pd.DataFrame, limit: int | None, seed: int) -> pd.DataFrame:
    """At most ``limit`` cards per event timestamp, chosen reproducibly by seed.

    The frame is returned as it is when no timestamp has more than ``limit`` rows.
    """
    if limit is None or frame.groupby(EVENT_TIMESTAMP).size().le(limit).all():
        return frame
    parts = []
    for _, group in frame.groupby(EVENT_TIMESTAMP, sort=True):
        take = min(limit, len(group))
        parts.append(group.sample(n=take, random_state=seed).sort_values(CARD_KEY))
    return pd.concat(parts, ignore_index=True)


def sample_keys(
    keys: Sequence[str] | pd.Series, limit: int | None, seed: int, stream: int = 0
) -> list[str]:
    """The distinct keys, or a seeded sample of ``limit`` of them, sorted.

    Args:
        keys: keys in any order, repeats allowed.
        limit: how many to keep at most; ``None`` keeps every key.
        seed: the run's seed.
        stream: tells apart samples drawn with the same seed (one per window).

    Returns:
        Sorted distinct keys; every one of them when there are at most ``limit``.
    """
    distinct = sorted(set(keys))
    if limit is None or len(distinct) <= limit:
        return distinct
    rng = np.random.default_rng([seed, stream])
    chosen = rng.choice(len(distinct), size=limit, replace=False)
    return [distinct[i] for i in np.sort(chosen)]


def _times_frame(times: Sequence[pd.Timestamp]) -> pd.DataFrame:
    """Label times as a one-column frame of UTC timestamps named ``t``."""
    return pd.DataFrame({"t": pd.DatetimeIndex(list(times)).tz_convert("UTC")})


def _utc(frame: pd.DataFrame) -> pd.DataFrame:
    """Event timestamps as ``datetime64[ns, UTC]``."""
    if EVENT_TIMESTAMP in frame.columns:
        frame[EVENT_TIMESTAMP] = pd.to_datetime(frame[EVENT_TIMESTAMP], utc=True)
    return frame

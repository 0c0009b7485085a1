"""Segment previews for campaign managers, over the batch-scored propensities.

A preview answers "who is in this group?" with counts only: size, how many can be
reached (marketing consent), expected responders, breakdowns by post, age band and
language, a propensity histogram and the offers that rank best for the group. It
never returns a card number or a pseudonym.

Small-count rule (k-anonymity, k = 10 by default):

1. Primary: every count below k is shown as ``"fewer than k"``. A breakdown lists
   the categories present in the segment; the histogram always lists its bins, so a
   bin may hold zero and is then hidden too.
2. Complementary: a breakdown always sums to the published segment size, so the
   hidden cells' total can be worked out. Whenever a breakdown hides a cell, it also
   hides its smallest visible cells, shown as ``"hidden"``, until the hidden cells
   together hold at least ``k * (c + 1) - 1`` card holders, where ``c`` is the number
   of cells hidden this way (at least one). Subtracting then leaves every small
   cell anywhere between 0 and k - 1, which is what ``"fewer than k"`` says anyway.
   When even hiding every cell cannot meet that, every cell shows ``"hidden"``, so
   the labels themselves tell nothing.
   The reachable count is the visible half of the pair (reachable, not reachable)
   and follows the same rule.
3. A segment smaller than k shows nothing but ``"fewer than k"``.

Comparing two previews whose filters differ by a few people (a differencing attack
across queries) is not prevented; only each single preview is k-anonymous.

The in-memory index keeps every column as a numpy array of category codes, so a
preview is a handful of boolean masks and ``bincount`` calls (milliseconds for a
million card holders).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from features.errors import InputError, NotReadyError
from features.schema import CARD_KEY, NEED_CATEGORIES, OFFER_ID, POST_ID
from serving.schemas import (
    Count,
    CountCell,
    HistogramBin,
    SegmentOffer,
    SegmentPreview,
    SegmentRequest,
)

logger = logging.getLogger(__name__)

PROPENSITIES_FILE = "propensities.parquet"
TOP_OFFERS_FILE = "top_offers.parquet"
PROPENSITY_PREFIX = "p_"
FILTER_DIMENSIONS = (POST_ID, "country", "language", "age_band", "generation")
FILTER_DIMENSIONS += ("card_status",)
BREAKDOWN_DIMENSIONS = (POST_ID, "age_band", "language")
HISTOGRAM_BINS = 10
OFFER_RANKS_KEPT = 5
HIDDEN = "hidden"


def fewer_than(k: int) -> str:
    """How a count below k is shown."""
    return f"fewer than {k}"


def suppress_cells(counts: Sequence[int], k: int) -> list[Count]:
    """Apply the primary and complementary small-count rule to one breakdown.

    Args:
        counts: the true counts of the cells of one breakdown whose total is
            published elsewhere.
        k: the smallest count that may be shown.

    Returns:
        Per cell, the count itself, ``"fewer than k"`` (below k) or ``"hidden"``
        (hidden to protect a small cell).
    """
    primary = [count < k for count in counts]
    complementary = [False] * len(counts)
    if not any(primary):
        return list(counts)

    def hidden_total() -> int:
        return sum(
            c for c, p, s in zip(counts, primary, complementary, strict=True) if p or s
        )

    while True:
        extra = sum(complementary)
        if extra >= 1 and hidden_total() >= k * (extra + 1) - 1:
            break
        visible = [
            i for i in range(len(counts)) if not (primary[i] or complementary[i])
        ]
        if not visible:
            return [HIDDEN] * len(counts)
        complementary[min(visible, key=lambda i: (counts[i], i))] = True

    return [
        fewer_than(k) if p else HIDDEN if s else count
        for count, p, s in zip(counts, primary, complementary, strict=True)
    ]


@dataclass
class Dimension:
    """One categorical column as codes into its sorted levels."""

    levels: np.ndarray
    codes: np.ndarray
    index: dict[str, int]

    @classmethod
    def from_values(cls, values: pd.Series) -> Dimension:
        """Encode a column; values are compared as strings."""
        text = values.astype(str).to_numpy()
        levels, codes = np.unique(text, return_inverse=True)
        index = {str(level): i for i, level in enumerate(levels)}
        return cls(levels=levels, codes=codes.astype(np.int32), index=index)

    def mask(self, wanted: Sequence[object]) -> np.ndarray:
        """Rows whose value is one of ``wanted`` (unknown values match nobody)."""
        table = np.zeros(len(self.levels), dtype=bool)
        for value in wanted:
            position = self.index.get(str(value))
            if position is not None:
                table[position] = True
        return table[self.codes]


def _refuse_unknown(name: str, wanted: Sequence[object], dimension: Dimension) -> None:
    """Refuse filter values no card holder has: a typo must not look like a tiny
    segment.

    Raises:
        InputError: naming the filter, the value and where the known values are.
    """
    unknown = [value for value in wanted if str(value) not in dimension.index]
    if unknown:
        raise InputError(
            f"filters.{name}: {unknown[0]!r} is not a value any scored card holder "
            "has; GET /segments/options lists the values"
        )


@dataclass
class SegmentStats:
    """The true, unsuppressed figures of one segment (never sent as they are)."""

    size: int
    reachable: int
    need_id: str | None
    expected_responders: float | None
    breakdowns: dict[str, dict[str, int]]
    histogram: list[int]
    offer_cards: dict[str, int]
    offer_mean_score: dict[str, float]


@dataclass
class SegmentIndex:
    """Batch scores of every card holder, held as arrays for fast previews."""

    size: int
    dimensions: dict[str, Dimension]
    consent: np.ndarray
    need_ids: list[str]
    propensities: np.ndarray  # Fortran order: one contiguous column per need
    bins: np.ndarray  # histogram bin of each propensity, Fortran order
    offer_ids: np.ndarray
    offer_titles: dict[str, str]
    top_offers: np.ndarray  # offer code + 1 per card and rank; 0 = no offer
    top_scores: np.ndarray
    scored_at: str | None = None
    loaded_at: float = field(default_factory=time.time)

    @classmethod
    def from_frames(
        cls,
        propensities: pd.DataFrame,
        top_offers: pd.DataFrame,
        offer_titles: dict[str, str] | None = None,
        scored_at: str | None = None,
    ) -> SegmentIndex:
        """Build the index from the frames the scoring command writes.

        Args:
            propensities: one row per card holder: card key, profile columns,
                ``consent_marketing`` and one ``p_<need_id>`` column per need.
            top_offers: card key, offer id, rank (1 is best) and score.
            offer_titles: offer id to a title shown to campaign managers.
            scored_at: when the scores were computed (ISO time), if known.

        Raises:
            NotReadyError: when a required column is missing.
        """
        _require_columns(propensities, (CARD_KEY, *FILTER_DIMENSIONS), "propensities")
        _require_columns(top_offers, (CARD_KEY, OFFER_ID, "rank", "score"), "offers")
        need_columns = [c for c in propensities.columns if c.startswith("p_")]
        need_ids = [c.removeprefix(PROPENSITY_PREFIX) for c in need_columns]

        dimensions = {
            name: Dimension.from_values(propensities[name])
            for name in FILTER_DIMENSIONS
        }
        consent = propensities["consent_marketing"].fillna(False).to_numpy(bool)
        values = propensities[need_columns].to_numpy(np.float32, na_value=0.0)
        values = np.asfortranarray(np.clip(values, 0.0, 1.0))
        bins = np.minimum((values * HISTOGRAM_BINS).astype(np.uint8), 9)

        offer_ids, top_codes, top_scores = _offer_matrix(
            propensities[CARD_KEY], top_offers
        )
        return cls(
            size=len(propensities),
            dimensions=dimensions,
            consent=consent,
            need_ids=need_ids,
            propensities=values,
            bins=np.asfortranarray(bins),
            offer_ids=offer_ids,
            offer_titles=offer_titles or {},
            top_offers=top_codes,
            top_scores=top_scores,
            scored_at=scored_at,
        )

    def mask(self, request: SegmentRequest) -> np.ndarray:
        """Rows of the card holders the request's filters keep."""
        filters = request.filters
        mask = np.ones(self.size, dtype=bool)
        for name in FILTER_DIMENSIONS:
            wanted = getattr(filters, name)
            if wanted is not None:
                _refuse_unknown(name, wanted, self.dimensions[name])
                mask &= self.dimensions[name].mask(wanted)
        if filters.consent_marketing is not None:
            mask &= self.consent == filters.consent_marketing
        if filters.need is not None:
            column = self.need_column(filters.need.need_id, "filters.need.need_id")
            mask &= self.propensities[:, column] >= filters.need.min_propensity
        return mask

    def need_column(self, need_id: str, field_name: str) -> int:
        """Position of a need's propensities.

        Raises:
            InputError: when the need was not scored.
        """
        try:
            return self.need_ids.index(need_id)
        except ValueError:
            raise InputError(
                f"{field_name}: expected one of the scored needs {self.need_ids}, "
                f"got {need_id!r}; pick one of those"
            ) from None

    def stats(self, request: SegmentRequest) -> SegmentStats:
        """The true figures of the segment the request describes."""
        mask = self.mask(request)
        # Positions once: every figure below gathers them instead of re-scanning
        # the million-long mask.
        rows = np.flatnonzero(mask)
        size = len(rows)
        reachable = int(np.count_nonzero(self.consent[rows]))

        sums = self.propensities.T @ mask.astype(np.float32)
        need_id = _chosen_need(request)
        column = None
        if need_id is not None:
            column = self.need_column(need_id, "need_id")
        elif self.need_ids and size:
            column = int(np.argmax(sums))
            need_id = self.need_ids[column]

        breakdowns = {
            name: self._breakdown(name, rows) for name in BREAKDOWN_DIMENSIONS
        }
        histogram = [0] * HISTOGRAM_BINS
        expected = None
        if column is not None:
            expected = float(sums[column])
            counts = np.bincount(self.bins[:, column][rows], minlength=HISTOGRAM_BINS)
            histogram = [int(c) for c in counts]

        offer_cards, offer_scores = self._offers(rows)
        return SegmentStats(
            size=size,
            reachable=reachable,
            need_id=need_id,
            expected_responders=expected,
            breakdowns=breakdowns,
            histogram=histogram,
            offer_cards=offer_cards,
            offer_mean_score=offer_scores,
        )

    def _breakdown(self, name: str, rows: np.ndarray) -> dict[str, int]:
        dimension = self.dimensions[name]
        counts = np.bincount(dimension.codes[rows], minlength=len(dimension.levels))
        present = np.flatnonzero(counts)
        return {str(dimension.levels[i]): int(counts[i]) for i in present}

    def _offers(self, rows: np.ndarray) -> tuple[dict[str, int], dict[str, float]]:
        codes = self.top_offers[rows].ravel()
        scores = self.top_scores[rows].ravel()
        length = len(self.offer_ids) + 1
        cards = np.bincount(codes, minlength=length)[1:]
        totals = np.bincount(codes, weights=scores, minlength=length)[1:]
        present = np.flatnonzero(cards)
        offer_cards = {str(self.offer_ids[i]): int(cards[i]) for i in present}
        mean_scores = {
            str(self.offer_ids[i]): float(totals[i] / cards[i]) for i in present
        }
        return offer_cards, mean_scores


def _chosen_need(request: SegmentRequest) -> str | None:
    if request.need_id is not None:
        return request.need_id
    if request.filters.need is not None:
        return request.filters.need.need_id
    return None


def _require_columns(frame: pd.DataFrame, columns: Sequence[str], what: str) -> None:
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise NotReadyError(
            f"expected the batch {what} file to have columns {list(columns)}, "
            f"missing {missing}; rerun 'precision score'"
        )


def _offer_matrix(
    card_keys: pd.Series, top_offers: pd.DataFrame
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Top offers as a (cards x ranks) matrix of offer codes aligned with cards."""
    kept = top_offers[top_offers["rank"].between(1, OFFER_RANKS_KEPT)]
    offer_ids, offer_codes = np.unique(kept[OFFER_ID].astype(str), return_inverse=True)
    rows = pd.Index(card_keys).get_indexer(kept[CARD_KEY])
    known = rows >= 0

    codes = np.zeros((len(card_keys), OFFER_RANKS_KEPT), dtype=np.int32)
    scores = np.zeros((len(card_keys), OFFER_RANKS_KEPT), dtype=np.float64)
    ranks = kept["rank"].to_numpy(np.int64)[known] - 1
    codes[rows[known], ranks] = offer_codes[known] + 1
    scores[rows[known], ranks] = kept["score"].to_numpy(np.float64)[known]
    return offer_ids, codes, scores


def load_segment_index(scores_dir: Path, warehouse_dir: Path) -> SegmentIndex:
    """Read the batch scores (and offer titles) written by ``precision score``.

    Raises:
        NotReadyError: when the score files are missing.
    """
    started = time.perf_counter()
    propensities_path = scores_dir / PROPENSITIES_FILE
    offers_path = scores_dir / TOP_OFFERS_FILE
    for path in (propensities_path, offers_path):
        if not path.exists():
            raise NotReadyError(
                f"expected batch scores at {path}, found none; run 'precision "
                "score' after promoting the models"
            )

    propensities = pd.read_parquet(propensities_path)
    top_offers = pd.read_parquet(offers_path)
    titles = _offer_titles(warehouse_dir)
    scored_at = time.strftime(
        "%Y-%m-%dT%H:%M:%SZ", time.gmtime(propensities_path.stat().st_mtime)
    )
    index = SegmentIndex.from_frames(propensities, top_offers, titles, scored_at)
    logger.info(
        "loaded segment index of %d card holders in %.2f s",
        index.size,
        time.perf_counter() - started,
    )
    return index


def _offer_titles(warehouse_dir: Path) -> dict[str, str]:
    path = warehouse_dir / "offers.parquet"
    if not path.exists():
        return {}
    offers = pd.read_parquet(path, columns=[OFFER_ID, "title"])
    return dict(
        zip(offers[OFFER_ID].astype(str), offers["title"].astype(str), strict=True)
    )


def safe_preview(
    stats: SegmentStats, index: SegmentIndex, request: SegmentRequest, k: int
) -> SegmentPreview:
    """Turn true figures into a preview that hides every small count.

    Args:
        stats: the figures of the segment.
        index: the index the figures came from (for offer titles and time).
        request: the request (for how many offers to show).
        k: the smallest count that may be shown.
    """
    if stats.size < k:
        return SegmentPreview(
            k=k,
            size=fewer_than(k),
            reachable=fewer_than(k),
            need_id=stats.need_id,
            expected_responders=None,
            breakdowns={name: [] for name in BREAKDOWN_DIMENSIONS},
            histogram=[],
            best_offers=[],
            scored_at=index.scored_at,
        )

    reachable = suppress_cells([stats.reachable, stats.size - stats.reachable], k)[0]
    breakdowns = {
        name: _safe_breakdown(cells, k) for name, cells in stats.breakdowns.items()
    }
    histogram = []
    if stats.expected_responders is not None:
        width = 1.0 / HISTOGRAM_BINS
        shown = suppress_cells(stats.histogram, k)
        histogram = [
            HistogramBin(
                low=round(i * width, 2), high=round((i + 1) * width, 2), count=count
            )
            for i, count in enumerate(shown)
        ]
    return SegmentPreview(
        k=k,
        size=stats.size,
        reachable=reachable,
        need_id=stats.need_id,
        expected_responders=_round(stats.expected_responders),
        breakdowns=breakdowns,
        histogram=histogram,
        best_offers=_best_offers(stats, index, request.top_offers, k),
        scored_at=index.scored_at,
    )


def _safe_breakdown(cells: dict[str, int], k: int) -> list[CountCell]:
    names = list(cells)
    shown = suppress_cells([cells[name] for name in names], k)
    return [
        CountCell(value=name, count=count)
        for name, count in zip(names, shown, strict=True)
    ]


def _best_offers(
    stats: SegmentStats, index: SegmentIndex, top: int, k: int
) -> list[SegmentOffer]:
    """Offers held by the most card holders of the segment, best mean score next.

    Offer counts overlap (one card holder has several offers), so they publish no
    total to subtract from; only the primary rule applies. Offers that fewer than
    k card holders hold are left out, so their scores never describe a small group.
    """
    ranked = sorted(
        (offer for offer, cards in stats.offer_cards.items() if cards >= k),
        key=lambda offer: (-stats.offer_cards[offer], -stats.offer_mean_score[offer]),
    )
    return [
        SegmentOffer(
            offer_id=offer,
            title=index.offer_titles.get(offer, offer),
            cards=stats.offer_cards[offer],
            mean_score=round(stats.offer_mean_score[offer], 4),
        )
        for offer in ranked[:top]
    ]


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 1)


def preview(index: SegmentIndex, request: SegmentRequest, k: int) -> SegmentPreview:
    """The privacy-safe preview of the segment a request describes."""
    started = time.perf_counter()
    result = safe_preview(index.stats(request), index, request, k)
    logger.debug("segment preview in %.2f ms", 1000 * (time.perf_counter() - started))
    return result


def stats_with_pandas(
    propensities: pd.DataFrame, top_offers: pd.DataFrame, request: SegmentRequest
) -> SegmentStats:
    """The same figures as :meth:`SegmentIndex.stats`, the plain pandas way.

    This is the reference the array path is checked against, and the peer it is
    measured against.
    """
    frame = propensities
    filters = request.filters
    keep = pd.Series(True, index=frame.index)
    for name in FILTER_DIMENSIONS:
        wanted = getattr(filters, name)
        if wanted is not None:
            keep &= frame[name].astype(str).isin([str(v) for v in wanted])
    if filters.consent_marketing is not None:
        keep &= frame["consent_marketing"].fillna(False) == filters.consent_marketing
    if filters.need is not None:
        column = PROPENSITY_PREFIX + filters.need.need_id
        if column not in frame.columns:
            raise InputError(
                f"filters.need.need_id: expected a scored need, got "
                f"{filters.need.need_id!r}; pick one of the scored needs"
            )
        keep &= frame[column].clip(0, 1) >= filters.need.min_propensity
    segment = frame[keep]

    need_columns = [c for c in frame.columns if c.startswith(PROPENSITY_PREFIX)]
    sums = segment[need_columns].clip(0, 1).sum()
    need_id = _chosen_need(request)
    if need_id is None and len(segment) and need_columns:
        need_id = str(sums.idxmax()).removeprefix(PROPENSITY_PREFIX)
    expected, histogram = None, [0] * HISTOGRAM_BINS
    if need_id is not None:
        values = segment[PROPENSITY_PREFIX + need_id].clip(0, 1)
        expected = float(values.sum())
        bins = (values * HISTOGRAM_BINS).astype(int).clip(upper=HISTOGRAM_BINS - 1)
        counts = bins.value_counts()
        histogram = [int(counts.get(i, 0)) for i in range(HISTOGRAM_BINS)]

    breakdowns = {
        name: {
            str(key): int(value)
            for key, value in segment[name]
            .astype(str)
            .value_counts()
            .sort_index()
            .items()
        }
        for name in BREAKDOWN_DIMENSIONS
    }
    offers = top_offers[
        top_offers[CARD_KEY].isin(segment[CARD_KEY])
        & top_offers["rank"].between(1, OFFER_RANKS_KEPT)
    ]
    grouped = offers.groupby(offers[OFFER_ID].astype(str))["score"]
    return SegmentStats(
        size=len(segment),
        reachable=int(segment["consent_marketing"].fillna(False).sum()),
        need_id=need_id,
        expected_responders=expected,
        breakdowns=breakdowns,
        histogram=histogram,
        offer_cards={k: int(v) for k, v in grouped.size().items()},
        offer_mean_score={k: float(v) for k, v in grouped.mean().items()},
    )


def need_labels() -> dict[str, str]:
    """Human labels of the need categories (for the segment page)."""
    return dict(NEED_CATEGORIES)

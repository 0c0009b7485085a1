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

The in-memory index groups card holders into cells, one per combination of filter
values (post, country, language, age band, generation, card status, consent), and
sums every figure per cell when it is built. A preview filtered on those values
sums the cells it keeps (or subtracts the few it drops from the totals), whatever
the number of card holders. Offers, the widest figure, are also summed at build
time over the groups of every small set of dimensions (post alone, country and
card status, ...), so a filter on those reads a few rows. A need's minimum
propensity cuts through cells: each need also has a ladder, its card holders
ordered by propensity with running totals every few thousand places, so "at or
above the threshold" is a checkpoint plus a few card holders. Where the threshold
and the cells overlap, the smallest part is counted card by card from the per-card
propensities and top offers kept for that.
"""

from __future__ import annotations

import bisect
import itertools
import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

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
FILTER_DIMENSIONS: tuple[str, ...] = (POST_ID, "country", "language", "age_band")
FILTER_DIMENSIONS += ("generation", "card_status")
BREAKDOWN_DIMENSIONS = (POST_ID, "age_band", "language")
HISTOGRAM_BINS = 10
OFFER_RANKS_KEPT = 5
LADDER_BLOCK = 8192  # card holders between two checkpoints of a need's ladder
MARGINAL_GROUPS = 256  # most groups an offer marginal may have
MARGINAL_BYTES = 64 * 2**20  # memory all offer marginals together may hold
CONSENT = "consent_marketing"
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
    """One categorical filter column: its sorted levels and where each one sits."""

    levels: np.ndarray
    index: dict[str, int]

    @classmethod
    def encode(cls, values: pd.Series) -> tuple[Dimension, np.ndarray]:
        """The dimension of a column and the level code of each row.

        Values are compared as strings, and levels sort as strings.
        """
        codes, uniques = pd.factorize(values.astype(str), sort=True)
        levels = np.asarray(uniques, dtype=str)
        index = {str(level): i for i, level in enumerate(levels)}
        return cls(levels=levels, index=index), codes.astype(np.int32)

    def chosen(self, wanted: Sequence[object]) -> np.ndarray:
        """Per level, whether it is one of ``wanted`` (unknown values match none)."""
        table = np.zeros(len(self.levels), dtype=bool)
        for value in wanted:
            position = self.index.get(str(value))
            if position is not None:
                table[position] = True
        return table


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
class _Pick:
    """The chosen cells, held as whichever side is shorter.

    Summing over the few cells left out and subtracting from the total over every
    cell costs as little as summing over a few chosen cells.
    """

    positions: np.ndarray
    inverted: bool  # the chosen cells are every cell but ``positions``

    @classmethod
    def of(cls, chosen: np.ndarray) -> _Pick:
        """The pick of the cells a boolean mask chooses."""
        inside = np.flatnonzero(chosen)
        if 2 * len(inside) <= len(chosen):
            return cls(inside, inverted=False)
        return cls(np.flatnonzero(~chosen), inverted=True)

    def sum(self, values: np.ndarray, total: np.ndarray) -> np.ndarray:
        """Per-cell ``values`` (cells on the first axis) summed over the chosen
        cells, given their ``total`` over every cell."""
        part = values.take(self.positions, axis=0).sum(axis=0)
        return total - part if self.inverted else part

    def count_levels(
        self, codes: np.ndarray, sizes: np.ndarray, total: np.ndarray
    ) -> np.ndarray:
        """Card holders per level of one dimension, over the chosen cells."""
        chosen = self.positions
        part = np.bincount(codes[chosen], sizes[chosen], len(total))
        return total - part.astype(np.int64) if self.inverted else part.astype(np.int64)


@dataclass
class Cells:
    """Card holders grouped by their combination of filter values, one cell each.

    A filter on the dimensions or on consent keeps or drops whole cells, so every
    figure of such a segment is a sum over its cells. The offers of each cell are
    stored sparsely: cell ``c`` owns entries ``offer_start[c]:offer_start[c + 1]``.
    Totals over every cell are kept beside the per-cell figures.
    """

    codes: dict[str, np.ndarray]  # per dimension, the level code of each cell
    level_counts: dict[str, int]  # per dimension, how many levels it has
    consent: np.ndarray  # marketing consent of each cell
    sizes: np.ndarray  # card holders per cell
    need_sums: np.ndarray  # (cells, needs): sum of the propensities
    histograms: np.ndarray  # (needs, cells, bins): card holders per bin
    offer_start: np.ndarray
    offer_codes: np.ndarray  # offer code of each entry
    offer_cards: np.ndarray  # card holders of the cell holding that offer
    offer_scores: np.ndarray  # sum of their scores for it
    offer_count: int
    marginals: dict[frozenset[str], _OfferMarginal] = field(default_factory=dict)
    reachable: np.ndarray = field(init=False)
    totals: dict[str, np.ndarray] = field(init=False)

    def __post_init__(self) -> None:
        self.reachable = self.sizes * self.consent
        self.totals = {
            "sizes": self.sizes.sum(),
            "reachable": self.reachable.sum(),
            "need_sums": self.need_sums.sum(axis=0),
            "histograms": self.histograms.sum(axis=1),
            "offer_cards": _offer_sums(self.offer_codes, self.offer_cards, self).astype(
                np.int64
            ),
            "offer_scores": _offer_sums(self.offer_codes, self.offer_scores, self),
        }
        for name, codes in self.codes.items():
            self.totals[name] = np.bincount(
                codes, self.sizes, self.level_counts[name]
            ).astype(np.int64)

    def __len__(self) -> int:
        return len(self.sizes)

    def offers(self, box: _Box, pick: _Pick) -> tuple[np.ndarray, np.ndarray]:
        """Card holders and score sums per offer over the chosen cells.

        From the offer marginal of the filtered dimensions when there is one,
        else from the chosen cells' own entries.
        """
        if not box.dims:
            return self.totals["offer_cards"], self.totals["offer_scores"]
        marginal = self.marginals.get(box.dims)
        if marginal is not None:
            return marginal.sums(box.chosen)
        positions = pick.positions
        starts = self.offer_start[positions]
        entries = _ranges(starts, self.offer_start[positions + 1] - starts)
        codes = self.offer_codes[entries]
        cards = _offer_sums(codes, self.offer_cards[entries], self).astype(np.int64)
        scores = _offer_sums(codes, self.offer_scores[entries], self)
        if pick.inverted:
            return (
                self.totals["offer_cards"] - cards,
                self.totals["offer_scores"] - scores,
            )
        return cards, scores

    @property
    def nbytes(self) -> int:
        """Memory held by the arrays (bytes)."""
        arrays = [*self.codes.values(), *self.totals.values(), *vars(self).values()]
        for marginal in self.marginals.values():
            arrays += [*vars(marginal).values()]
        return sum(a.nbytes for a in arrays if isinstance(a, np.ndarray))


@dataclass
class _Box:
    """The cells that filters on a few dimensions keep (each keeps some levels)."""

    chosen: np.ndarray  # bool per cell
    dims: frozenset[str]  # the dimensions filtered; consent counts as one


@dataclass
class _OfferMarginal:
    """Offers summed over the cells that share their values of a few dimensions.

    A filter on exactly those dimensions keeps or drops whole groups, so its
    offers are a sum over at most ``MARGINAL_GROUPS`` rows, however many cells.
    """

    group_cells: np.ndarray  # one cell of each group, for the group's values
    cards: np.ndarray  # (groups, offers)
    scores: np.ndarray  # (groups, offers)

    def sums(self, chosen_cells: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Card holders and score sums per offer over the chosen groups."""
        chosen = chosen_cells[self.group_cells]
        return self.cards[chosen].sum(axis=0), self.scores[chosen].sum(axis=0)


def _offer_sums(codes: np.ndarray, weights: np.ndarray, cells: Cells) -> np.ndarray:
    """Weights summed per offer code, as floats even when there are none."""
    return np.bincount(codes, weights, cells.offer_count).astype(np.float64)


@dataclass
class _Tally:
    """Figures of a set of card holders, in a form that adds and subtracts.

    ``expected`` and ``histogram`` belong to one need, chosen beforehand.
    """

    size: int
    reachable: int
    levels: dict[str, np.ndarray]  # card holders per level of each breakdown
    expected: float
    histogram: np.ndarray
    offer_cards: np.ndarray
    offer_scores: np.ndarray

    def plus(self, other: _Tally, sign: int = 1) -> _Tally:
        """This set with ``other`` added (sign 1) or taken away (sign -1)."""
        return _Tally(
            size=self.size + sign * other.size,
            reachable=self.reachable + sign * other.reachable,
            levels={
                name: counts + sign * other.levels[name]
                for name, counts in self.levels.items()
            },
            expected=self.expected + sign * other.expected,
            histogram=self.histogram + sign * other.histogram,
            offer_cards=self.offer_cards + sign * other.offer_cards,
            offer_scores=self.offer_scores + sign * other.offer_scores,
        )


@dataclass
class _Ladder:
    """Card holders ordered by one need's propensity, highest first, with running
    totals of every figure at every ``block``-th place.

    The card holders at or above a threshold are a head of that order, so their
    figures are the running total at the nearest checkpoint, corrected by the few
    card holders between it and the head's end.
    """

    order: np.ndarray  # card rows, highest propensity first
    bounds: np.ndarray  # places of the checkpoints: 0, block, 2 block, ..., cards
    reachable: np.ndarray  # (checkpoints,)
    levels: dict[str, np.ndarray]  # per breakdown, (checkpoints, levels)
    need_sums: np.ndarray  # (checkpoints, needs)
    histograms: np.ndarray  # (checkpoints, needs, bins)
    offer_cards: np.ndarray  # (checkpoints, offers)
    offer_scores: np.ndarray

    def at(self, checkpoint: int, column: int | None) -> _Tally:
        """The figures of the card holders before a checkpoint."""
        return _Tally(
            size=int(self.bounds[checkpoint]),
            reachable=int(self.reachable[checkpoint]),
            levels={name: counts[checkpoint] for name, counts in self.levels.items()},
            expected=0.0 if column is None else self.need_sums[checkpoint, column],
            histogram=(
                np.zeros(HISTOGRAM_BINS, dtype=np.int64)
                if column is None
                else self.histograms[checkpoint, column]
            ),
            offer_cards=self.offer_cards[checkpoint],
            offer_scores=self.offer_scores[checkpoint],
        )

    @property
    def nbytes(self) -> int:
        """Memory held by the arrays (bytes)."""
        arrays = [*self.levels.values(), *vars(self).values()]
        return sum(a.nbytes for a in arrays if isinstance(a, np.ndarray))


@dataclass
class SegmentIndex:
    """Batch scores of every card holder, grouped into cells for fast previews.

    Filters on the dimensions and on consent are answered from per-cell sums
    alone, and their offers from the marginal of the filtered dimensions when one
    is kept. A need's minimum propensity cuts through cells; the card holders at
    or above it are read from that need's ladder. Where the cut and the cells
    overlap, only the smallest of the four parts they make is counted card by
    card, so the per-card propensities and top offers stay in memory for it.
    """

    size: int
    dimensions: dict[str, Dimension]
    cells: Cells
    card_cells: np.ndarray  # the cell of each card holder
    ladders: list[_Ladder]  # one per need
    need_ids: list[str]
    propensities: np.ndarray  # Fortran order: one contiguous column per need
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
        block: int = LADDER_BLOCK,
    ) -> SegmentIndex:
        """Build the index from the frames the scoring command writes.

        Args:
            propensities: one row per card holder: card key, profile columns,
                ``consent_marketing`` and one ``p_<need_id>`` column per need.
            top_offers: card key, offer id, rank (1 is best) and score.
            offer_titles: offer id to a title shown to campaign managers.
            scored_at: when the scores were computed (ISO time), if known.
            block: card holders between two checkpoints of a need's ladder.

        Raises:
            NotReadyError: when a required column is missing.
        """
        _require_columns(propensities, (CARD_KEY, *FILTER_DIMENSIONS), "propensities")
        _require_columns(top_offers, (CARD_KEY, OFFER_ID, "rank", "score"), "offers")
        need_columns = [c for c in propensities.columns if c.startswith("p_")]
        need_ids = [c.removeprefix(PROPENSITY_PREFIX) for c in need_columns]

        dimensions, codes = {}, {}
        for name in FILTER_DIMENSIONS:
            dimensions[name], codes[name] = Dimension.encode(propensities[name])
        consent = propensities["consent_marketing"].fillna(False).to_numpy(bool)
        values = propensities[need_columns].to_numpy(np.float32, na_value=0.0)
        values = np.asfortranarray(np.clip(values, 0.0, 1.0))

        offer_ids, top_codes, top_scores = _offer_matrix(
            propensities[CARD_KEY], top_offers
        )
        scores = _CardScores(
            values, _bins(values), top_codes, top_scores, len(offer_ids)
        )
        card_cells, cells = _group_cells(dimensions, codes, consent, scores)
        ladders = [
            _build_ladder(column, codes, consent, scores, block)
            for column in range(len(need_ids))
        ]
        return cls(
            size=len(propensities),
            dimensions=dimensions,
            cells=cells,
            card_cells=card_cells,
            ladders=ladders,
            need_ids=need_ids,
            propensities=values,
            offer_ids=offer_ids,
            offer_titles=offer_titles or {},
            top_offers=top_codes,
            top_scores=top_scores,
            scored_at=scored_at,
        )

    @property
    def nbytes(self) -> int:
        """Memory held by the index's arrays (bytes)."""
        cards = (self.card_cells, self.propensities, self.top_offers, self.top_scores)
        ladders = sum(ladder.nbytes for ladder in self.ladders)
        return self.cells.nbytes + ladders + sum(a.nbytes for a in cards)

    def _box(self, request: SegmentRequest) -> _Box:
        """The cells the request's dimension and consent filters keep."""
        filters = request.filters
        chosen = np.ones(len(self.cells), dtype=bool)
        dims = []
        for name in FILTER_DIMENSIONS:
            wanted = getattr(filters, name)
            if wanted is not None:
                dimension = self.dimensions[name]
                _refuse_unknown(name, wanted, dimension)
                chosen &= dimension.chosen(wanted)[self.cells.codes[name]]
                dims.append(name)
        if filters.consent_marketing is not None:
            chosen &= self.cells.consent == filters.consent_marketing
            dims.append(CONSENT)
        return _Box(chosen, frozenset(dims))

    def _cut(self, request: SegmentRequest) -> tuple[int, int] | None:
        """The need column of the threshold filter and how many card holders are
        at or above it; None when no threshold keeps anyone out."""
        need = request.filters.need
        if need is None:
            return None
        column = self.need_column(need.need_id, "filters.need.need_id")
        if need.min_propensity <= 0.0:  # propensities are clipped to [0, 1]
            return None
        values = self.propensities[:, column]
        order = self.ladders[column].order
        above = bisect.bisect_left(
            range(self.size),
            True,
            key=lambda place: bool(values[order[place]] < need.min_propensity),
        )
        return column, above

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
        box = self._box(request)
        cut = self._cut(request)
        need_id = _chosen_need(request)
        column = None if need_id is None else self.need_column(need_id, "need_id")

        if cut is None:
            pick = _Pick.of(box.chosen)
            size = pick.sum(self.cells.sizes, self.cells.totals["sizes"])
            if column is None and self.need_ids and size:
                sums = pick.sum(self.cells.need_sums, self.cells.totals["need_sums"])
                column = int(np.argmax(sums))
                need_id = self.need_ids[column]
            tally = self._cells_tally(box, column)
        else:
            tally = self._cut_tally(box, *cut, column)

        levels = {name: self.dimensions[name].levels for name in tally.levels}
        present = {name: np.flatnonzero(c) for name, c in tally.levels.items()}
        cards, scores = tally.offer_cards, tally.offer_scores
        offered = np.flatnonzero(cards)
        return SegmentStats(
            size=tally.size,
            reachable=tally.reachable,
            need_id=need_id,
            expected_responders=None if column is None else float(tally.expected),
            breakdowns={
                name: {str(levels[name][i]): int(counts[i]) for i in present[name]}
                for name, counts in tally.levels.items()
            },
            histogram=[int(c) for c in tally.histogram],
            offer_cards={str(self.offer_ids[i]): int(cards[i]) for i in offered},
            offer_mean_score={
                str(self.offer_ids[i]): float(scores[i] / cards[i]) for i in offered
            },
        )

    def _cut_tally(
        self, box: _Box, cut_column: int, above: int, column: int | None
    ) -> _Tally:
        """Figures of the chosen cells' card holders at or above a need threshold.

        With C the chosen cells and T the card holders above the threshold, the
        segment C and T is counted from whichever of its four parts (C or not C,
        against T or not T) is smallest, beside whole cells and the ladder:

        - C and T: counted card by card;
        - not C and T: T from the ladder, minus those card holders;
        - C and not T: C from the cells, minus those card holders;
        - not C and not T: T minus (not C), plus those card holders, where
          not C is everyone minus C.
        """
        chosen = box.chosen
        if chosen.all():
            return self._ladder_tally(cut_column, above, column)
        order = self.ladders[cut_column].order
        heads = 2 * above <= self.size  # the side of T read card by card
        side = order[:above] if heads else order[above:]
        inside = chosen[self.card_cells[side]]
        in_count = int(np.count_nonzero(inside))
        use_inside = 2 * in_count <= len(side)
        rows = np.sort(side[inside] if use_inside else side[~inside])
        cards = self._cards_tally(rows, column)
        if heads and use_inside:
            return cards
        if heads:
            return self._ladder_tally(cut_column, above, column).plus(cards, -1)
        if use_inside:
            return self._cells_tally(box, column).plus(cards, -1)
        everyone = _Box(np.ones_like(chosen), frozenset())
        ladder = self._ladder_tally(cut_column, above, column)
        others = self._cells_tally(everyone, column).plus(
            self._cells_tally(box, column), -1
        )
        return ladder.plus(others, -1).plus(cards)

    def _cells_tally(self, box: _Box, column: int | None) -> _Tally:
        """Figures of the card holders of the chosen cells."""
        cells = self.cells
        totals = cells.totals
        pick = _Pick.of(box.chosen)
        cards, scores = cells.offers(box, pick)
        expected, histogram = 0.0, np.zeros(HISTOGRAM_BINS, dtype=np.int64)
        if column is not None:
            sums = cells.need_sums[:, column]
            expected = float(pick.sum(sums, totals["need_sums"][column]))
            histogram = pick.sum(cells.histograms[column], totals["histograms"][column])
        return _Tally(
            size=int(pick.sum(cells.sizes, totals["sizes"])),
            reachable=int(pick.sum(cells.reachable, totals["reachable"])),
            levels={
                name: pick.count_levels(cells.codes[name], cells.sizes, totals[name])
                for name in BREAKDOWN_DIMENSIONS
            },
            expected=expected,
            histogram=histogram.astype(np.int64),
            offer_cards=cards,
            offer_scores=scores,
        )

    def _cards_tally(self, rows: np.ndarray, column: int | None) -> _Tally:
        """Figures of single card holders (rows of the per-card arrays)."""
        cells = self.cells
        cell_of = self.card_cells[rows]
        expected, histogram = 0.0, np.zeros(HISTOGRAM_BINS, dtype=np.int64)
        if column is not None:
            values = self.propensities[:, column][rows]
            expected = float(values.sum(dtype=np.float64))
            histogram = np.bincount(_bins(values), minlength=HISTOGRAM_BINS)
        codes = self.top_offers[rows].ravel()
        width = len(self.offer_ids) + 1
        scores = self.top_scores[rows].ravel()
        return _Tally(
            size=len(rows),
            reachable=int(np.count_nonzero(cells.consent[cell_of])),
            levels={
                name: np.bincount(
                    cells.codes[name][cell_of], minlength=cells.level_counts[name]
                )
                for name in BREAKDOWN_DIMENSIONS
            },
            expected=expected,
            histogram=histogram,
            offer_cards=np.bincount(codes, minlength=width)[1:],
            offer_scores=np.bincount(codes, scores, width)[1:].astype(np.float64),
        )

    def _ladder_tally(self, cut_column: int, above: int, column: int | None) -> _Tally:
        """Figures of the ``above`` card holders of highest propensity for a need,
        from the nearest checkpoint and the few card holders beside it."""
        ladder = self.ladders[cut_column]
        below = int(np.searchsorted(ladder.bounds, above, side="right")) - 1
        start = int(ladder.bounds[below])
        if below + 1 < len(ladder.bounds):
            end = int(ladder.bounds[below + 1])
            if end - above < above - start:
                rows = np.sort(ladder.order[above:end])
                return ladder.at(below + 1, column).plus(
                    self._cards_tally(rows, column), -1
                )
        rows = np.sort(ladder.order[start:above])
        return ladder.at(below, column).plus(self._cards_tally(rows, column))


def _bins(values: np.ndarray) -> np.ndarray:
    """Histogram bin of each propensity in [0, 1] (1.0 falls in the last bin)."""
    return np.minimum((values * HISTOGRAM_BINS).astype(np.uint8), HISTOGRAM_BINS - 1)


def _ranges(starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """The positions ``starts[i]:starts[i] + lengths[i]`` of every i, concatenated."""
    ends = np.cumsum(lengths)
    shifts = np.repeat(starts - (ends - lengths), lengths)
    return shifts + np.arange(ends[-1] if len(ends) else 0)


class _CardScores(NamedTuple):
    """The batch scores of every card holder, as the index is built from them."""

    propensities: np.ndarray  # (cards, needs), clipped to [0, 1]
    bins: np.ndarray  # (cards, needs): histogram bin of each propensity
    top_codes: np.ndarray  # (cards, ranks): offer code + 1; 0 = no offer
    top_scores: np.ndarray  # (cards, ranks)
    offer_count: int


def _group_cells(
    dimensions: dict[str, Dimension],
    codes: dict[str, np.ndarray],
    consent: np.ndarray,
    scores: _CardScores,
) -> tuple[np.ndarray, Cells]:
    """Group card holders by their filter values and sum every figure per cell.

    Args:
        dimensions: the filter dimensions.
        codes: per dimension, the level code of each card holder.
        consent: marketing consent of each card holder.
        scores: their propensities and top offers.

    Returns:
        The cell of each card holder, and the cells.
    """
    key = consent.astype(np.int64)
    for name in FILTER_DIMENSIONS:
        # Renumbering after each step keeps the combined key below the card count.
        key = key * len(dimensions[name].levels) + codes[name]
        key = pd.factorize(key, sort=True)[0]
    card_cells = key.astype(np.int32)
    cell_count = int(card_cells.max(initial=-1)) + 1
    member = np.zeros(cell_count, dtype=np.int64)
    member[card_cells] = np.arange(len(card_cells))  # any one card of each cell

    need_count = scores.propensities.shape[1]
    need_sums = np.zeros((cell_count, need_count))
    histograms = np.zeros((need_count, cell_count, HISTOGRAM_BINS), dtype=np.int32)
    for j in range(need_count):
        need_sums[:, j] = np.bincount(card_cells, scores.propensities[:, j], cell_count)
        histograms[j] = _binned_counts(card_cells, scores.bins[:, j], cell_count)

    offer_count = scores.offer_count
    offer_start, (offer_codes, offer_cards, offer_scores) = _cell_offers(
        card_cells, cell_count, scores.top_codes, scores.top_scores, offer_count
    )
    cells = Cells(
        codes={name: codes[name][member] for name in FILTER_DIMENSIONS},
        level_counts={name: len(d.levels) for name, d in dimensions.items()},
        consent=consent[member],
        sizes=np.bincount(card_cells, minlength=cell_count).astype(np.int64),
        need_sums=need_sums,
        histograms=histograms,
        offer_start=offer_start,
        offer_codes=offer_codes,
        offer_cards=offer_cards,
        offer_scores=offer_scores,
        offer_count=offer_count,
    )
    cells.marginals = _offer_marginals(cells)
    return card_cells, cells


def _offer_marginals(cells: Cells) -> dict[frozenset[str], _OfferMarginal]:
    """Offer marginals of every set of dimensions with few enough groups, within
    the memory bound (the sets of fewest groups first)."""
    codes = dict(cells.codes) | {CONSENT: cells.consent.astype(np.int32)}
    levels = {name: int(c.max(initial=-1)) + 1 for name, c in codes.items()}
    row_bytes = 16 * cells.offer_count
    candidates = sorted(
        (math.prod(levels[name] for name in names), names)
        for size in range(1, len(codes) + 1)
        for names in itertools.combinations(sorted(codes), size)
    )
    kept: list[frozenset[str]] = []
    spent = 0
    for groups, names in candidates:
        if groups > MARGINAL_GROUPS or spent + groups * row_bytes > MARGINAL_BYTES:
            break
        kept.append(frozenset(names))
        spent += groups * row_bytes

    entry_cells = np.repeat(np.arange(len(cells)), np.diff(cells.offer_start))
    marginals: dict[frozenset[str], _OfferMarginal] = {}
    for dims in sorted(kept, key=len, reverse=True):  # wider sets first
        group_of_cell = np.zeros(len(cells), dtype=np.int64)
        for name in sorted(dims):
            group_of_cell = group_of_cell * levels[name] + codes[name]
        group_of_cell = pd.factorize(group_of_cell, sort=True)[0]
        wider = next(
            (marginals[dims | {n}] for n in codes if dims | {n} in marginals), None
        )
        marginals[dims] = _marginal(group_of_cell, wider, entry_cells, cells)
    return marginals


def _marginal(
    group_of_cell: np.ndarray,
    wider: _OfferMarginal | None,
    entry_cells: np.ndarray,
    cells: Cells,
) -> _OfferMarginal:
    """The offer marginal of one grouping of the cells, summed from a marginal of
    finer groups when there is one, else from every cell's entries."""
    groups = int(group_of_cell.max(initial=-1)) + 1
    group_cells = np.zeros(groups, dtype=np.int64)
    group_cells[group_of_cell] = np.arange(len(group_of_cell))
    width = cells.offer_count
    if wider is not None:
        into = group_of_cell[wider.group_cells]
        card_sums = np.zeros((groups, width), dtype=np.int64)
        score_sums = np.zeros((groups, width))
        np.add.at(card_sums, into, wider.cards)
        np.add.at(score_sums, into, wider.scores)
        return _OfferMarginal(group_cells, card_sums, score_sums)
    slots = group_of_cell[entry_cells] * width + cells.offer_codes
    cards = np.bincount(slots, cells.offer_cards, groups * width)
    scores = np.bincount(slots, cells.offer_scores, groups * width)
    return _OfferMarginal(
        group_cells,
        cards.astype(np.int64).reshape(groups, width),
        scores.astype(np.float64).reshape(groups, width),
    )


def _binned_counts(groups: np.ndarray, bins: np.ndarray, count: int) -> np.ndarray:
    """(groups, bins): card holders of each group in each histogram bin."""
    slots = groups.astype(np.int64) * HISTOGRAM_BINS + bins
    counts = np.bincount(slots, minlength=count * HISTOGRAM_BINS)
    return counts.reshape(count, HISTOGRAM_BINS)


def _cell_offers(
    card_cells: np.ndarray,
    cell_count: int,
    top_codes: np.ndarray,
    top_scores: np.ndarray,
    offer_count: int,
) -> tuple[np.ndarray, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Per cell and offer held there: card holders and their summed scores.

    Returns:
        Where each cell's entries start (one more than the cells), and per entry
        the offer code, the card holders and the score sum, ordered by cell.
    """
    ranks = top_codes.shape[1]
    held = top_codes.ravel() > 0
    cell_of_entry = np.repeat(card_cells.astype(np.int64), ranks)[held]
    width = max(offer_count, 1)
    pairs = cell_of_entry * width + top_codes.ravel()[held] - 1
    unique_pairs, pair_of_entry = np.unique(pairs, return_inverse=True)
    cards = np.bincount(pair_of_entry).astype(np.int32)
    scores = np.bincount(pair_of_entry, top_scores.ravel()[held]).astype(float)
    offer_start = np.searchsorted(unique_pairs // width, np.arange(cell_count + 1))
    codes = (unique_pairs % width).astype(np.int32)
    return offer_start, (codes, cards, scores)


def _build_ladder(
    column: int,
    codes: dict[str, np.ndarray],
    consent: np.ndarray,
    scores: _CardScores,
    block: int,
) -> _Ladder:
    """Order card holders by one need, highest first, and keep running totals of
    every figure at every ``block``-th place.

    Args:
        column: the need.
        codes: per breakdown dimension, the level code of each card holder.
        consent: marketing consent of each card holder.
        scores: their propensities and top offers.
        block: card holders between two checkpoints.
    """
    cards = len(consent)
    # Ties may fall in any order: a threshold never separates equal values.
    order = np.argsort(-scores.propensities[:, column]).astype(np.int32)
    bounds = np.append(np.arange(0, cards, block), cards)
    blocks = len(bounds) - 1
    block_of = np.empty(cards, dtype=np.int64)
    block_of[order] = np.arange(cards) // block

    levels = {}
    for name in BREAKDOWN_DIMENSIONS:
        count = int(codes[name].max(initial=-1)) + 1
        slots = block_of * count + codes[name]
        per_block = np.bincount(slots, minlength=blocks * count)
        levels[name] = _running(per_block.reshape(blocks, count))
    reachable = np.bincount(block_of[consent], minlength=blocks)

    need_count = scores.propensities.shape[1]
    need_sums = np.zeros((blocks, need_count))
    histograms = np.zeros((blocks, need_count, HISTOGRAM_BINS), dtype=np.int64)
    for j in range(need_count):
        need_sums[:, j] = np.bincount(block_of, scores.propensities[:, j], blocks)
        histograms[:, j] = _binned_counts(block_of, scores.bins[:, j], blocks)

    offer_cards, offer_scores = _offers_per_group(block_of, blocks, scores)
    return _Ladder(
        order=order,
        bounds=bounds,
        reachable=_running(reachable.astype(np.int64)),
        levels=levels,
        need_sums=_running(need_sums),
        histograms=_running(histograms),
        offer_cards=_running(offer_cards),
        offer_scores=_running(offer_scores),
    )


def _running(per_block: np.ndarray) -> np.ndarray:
    """Totals before each checkpoint (first axis), from per-block sums."""
    first = np.zeros((1, *per_block.shape[1:]), dtype=per_block.dtype)
    return np.concatenate([first, np.cumsum(per_block, axis=0)])


def _offers_per_group(
    group_of: np.ndarray, groups: int, scores: _CardScores
) -> tuple[np.ndarray, np.ndarray]:
    """(groups, offers): card holders holding each offer, and their score sums."""
    ranks = scores.top_codes.shape[1]
    width = scores.offer_count + 1  # code 0, no offer, is counted then dropped
    slots = np.repeat(group_of * width, ranks) + scores.top_codes.ravel()
    cards = np.bincount(slots, minlength=groups * width)
    sums = np.bincount(slots, scores.top_scores.ravel(), groups * width)
    return (
        cards.reshape(groups, width)[:, 1:].astype(np.int64),
        sums.astype(np.float64).reshape(groups, width)[:, 1:],
    )


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
    offer_codes, offer_ids = pd.factorize(kept[OFFER_ID].astype(str), sort=True)
    rows = pd.Index(card_keys).get_indexer(kept[CARD_KEY])
    known = rows >= 0

    codes = np.zeros((len(card_keys), OFFER_RANKS_KEPT), dtype=np.int32)
    scores = np.zeros((len(card_keys), OFFER_RANKS_KEPT), dtype=np.float64)
    ranks = kept["rank"].to_numpy(np.int64)[known] - 1
    codes[rows[known], ranks] = offer_codes[known] + 1
    scores[rows[known], ranks] = kept["score"].to_numpy(np.float64)[known]
    return np.asarray(offer_ids, dtype=str), codes, scores


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

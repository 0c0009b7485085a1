"""Segment previews: figures, the small-count rule and the pandas reference."""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import pytest

from features.errors import InputError
from serving.schemas import SegmentRequest
from serving.segments import (
    HIDDEN,
    LADDER_BLOCK,
    SegmentIndex,
    SegmentStats,
    fewer_than,
    preview,
    safe_preview,
    stats_with_pandas,
    suppress_cells,
)

K = 10
NEEDS = ("study_in_taiwan", "business_networking", "news_media")


def scored_population(cards: int = 2000, seed: int = 3) -> tuple[pd.DataFrame, ...]:
    """Batch scores of a made-up population, with one tiny post of 3 card holders."""
    rng = np.random.default_rng(seed)
    posts = rng.choice(["P01", "P02", "P03"], size=cards, p=[0.5, 0.3, 0.2])
    posts[:3] = "P99"  # a post with only three card holders
    frame = pd.DataFrame(
        {
            "card_key": [f"key{i:05d}" for i in range(cards)],
            "post_id": posts,
            "country": rng.choice(["US", "ID", "JP"], size=cards),
            "language": rng.choice(["en", "id", "ja", "zh"], size=cards),
            "age_band": rng.choice(["18-29", "30-44", "45-59", "60+"], size=cards),
            "generation": rng.integers(1, 4, size=cards),
            "card_status": rng.choice(["active", "expired"], size=cards, p=[0.9, 0.1]),
            "consent_marketing": rng.random(cards) < 0.7,
        }
    )
    for need in NEEDS:
        frame[f"p_{need}"] = rng.beta(1, 6, size=cards)
    offers = pd.DataFrame(
        {
            "card_key": np.repeat(frame["card_key"].to_numpy(), 3),
            "offer_id": rng.choice([f"O{i}" for i in range(12)], size=3 * cards),
            "rank": np.tile([1, 2, 3], cards),
            "score": rng.random(3 * cards),
        }
    ).drop_duplicates(["card_key", "offer_id"])
    return frame, offers


@pytest.fixture(scope="module")
def population() -> tuple[pd.DataFrame, pd.DataFrame, SegmentIndex]:
    frame, offers = scored_population()
    return frame, offers, SegmentIndex.from_frames(frame, offers, {"O1": "Hotel"})


def request(**filters: object) -> SegmentRequest:
    return SegmentRequest.model_validate({"filters": filters})


def numbers(cells: list[object]) -> list[int]:
    return [c for c in cells if isinstance(c, int)]


def test_cells_at_or_above_k_are_shown_as_they_are() -> None:
    assert suppress_cells([10, 25, 300], K) == [10, 25, 300]


def test_one_small_cell_hides_the_smallest_other_cell_too() -> None:
    shown = suppress_cells([3, 40, 25, 100], K)

    assert shown == [fewer_than(K), 40, HIDDEN, 100]


def test_a_breakdown_that_cannot_be_protected_shows_only_hidden() -> None:
    assert suppress_cells([0, 0, 0, 10], K) == [HIDDEN] * 4


def test_complementary_cells_are_added_until_subtraction_reveals_nothing() -> None:
    # 0 hidden beside 10 would reveal the 0 by subtraction: 10 - 10 >= 0 only.
    shown = suppress_cells([0, 10, 11, 500], K)

    hidden = [i for i, cell in enumerate(shown) if not isinstance(cell, int)]
    counts = [0, 10, 11, 500]
    complementary = sum(1 for c in shown if c == HIDDEN)
    assert sum(counts[i] for i in hidden) >= K * (complementary + 1) - 1
    assert shown[0] == fewer_than(K)


@pytest.mark.parametrize(
    "counts",
    [[1, 2, 30], [9, 9, 100], [5, 500], [0, 0, 0, 10], [12, 3, 12, 12], [0, 0, 40]],
    ids=["one-big", "two-nines", "pair", "zeros", "equal", "zeros-beside-one"],
)
def test_no_small_cell_can_be_worked_out_from_the_total(counts: list[int]) -> None:
    """Brute force: every filling of the hidden cells consistent with what is shown
    and the total leaves each small cell free to be anything from 0 to k - 1.
    """
    shown = suppress_cells(counts, K)
    hidden = [i for i, cell in enumerate(shown) if not isinstance(cell, int)]
    total_hidden = sum(counts) - sum(numbers(shown))
    if all(cell == HIDDEN for cell in shown):
        return  # no label tells one cell from another: only the total is known

    ranges = [
        range(K) if shown[i] == fewer_than(K) else range(K, total_hidden + 1)
        for i in hidden
    ]
    possible: dict[int, set[int]] = {i: set() for i in hidden}
    for filling in itertools.product(*ranges):
        if sum(filling) == total_hidden:
            for i, value in zip(hidden, filling, strict=True):
                possible[i].add(value)
    for i in hidden:
        if shown[i] == fewer_than(K):
            assert len(possible[i]) > 1, f"cell {i} is pinned to {possible[i]}"


def test_preview_of_a_tiny_segment_shows_no_number(population) -> None:
    _, _, index = population

    result = preview(index, request(post_id=["P99"]), K)

    assert result.size == fewer_than(K)
    assert result.reachable == fewer_than(K)
    assert result.expected_responders is None
    assert result.best_offers == []
    assert all(cells == [] for cells in result.breakdowns.values())


def test_preview_hides_the_tiny_post_and_one_more_in_the_post_breakdown(
    population,
) -> None:
    _, _, index = population

    result = preview(index, request(), K)

    by_post = {cell.value: cell.count for cell in result.breakdowns["post_id"]}
    assert by_post["P99"] == fewer_than(K)
    assert list(by_post.values()).count(HIDDEN) >= 1
    assert result.size == 2000


def test_preview_never_contains_a_card_key(population) -> None:
    frame, _, index = population

    text = preview(index, request(), K).model_dump_json()

    assert not any(key in text for key in frame["card_key"].head(50))


def test_expected_responders_is_the_sum_of_the_chosen_need(population) -> None:
    frame, _, index = population
    body = SegmentRequest.model_validate(
        {"filters": {"country": ["US"]}, "need_id": "news_media"}
    )

    result = preview(index, body, K)

    expected = frame.loc[frame["country"] == "US", "p_news_media"].sum()
    assert result.expected_responders == pytest.approx(expected, abs=0.06)
    assert result.need_id == "news_media"


def test_without_a_need_the_top_need_of_the_segment_is_used(population) -> None:
    frame, _, index = population

    result = preview(index, request(), K)

    sums = frame[[f"p_{n}" for n in NEEDS]].sum()
    assert result.need_id == sums.idxmax().removeprefix("p_")


@pytest.mark.parametrize(
    "filters",
    [
        {},
        {"post_id": ["P01", "P03"]},
        {"country": ["JP"], "consent_marketing": True},
        {"language": ["en"], "age_band": ["60+", "18-29"], "generation": [2]},
        {"card_status": ["expired"]},
        {"need": {"need_id": "study_in_taiwan", "min_propensity": 0.2}},
    ],
    ids=["all", "posts", "consent", "mixed", "status", "need"],
)
def test_array_path_gives_the_same_figures_as_pandas(population, filters) -> None:
    frame, offers, index = population
    body = request(**filters)

    fast = index.stats(body)
    slow = stats_with_pandas(frame, offers, body)

    assert fast.size == slow.size
    assert fast.reachable == slow.reachable
    assert fast.need_id == slow.need_id
    assert fast.breakdowns == slow.breakdowns
    assert fast.histogram == slow.histogram
    assert fast.offer_cards == slow.offer_cards
    if slow.expected_responders is not None:
        assert fast.expected_responders == pytest.approx(slow.expected_responders)


def test_need_threshold_keeps_only_card_holders_above_it(population) -> None:
    frame, _, index = population
    body = request(need={"need_id": "business_networking", "min_propensity": 0.3})

    result = preview(index, body, K)

    assert result.size == int((frame["p_business_networking"] >= 0.3).sum())
    assert [b.low for b in result.histogram][:3] == [0.0, 0.1, 0.2]
    assert all(b.count == fewer_than(K) for b in result.histogram[:3])


@pytest.mark.parametrize(
    ("filters", "field"),
    [
        ({"post_id": ["P01", "NOPE"]}, r"filters\.post_id: 'NOPE'"),
        ({"age_band": ["banana"]}, r"filters\.age_band: 'banana'"),
        ({"generation": [99]}, r"filters\.generation: 99"),
    ],
    ids=["post", "age-band", "generation"],
)
def test_a_filter_value_nobody_has_is_refused_naming_the_field(
    population, filters, field
) -> None:
    """A typo in a filter once answered "fewer than 10" as if the segment were tiny."""
    _, _, index = population

    with pytest.raises(InputError, match=field):
        preview(index, request(**filters), K)


def test_an_unscored_need_is_refused_naming_the_field(population) -> None:
    _, _, index = population

    with pytest.raises(InputError, match=r"filters\.need\.need_id"):
        preview(index, request(need={"need_id": "astrology"}), K)


def test_best_offers_leave_out_offers_of_fewer_than_k_card_holders(population) -> None:
    _, _, index = population

    result = preview(index, request(country=["US"]), K)

    assert result.best_offers
    assert all(isinstance(o.cards, int) and o.cards >= K for o in result.best_offers)
    cards = [o.cards for o in result.best_offers]
    assert cards == sorted(cards, reverse=True)


def float32_population(cards: int, seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """A population whose propensities are exact in float32, as the index keeps
    them, so thresholds and histogram bins fall the same way in both paths."""
    frame, offers = scored_population(cards, seed)
    for need in NEEDS:
        frame[f"p_{need}"] = frame[f"p_{need}"].astype(np.float32).astype(float)
    return frame, offers


@pytest.fixture(scope="module")
def exact_population() -> tuple[pd.DataFrame, pd.DataFrame, SegmentIndex]:
    frame, offers = float32_population(2000, 3)
    return frame, offers, SegmentIndex.from_frames(frame, offers, block=50)


def random_request(rng: np.random.Generator, frame: pd.DataFrame) -> SegmentRequest:
    """A request with a random mix of filters, each value one some card holder has."""
    filters: dict[str, object] = {}
    for name in ("post_id", "country", "language", "age_band", "generation"):
        if rng.random() < 0.35:
            levels = sorted(frame[name].unique().tolist())
            chosen = rng.choice(len(levels), rng.integers(1, len(levels) + 1), False)
            filters[name] = [levels[i] for i in sorted(chosen)]
    if rng.random() < 0.2:
        filters["card_status"] = [str(rng.choice(["active", "expired"]))]
    if rng.random() < 0.3:
        filters["consent_marketing"] = bool(rng.random() < 0.5)
    if rng.random() < 0.6:
        threshold = float(rng.choice([0.0, rng.random() * 0.6, rng.random() * 0.1]))
        filters["need"] = {
            "need_id": str(rng.choice(NEEDS)),
            "min_propensity": threshold,
        }
    body: dict[str, object] = {"filters": filters}
    if rng.random() < 0.25:
        body["need_id"] = str(rng.choice(NEEDS))
    return SegmentRequest.model_validate(body)


def assert_same_figures(fast: SegmentStats, slow: SegmentStats) -> None:
    assert fast.size == slow.size
    assert fast.reachable == slow.reachable
    assert fast.need_id == slow.need_id
    assert fast.breakdowns == slow.breakdowns
    assert fast.histogram == slow.histogram
    assert fast.offer_cards == slow.offer_cards
    assert fast.offer_mean_score == pytest.approx(slow.offer_mean_score, rel=1e-9)
    if slow.expected_responders is None:
        assert fast.expected_responders is None
    else:
        assert fast.expected_responders == pytest.approx(
            slow.expected_responders, rel=1e-9, abs=1e-9
        )


@pytest.mark.parametrize(
    ("seed", "block", "marginals"),
    [
        (11, 64, True),
        (12, 64, True),
        (13, 7, True),
        (14, LADDER_BLOCK, True),
        (15, 64, False),
    ],
    ids=[
        "seed-11",
        "seed-12",
        "seed-13-tiny-blocks",
        "seed-14-one-block",
        "seed-15-offers-from-cells",
    ],
)
def test_cells_give_the_same_previews_as_pandas_for_random_filters(
    seed, block, marginals
) -> None:
    """Figures and the whole suppressed preview agree, whichever way the segment
    was put together from cells, offer marginals, a need's ladder and single card
    holders."""
    frame, offers = float32_population(1500, seed)
    index = SegmentIndex.from_frames(frame, offers, {"O1": "Hotel"}, block=block)
    if not marginals:
        index.cells.marginals.clear()
    rng = np.random.default_rng(seed)

    for _ in range(60):
        body = random_request(rng, frame)
        fast = index.stats(body)
        slow = stats_with_pandas(frame, offers, body)

        assert_same_figures(fast, slow)
        for k in (K, 3, 40):
            assert safe_preview(fast, index, body, k) == safe_preview(
                slow, index, body, k
            )


@pytest.mark.parametrize(
    ("filters", "parts"),
    [
        ({"country": ["US"], "min": 0.3}, set()),
        ({"country": ["US", "JP"], "min": 0.3}, {"ladder"}),
        ({"country": ["US"], "min": 0.05}, {"cells"}),
        ({"country": ["US", "JP"], "min": 0.05}, {"ladder", "cells"}),
        ({"min": 0.3}, {"ladder"}),
        ({"min": 0.05}, {"ladder"}),
    ],
    ids=[
        "above-inside",
        "above-outside",
        "below-inside",
        "below-outside",
        "above-everyone",
        "below-everyone",
    ],
)
def test_a_need_threshold_counts_the_smallest_part_card_by_card(
    exact_population, monkeypatch, filters, parts
) -> None:
    """Each way of putting the chosen cells and the threshold together gives the
    pandas figures: card by card, from the ladder, from the cells, or both."""
    frame, offers, index = exact_population
    threshold = filters.pop("min")
    body = request(
        **filters, need={"need_id": "news_media", "min_propensity": threshold}
    )
    used: set[str] = set()
    for part, method in (("ladder", "_ladder_tally"), ("cells", "_cells_tally")):
        original = getattr(index, method)

        def spy(*args, _part=part, _original=original):
            used.add(_part)
            return _original(*args)

        monkeypatch.setattr(index, method, spy)

    fast = index.stats(body)

    assert used == parts
    assert_same_figures(fast, stats_with_pandas(frame, offers, body))


def test_a_segment_nobody_is_in_shows_no_number(exact_population) -> None:
    frame, offers, index = exact_population
    body = request(post_id=["P99"], consent_marketing=True, card_status=["expired"])

    fast = index.stats(body)

    assert_same_figures(fast, stats_with_pandas(frame, offers, body))
    assert preview(index, body, K).size == fewer_than(K)


def test_an_empty_index_answers_with_an_empty_segment() -> None:
    frame, offers = scored_population(50)
    index = SegmentIndex.from_frames(frame.iloc[:0], offers.iloc[:0])

    result = preview(index, request(need={"need_id": "news_media"}), K)

    assert index.stats(request()).size == 0
    assert result.size == fewer_than(K)

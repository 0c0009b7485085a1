"""Batch top-k for every card holder (push bursts): the fast path against the
plain per-card path.

Input: a data folder with a trained champion (``precision demo`` or ``precision
train`` + ``promote`` + ``score``). Its card holders are cloned, with their
interactions and features, until the requested number of cards is reached; the
champion's candidate stage is refitted on the cloned interactions (so warm cards
stay warm) and its re-ranker is kept. Then:

* ours: :func:`training.batch.batch_top_offers` over every card, rules applied
  (chunks on ``--workers`` threads, trees specialised per offer at this size);
* peer: ``OfferModel.recommend`` for one card followed by
  ``rules.apply_rules_per_card``, timed on a sample of cards and extrapolated per
  card to the full size (the output says so);
* the whole-frame path (``recommend`` on a chunk + vectorised ``apply_rules``) on the
  same sample, for reference; both sample outputs are compared with ours, taken
  from the full run (the sample cards' rows of it) and from a run on the sample
  alone with the same settings.

The machine's load average is printed beside the figures; ratios come from the
same run.

Run from the repository root: ``python -m benchmarks.bench_batch --help``.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import time
from pathlib import Path

import numpy as np
import pandas as pd

from features.schema import CARD_KEY, OFFER_ID
from features.settings import Settings
from features.warehouse import Warehouse
from training import tracking
from training.batch import OUTPUT_COLUMNS, SPECIALISE_MIN_CARDS, batch_top_offers
from training.config import TrainingConfig
from training.datasets import offers_service_frames
from training.evaluation import rule_inputs
from training.rules import apply_rules, apply_rules_per_card
from training.scoring import PROPENSITIES_FILE, PROPENSITY_COLUMNS


def cloned_inputs(settings: Settings, cards: int):
    """The champion offer model and its inputs, cloned up to ``cards`` card holders."""
    model, version = tracking.load_champion(tracking.OFFER_MODEL, settings)
    warehouse = Warehouse(settings.warehouse_dir)
    at = warehouse.as_of()
    propensities = pd.read_parquet(settings.scores_dir / PROPENSITIES_FILE)
    propensities = propensities[[CARD_KEY, *PROPENSITY_COLUMNS]]
    keys = propensities[CARD_KEY].astype(str).tolist()
    catalogue = sorted(warehouse.read_table("offers", [OFFER_ID])[OFFER_ID])
    card_features, offer_facts = offers_service_frames(settings, keys, catalogue, at)

    copies = -(-cards // len(keys))
    stage = model.stage_
    matrix = stage.user_items_.tocoo()
    interactions = pd.DataFrame(
        {
            CARD_KEY: np.array(stage.cards_, dtype=object)[matrix.row],
            OFFER_ID: np.array(stage.offers_, dtype=object)[matrix.col],
            "weight": matrix.data,
        }
    )
    card_features = _cloned(card_features, copies).head(cards)
    propensities = _cloned(propensities, copies).head(cards)
    model.refit_candidates(_cloned(interactions, copies), card_features, offer_facts)
    return model, version, card_features, propensities, offer_facts, at


def _cloned(frame: pd.DataFrame, copies: int) -> pd.DataFrame:
    parts = [
        frame.assign(**{CARD_KEY: frame[CARD_KEY].astype(str) + f"~{copy}"})
        for copy in range(copies)
    ]
    return pd.concat(parts, ignore_index=True)


def per_card(model, card_features, propensities, offer_facts, at, k, n):
    """The plain path: one card at a time, recommend then the per-card rules."""
    cards, offers = rule_inputs(card_features, offer_facts)
    frames = []
    for position in range(len(card_features)):
        own = card_features.iloc[[position]]
        card = str(own[CARD_KEY].iloc[0])
        recommended = model.recommend([card], own, propensities, offer_facts, n)
        frames.append(apply_rules_per_card(recommended, cards, offers, at, k))
    return pd.concat(frames, ignore_index=True)[OUTPUT_COLUMNS]


def whole_frame(model, card_features, propensities, offer_facts, at, k, n):
    """Recommend for the whole frame at once, then the vectorised rules."""
    keys = card_features[CARD_KEY].astype(str).tolist()
    recommended = model.recommend(keys, card_features, propensities, offer_facts, n)
    cards, offers = rule_inputs(card_features, offer_facts)
    return apply_rules(recommended, cards, offers, at, k)[OUTPUT_COLUMNS]


def _rows_of(result: pd.DataFrame, sample: pd.DataFrame) -> pd.DataFrame:
    """The sample cards' rows of a full result, cards in the sample's order."""
    order = pd.Series(range(len(sample)), index=sample[CARD_KEY].astype(str))
    rows = result[result[CARD_KEY].isin(order.index)]
    position = rows[CARD_KEY].map(order).to_numpy()
    return rows.iloc[np.argsort(position, kind="stable")].reset_index(drop=True)


def _load() -> str:
    return "load average " + " ".join(f"{v:.1f}" for v in os.getloadavg())


def _same(left: pd.DataFrame, right: pd.DataFrame) -> bool:
    a = left.reset_index(drop=True).astype({"rank": "int64"})
    b = right.reset_index(drop=True).astype({"rank": "int64"})
    return a.equals(b)


def main() -> None:
    """Time both paths and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, default=Path("data"))
    parser.add_argument("--cards", type=int, default=1_000_000)
    parser.add_argument("--sample", type=int, default=300, help="peer's cards")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--workers", type=int, default=None, help="threads for ours (default: CPUs)"
    )
    parser.add_argument("--quick", action="store_true", help="5,000 cards, 1 run")
    args = parser.parse_args()
    if args.quick:
        args.cards, args.sample, args.repeats = 5_000, 50, 1

    config = TrainingConfig()
    k, n = config.k, config.offers.n_candidates
    settings = Settings(data_dir=args.data_dir)
    started = time.perf_counter()
    model, version, cards, propensities, offer_facts, at = cloned_inputs(
        settings, args.cards
    )
    print(
        f"inputs: {len(cards):,} cards cloned from {args.data_dir} (offer model "
        f"v{version}, k={k}, {n} candidates) in {time.perf_counter() - started:.1f} s"
    )

    ours, cpu, result = [], [], None
    print(f"before ours: {_load()}")
    for _ in range(args.repeats):
        started, started_cpu = time.perf_counter(), time.process_time()
        result = batch_top_offers(
            model, cards, propensities, offer_facts, at, k, n, workers=args.workers
        )
        ours.append(time.perf_counter() - started)
        cpu.append(time.process_time() - started_cpu)
    print(f"after ours: {_load()}")
    sample = cards.sample(args.sample, random_state=7)
    started = time.perf_counter()
    plain = per_card(model, sample, propensities, offer_facts, at, k, n)
    plain_per_card = (time.perf_counter() - started) / len(sample)
    started = time.perf_counter()
    frame = whole_frame(model, sample, propensities, offer_facts, at, k, n)
    frame_per_card = (time.perf_counter() - started) / len(sample)
    fast_sample = batch_top_offers(
        model,
        sample,
        propensities,
        offer_facts,
        at,
        k,
        n,
        workers=args.workers,
        specialise=len(cards) >= SPECIALISE_MIN_CARDS,
    )
    full_sample = _rows_of(result, sample)

    median = statistics.median(ours)
    spread = f"{min(ours):.1f}-{max(ours):.1f}"
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(
        f"ours: {len(cards):,} cards in {median:.1f} s median of {len(ours)} "
        f"(spread {spread} s; CPU {statistics.median(cpu):.1f} s median), "
        f"{len(result):,} offers kept, peak RSS {peak:,.0f} MiB"
    )
    print(
        f"plain per-card path: {plain_per_card * 1e3:.2f} ms per card measured on "
        f"{len(sample)} cards; extrapolated to {len(cards):,} cards: "
        f"{plain_per_card * len(cards) / 60:.1f} min"
    )
    print(
        f"whole-frame path (recommend + vectorised rules) on the same sample: "
        f"{frame_per_card * 1e3:.2f} ms per card; extrapolated: "
        f"{frame_per_card * len(cards) / 60:.1f} min"
    )
    print(
        f"speed-up over the plain path: {plain_per_card * len(cards) / median:.0f}x;"
        f" over the whole-frame path: {frame_per_card * len(cards) / median:.0f}x;"
        f" goal 1,000,000 cards in at most 120 s: "
        f"{'met' if median <= 120 and len(cards) >= 1_000_000 else 'not shown'}"
    )
    same = all(
        _same(ours_rows, reference)
        for ours_rows in (fast_sample, full_sample)
        for reference in (plain, frame)
    )
    print(
        f"same top-k and scores as both reference paths on the {len(sample)}-card "
        f"sample (from the full run and from a sample-only run): {same}"
    )
    if not same:
        raise SystemExit("the fast path differs from the per-card path")


if __name__ == "__main__":
    main()

"""Full retrain of both models: generate (or reuse) a warehouse, build the feature
tables, then train, evaluate, log and register the needs and offer models.

Prints the wall time of each stage and the peak resident memory of the process
tree (this process and its finished children, ``ru_maxrss``). The generator makes
about 29 events per card and has no setting for more; the event count it made is
printed beside the card count.

Run from the repository root: ``python -m benchmarks.bench_retrain --help``.
"""

from __future__ import annotations

import argparse
import os
import resource
import tempfile
import time
from pathlib import Path

import duckdb

from features.feature_tables import build_feature_tables
from features.generator import generate, write_generated
from features.settings import Settings
from features.warehouse import Warehouse
from training.config import TrainingConfig
from training.pipeline import train

EVENT_TABLES = ("service_events", "offer_events", "push_events")


def peak_rss_mib() -> float:
    """Peak resident memory of this process and its waited-for children."""
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return max(own, children) / 1024


def event_count(warehouse: Warehouse) -> int:
    """Rows of the event tables."""
    total = 0
    for table in EVENT_TABLES:
        path = warehouse.directory / f"{table}.parquet"
        if path.exists():
            query = f"select count(*) from read_parquet('{path}')"
            total += duckdb.sql(query).fetchall()[0][0]
    return total


def main() -> None:
    """Run the stages and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cards", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument(
        "--data-dir",
        type=Path,
        help="reuse the warehouse in DATA_DIR/warehouse (features and models are "
        "written beside it); a fresh temporary folder when omitted",
    )
    parser.add_argument("--quick", action="store_true", help="2,000 cards")
    args = parser.parse_args()
    if args.quick:
        args.cards = 2_000

    data_dir = args.data_dir or Path(tempfile.mkdtemp(prefix="bench-retrain-"))
    os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{(data_dir / 'mlflow.db')}"
    settings = Settings(data_dir=data_dir, pseudonym_secret="bench-retrain-secret-0")
    warehouse = Warehouse(settings.warehouse_dir)
    stages: list[tuple[str, float]] = []

    if not (warehouse.directory / "card_holders.parquet").exists():
        started = time.perf_counter()
        write_generated(generate(cards=args.cards, seed=args.seed), warehouse)
        stages.append(("generate", time.perf_counter() - started))
    cards = warehouse.meta().get("cards", args.cards)
    events = event_count(warehouse)

    started = time.perf_counter()
    build_feature_tables(warehouse, settings.secret_bytes, settings.feature_dir)
    stages.append(("build features", time.perf_counter() - started))
    started = time.perf_counter()
    result = train(settings, TrainingConfig())
    stages.append(("train both models", time.perf_counter() - started))

    print(f"data folder {data_dir}: {cards:,} cards, {events:,} events")
    for name, seconds in stages:
        print(f"  {name:<20} {seconds:8.1f} s")
    retrain = sum(s for n, s in stages if n != "generate")
    print(
        f"retrain (features + training): {retrain / 60:.1f} min; peak RSS "
        f"{peak_rss_mib():,.0f} MiB; run {result.run_id}"
    )


if __name__ == "__main__":
    main()

"""Feature store costs: point-in-time retrieval, materialization and online reads.

Compares, on the same generated warehouse and in the same run:
- historical retrieval: Feast ``get_historical_features`` vs our DuckDB ASOF join
  (median of repeats; the two frames must be identical);
- materialization: Feast's stock ``materialize`` vs our bulk writer (time per row
  and peak memory, each in a fresh process);
- online reads through Feast ``get_online_features``: p50/p99 for 1 and 100 cards.

Run ``python -m benchmarks.bench_features --cards 200000`` (``--quick`` for CI).
"""

from __future__ import annotations

import argparse
import multiprocessing
import resource
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

SECRET = "benchmark-secret-0123456789abcdef"


def prepare(data_dir: Path, cards: int, seed: int) -> float:
    """Generate the warehouse and build the feature tables; returns seconds."""
    from features.feature_tables import build_feature_tables
    from features.generator import generate
    from features.settings import Settings
    from features.warehouse import Warehouse

    settings = Settings(data_dir=data_dir, pseudonym_secret=SECRET)
    warehouse = Warehouse(settings.warehouse_dir)
    if not warehouse.exists():
        generated = generate(cards=cards, seed=seed)
        warehouse.write_tables(generated.tables, generated.meta, replace=True)
    started = time.perf_counter()
    build_feature_tables(warehouse, settings.secret_bytes, settings.feature_dir)
    return time.perf_counter() - started


def _materialize_child(data_dir: str, engine: str, project: str, queue) -> None:
    from features import store
    from features.settings import Settings

    settings = Settings(data_dir=Path(data_dir), pseudonym_secret=SECRET)
    store.apply(settings, project=project)
    started = time.perf_counter()
    written = store.materialize(
        settings, progress=False, engine=engine, project=project, views=CARD_VIEWS
    )
    elapsed = time.perf_counter() - started
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    queue.put((elapsed, peak_mb, written))


CARD_VIEWS = ["card_profile", "push_engagement", "service_use", "offer_history"]


def bench_materialize(data_dir: Path, engine: str) -> tuple[float, float, int]:
    """Materialize the card views in a fresh process: seconds, peak MB, rows."""
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    child = context.Process(
        target=_materialize_child,
        args=(str(data_dir), engine, f"bench_{engine}", queue),
    )
    child.start()
    elapsed, peak_mb, written = queue.get()
    child.join()
    return elapsed, peak_mb, sum(written.values())


def entity_frame(data_dir: Path, rows: int, seed: int) -> pd.DataFrame:
    """Card rows at random times inside the snapshot range, with labels."""
    profile = pd.read_parquet(
        data_dir / "features" / "card_profile.parquet",
        columns=["card_key", "event_timestamp"],
    )
    rng = np.random.default_rng(seed)
    keys = profile["card_key"].unique()
    start, end = profile["event_timestamp"].min(), profile["event_timestamp"].max()
    seconds = rng.integers(0, int((end - start).total_seconds()), size=rows)
    return pd.DataFrame(
        {
            "card_key": rng.choice(keys, size=rows),
            "event_timestamp": start + pd.to_timedelta(seconds, unit="s"),
            "label": rng.integers(0, 2, size=rows),
        }
    )


def bench_historical(
    data_dir: Path, rows: int, repeats: int, seed: int
) -> dict[str, float]:
    from features import store
    from features.settings import Settings

    settings = Settings(data_dir=data_dir, pseudonym_secret=SECRET)
    store.apply(settings)
    entities = entity_frame(data_dir, rows, seed)
    timings: dict[str, list[float]] = {"duckdb": [], "feast": []}
    frames = {}
    for _ in range(repeats):
        for engine in timings:
            started = time.perf_counter()
            frames[engine] = store.historical_features(
                entities, "needs_v1", settings, engine=engine
            )
            timings[engine].append(time.perf_counter() - started)
    pd.testing.assert_frame_equal(frames["duckdb"], frames["feast"])
    return {engine: statistics.median(values) for engine, values in timings.items()}


def _latencies(read, keys: np.ndarray, batch: int, reads: int, seed: int) -> tuple:
    rng = np.random.default_rng(seed)
    latencies = []
    for _ in range(reads):
        chosen = rng.choice(keys, size=batch).tolist()
        started = time.perf_counter()
        read(chosen)
        latencies.append((time.perf_counter() - started) * 1000)
    return np.percentile(latencies, 50), np.percentile(latencies, 99)


def bench_online(data_dir: Path, reads: int, seed: int) -> dict[str, dict]:
    """p50/p99 ms of stock ``get_online_features`` and of ``online_features``.

    Stock runs first, with the collector as Feast leaves it; ours then runs after
    ``prepare_online_reads`` (open store reused, objects frozen after warm-up).
    """
    from features import store
    from features.settings import Settings

    settings = Settings(data_dir=data_dir, pseudonym_secret=SECRET)
    keys = pd.read_parquet(
        data_dir / "features" / "card_profile.parquet", columns=["card_key"]
    )["card_key"].unique()
    stock_store = store.open_store(settings, project="bench_fast")
    service = stock_store.get_feature_service("needs_v1")

    def stock(chosen: list[str]) -> None:
        stock_store.get_online_features(
            features=service, entity_rows={"card_key": chosen}
        ).to_dict()

    def ours(chosen: list[str]) -> None:
        store.online_features(chosen, "needs_v1", settings, project="bench_fast")

    results: dict[str, dict] = {"stock": {}, "ours": {}}
    for batch in (1, 100):
        results["stock"][batch] = _latencies(stock, keys, batch, reads, seed)
    store.prepare_online_reads(settings, ["needs_v1"], project="bench_fast")
    for batch in (1, 100):
        results["ours"][batch] = _latencies(ours, keys, batch, reads, seed)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cards", type=int, default=200_000)
    parser.add_argument("--rows", type=int, default=200_000, help="entity rows")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--reads", type=int, default=300)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--data-dir", type=Path, help="reuse a warehouse folder")
    parser.add_argument("--quick", action="store_true", help="tiny sizes for CI")
    args = parser.parse_args()
    if args.quick:
        args.cards, args.rows, args.repeats, args.reads = 1_000, 2_000, 1, 20

    with tempfile.TemporaryDirectory(prefix="bench-features-") as scratch:
        data_dir = args.data_dir or Path(scratch)
        build_s = prepare(data_dir, args.cards, args.seed)
        print(f"cards: {args.cards:,}; feature tables built in {build_s:.1f} s")

        medians = bench_historical(data_dir, args.rows, args.repeats, args.seed)
        ratio = medians["feast"] / medians["duckdb"]
        print(
            f"historical retrieval, {args.rows:,} rows x 4 views (needs_v1), median "
            f"of {args.repeats}: Feast {medians['feast']:.2f} s, DuckDB "
            f"{medians['duckdb']:.2f} s, {ratio:.1f}x; frames identical"
        )

        per_key = {}
        for engine in ("feast", "fast"):
            elapsed, peak_mb, keys = bench_materialize(data_dir, engine)
            per_key[engine] = elapsed / keys
            print(
                f"materialize card views ({engine}): {keys:,} keys in {elapsed:.1f} s "
                f"({elapsed / keys * 1e6:.1f} us per key), peak {peak_mb:,.0f} MB"
            )
        print(f"materialize: fast is {per_key['feast'] / per_key['fast']:.1f}x stock")

        online = bench_online(data_dir, args.reads, args.seed)
        for batch in (1, 100):
            (s50, s99), (o50, o99) = online["stock"][batch], online["ours"][batch]
            print(
                f"online read needs_v1, {batch} card(s), {args.reads} reads: stock "
                f"get_online_features p50 {s50:.2f} ms p99 {s99:.2f} ms; "
                f"online_features (frozen, shared store) p50 {o50:.2f} ms "
                f"p99 {o99:.2f} ms"
            )


if __name__ == "__main__":
    main()

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
import os
import resource
import socket
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

SECRET = "benchmark-secret-0123456789abcdef"


def prepare(data_dir: Path, cards: int, seed: int) -> tuple[float, float]:
    """Generate the warehouse and build the feature tables.

    Returns:
        Seconds of the build, and the peak MB of this process so far (the
        generation included when the warehouse was generated here).
    """
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
    elapsed = time.perf_counter() - started
    return elapsed, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _materialize_child(
    data_dir: str, engine: str, online: str, project: str, queue
) -> None:
    from features import store
    from features.settings import Settings

    settings = Settings(
        data_dir=Path(data_dir), pseudonym_secret=SECRET, online_store=online
    )
    store.apply(settings, project=project)
    started = time.perf_counter()
    written = store.materialize(
        settings, progress=False, engine=engine, project=project, views=CARD_VIEWS
    )
    elapsed = time.perf_counter() - started
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    queue.put((elapsed, peak_mb, written))


CARD_VIEWS = ["card_profile", "push_engagement", "service_use", "offer_history"]
REDIS = ("127.0.0.1", 6379)


def bench_materialize(
    data_dir: Path, engine: str, online: str = "sqlite"
) -> tuple[float, float, int, float]:
    """Materialize the card views in a fresh process.

    Returns:
        Seconds, peak MB of the process, keys written, and the MB Redis grew by
        (0 for SQLite); a Redis project's keys are deleted afterwards.
    """
    project = f"bench_{engine}_{online}"
    before = _redis_used_mb() if online == "redis" else 0.0
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    child = context.Process(
        target=_materialize_child,
        args=(str(data_dir), engine, online, project, queue),
    )
    child.start()
    elapsed, peak_mb, written = queue.get()
    child.join()
    grown = 0.0
    if online == "redis":
        grown = _redis_used_mb() - before
        _remove_redis_project(project)
    return elapsed, peak_mb, sum(written.values()), grown


def _redis_used_mb() -> float:
    import redis

    client = redis.Redis(*REDIS)
    try:
        return client.info("memory")["used_memory"] / 2**20
    finally:
        client.close()


def _remove_redis_project(project: str) -> None:
    """Delete every key Feast wrote for ``project`` (each key ends with it)."""
    import redis

    client = redis.Redis(*REDIS)
    try:
        batch = []
        for key in client.scan_iter(match=f"*{project}".encode(), count=10_000):
            batch.append(key)
            if len(batch) == 10_000:
                client.unlink(*batch)
                batch = []
        if batch:
            client.unlink(*batch)
    finally:
        client.close()


def redis_answers() -> bool:
    try:
        with socket.create_connection(REDIS, timeout=1):
            return True
    except OSError:
        return False


def replicate_card_tables(source: Path, target: Path, copies: int) -> int:
    """Card feature tables with ``copies`` times the cards, for load tests only.

    Each copy of a card's rows gets its key suffixed with the copy number, so the
    tables keep their value distributions with ``copies`` times the keys. The
    other tables are linked unchanged. Returns the number of cards.
    """
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    (target / "features").mkdir(parents=True, exist_ok=True)
    cards = 0
    for path in (source / "features").glob("*.parquet"):
        destination = target / "features" / path.name
        if destination.exists():
            continue
        if path.stem not in CARD_VIEWS:
            destination.symlink_to(path.resolve())
            continue
        table = pq.read_table(path)
        with pq.ParquetWriter(destination, table.schema) as writer:
            for copy in range(copies):
                keys = pc.binary_join_element_wise(
                    table.column("card_key"), f"{copy:02d}", ""
                )
                index = table.schema.get_field_index("card_key")
                writer.write_table(table.set_column(index, "card_key", keys))
    profile = pq.read_table(
        target / "features" / "card_profile.parquet", columns=["card_key"]
    )
    cards = len(pc.unique(profile.column(0)))
    return cards


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


def bench_online(data_dir: Path, reads: int, seed: int) -> dict[str, dict]:
    """p50/p99 wall ms and p50 CPU ms of stock reads and of ``online_features``.

    Stock (Feast's ``get_online_features(...).to_dict()``) first runs alone with
    the collector as Feast leaves it; then ``prepare_online_reads`` freezes the
    objects alive and stock and ours read the same cards, call by call, so load
    from other processes falls on both alike.
    """
    from features import store
    from features.online_layout import LayoutReader
    from features.settings import Settings

    settings = Settings(data_dir=data_dir, pseudonym_secret=SECRET)
    keys = pd.read_parquet(
        data_dir / "features" / "card_profile.parquet", columns=["card_key"]
    )["card_key"].unique()
    store.apply(settings, project="bench_online")
    store.materialize(settings, progress=False, project="bench_online")
    stock_store = store.open_store(settings, project="bench_online")
    service = stock_store.get_feature_service("needs_v1")

    def stock(chosen: list[str]) -> None:
        stock_store.get_online_features(
            features=service, entity_rows={"card_key": chosen}
        ).to_dict()

    def ours(chosen: list[str]) -> None:
        store.online_features(chosen, "needs_v1", settings, project="bench_online")

    layout = LayoutReader(stock_store, "needs_v1")

    results: dict[str, dict] = {"stock alone": {}, "stock": {}, "ours": {}}
    results["layout"] = {}
    _read_latencies(results, {"stock alone": stock}, keys, reads, seed)
    store.prepare_online_reads(settings, ["needs_v1"], project="bench_online")
    readers = {"stock": stock, "ours": ours, "layout": layout.rows}
    _read_latencies(results, readers, keys, reads, seed)
    return results


def _read_latencies(
    results: dict[str, dict], readers: dict, keys: np.ndarray, reads: int, seed: int
) -> None:
    """Time the readers on the same random cards, interleaved call by call."""
    rng = np.random.default_rng(seed)
    for batch in (1, 100):
        wall: dict[str, list[float]] = {name: [] for name in readers}
        cpu: dict[str, list[float]] = {name: [] for name in readers}
        for _ in range(reads):
            chosen = rng.choice(keys, size=batch).tolist()
            for name, read in readers.items():
                started, started_cpu = time.perf_counter(), time.thread_time()
                read(chosen)
                cpu[name].append((time.thread_time() - started_cpu) * 1000)
                wall[name].append((time.perf_counter() - started) * 1000)
        for name in readers:
            results[name][batch] = (
                float(np.percentile(wall[name], 50)),
                float(np.percentile(wall[name], 99)),
                float(np.percentile(cpu[name], 50)),
            )


ONLINE_LABELS = {
    "stock alone": "stock get_online_features().to_dict(), collector untouched",
    "stock": "stock, interleaved with ours after objects were frozen",
    "ours": "online_features typed frame, after prepare_online_reads",
    "layout": "the service's read: rows from the store's layout, values decoded once",
}


def report_materialize(data_dir: Path, engines: list[str], online: list[str]) -> None:
    """Print time, memory and speed-up of each materialization engine."""
    per_key = {}
    for store_type in online:
        if store_type == "redis" and not redis_answers():
            print("materialize on Redis: skipped, no Redis server on 127.0.0.1:6379")
            continue
        for engine in engines:
            elapsed, peak_mb, keys, grown = bench_materialize(
                data_dir, engine, store_type
            )
            per_key[engine, store_type] = elapsed / keys
            redis_note = f", Redis grew {grown:,.0f} MB (deleted)" if grown else ""
            print(
                f"materialize card views ({engine}, {store_type}): {keys:,} keys in "
                f"{elapsed:.1f} s ({elapsed / keys * 1e6:.1f} us per key), peak "
                f"{peak_mb:,.0f} MB{redis_note}"
            )
        if ("feast", store_type) in per_key and ("fast", store_type) in per_key:
            ratio = per_key["feast", store_type] / per_key["fast", store_type]
            print(f"materialize ({store_type}): fast is {ratio:.1f}x stock per key")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cards", type=int, default=200_000)
    parser.add_argument("--rows", type=int, default=200_000, help="entity rows")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--reads", type=int, default=300)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--data-dir", type=Path, help="reuse a warehouse folder")
    parser.add_argument("--online", default="sqlite,redis", help="online stores")
    parser.add_argument(
        "--no-stock-materialize",
        action="store_true",
        help="skip Feast's own materialization (hours at a million cards)",
    )
    parser.add_argument(
        "--replicate",
        type=int,
        default=0,
        help="only materialize, on card tables copied this many times",
    )
    parser.add_argument(
        "--reuse-features", action="store_true", help="skip the feature build"
    )
    parser.add_argument(
        "--materialize-only",
        action="store_true",
        help="measure materialization alone (with --data-dir and --reuse-features "
        "for a large warehouse built before)",
    )
    parser.add_argument("--quick", action="store_true", help="tiny sizes for CI")
    args = parser.parse_args()
    if args.quick:
        args.cards, args.rows, args.repeats, args.reads = 1_000, 2_000, 1, 20
    online = [name for name in args.online.split(",") if name]
    engines = ["fast"] if args.no_stock_materialize else ["feast", "fast"]
    print(f"load average at start: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")

    with tempfile.TemporaryDirectory(prefix="bench-features-") as scratch:
        data_dir = args.data_dir or Path(scratch)
        if args.reuse_features and (data_dir / "features").exists():
            print(f"feature tables reused from {data_dir / 'features'}")
        else:
            build_s, build_mb = prepare(data_dir, args.cards, args.seed)
            print(
                f"cards: {args.cards:,}; feature tables built in {build_s:.1f} s, "
                f"peak {build_mb:,.0f} MB"
            )
        if args.replicate:
            wide = data_dir.with_name(f"{data_dir.name}-x{args.replicate}")
            cards = replicate_card_tables(data_dir, wide, args.replicate)
            print(f"card tables copied {args.replicate}x: {cards:,} cards")
            report_materialize(wide, engines, online)
            return
        if args.materialize_only:
            report_materialize(data_dir, engines, online)
            return

        medians = bench_historical(data_dir, args.rows, args.repeats, args.seed)
        ratio = medians["feast"] / medians["duckdb"]
        print(
            f"historical retrieval, {args.rows:,} rows x 4 views (needs_v1), median "
            f"of {args.repeats}: Feast {medians['feast']:.2f} s, DuckDB "
            f"{medians['duckdb']:.2f} s, {ratio:.1f}x; frames identical"
        )

        report_materialize(data_dir, engines, online)

        online_ms = bench_online(data_dir, args.reads, args.seed)
        for batch in (1, 100):
            print(f"online read needs_v1, {batch} card(s), {args.reads} reads:")
            for name, label in ONLINE_LABELS.items():
                p50, p99, cpu = online_ms[name][batch]
                print(
                    f"  {label}: p50 {p50:.2f} ms, p99 {p99:.2f} ms, "
                    f"CPU p50 {cpu:.2f} ms"
                )
            for name in ("ours", "layout"):
                ratio = online_ms["stock alone"][batch][0] / online_ms[name][batch][0]
                print(f"  p50: {name} {ratio:.2f}x faster than stock alone")
    print(f"load average at end: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()

"""Time and peak memory of generating the warehouse and building its features.

Each size runs in a fresh child process so that its peak resident memory
(``ru_maxrss``) belongs to that size alone. The steps are the main job's first half:
generate, validate and write the warehouse, build the feature tables, apply the
Feast repo and fill the SQLite online store.

    python -m benchmarks.bench_warehouse            # default size and 1,000,000 cards
    python -m benchmarks.bench_warehouse --quick    # 2,000 cards, for CI
    python -m benchmarks.bench_warehouse --no-build # the warehouse alone
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import resource
import tempfile
import time
from pathlib import Path

DEFAULT_CARDS = 20_000
LARGE_CARDS = 1_000_000
QUICK_CARDS = 2_000


def _build_features(directory: str) -> dict[str, float]:
    """Build feature tables, apply Feast and materialize; seconds per step."""
    import secrets

    from features.feature_tables import build_feature_tables, default_snapshots
    from features.settings import Settings
    from features.warehouse import Warehouse

    settings = Settings(
        data_dir=Path(directory), pseudonym_secret=secrets.token_hex(16)
    )
    warehouse = Warehouse(settings.warehouse_dir)

    started = time.perf_counter()
    build_feature_tables(
        warehouse,
        settings.secret_bytes,
        settings.feature_dir,
        default_snapshots(warehouse.as_of()),
    )
    built_at = time.perf_counter()

    from features.store import apply, materialize

    apply(settings)
    applied_at = time.perf_counter()
    materialize(settings, progress=False)
    return {
        "features_s": built_at - started,
        "apply_s": applied_at - built_at,
        "materialize_s": time.perf_counter() - applied_at,
    }


def _generate_and_write(
    cards: int, seed: int, directory: str, build: bool, queue
) -> None:
    """Child process: generate, store and build; report seconds and rows."""
    from features.generator import generate, write_generated
    from features.warehouse import Warehouse

    started = time.perf_counter()
    generated = generate(cards=cards, seed=seed)
    generated_at = time.perf_counter()
    write_generated(generated, Warehouse(Path(directory) / "warehouse"))
    stored_at = time.perf_counter()
    events = sum(
        len(generated.tables[name])
        for name in ("service_events", "offer_events", "push_events")
    )
    del generated
    result = {
        "generate_s": generated_at - started,
        "write_s": stored_at - generated_at,
        "events": events,
    }
    if build:
        result.update(_build_features(directory))
    queue.put(result)


def measure_generate(cards: int, seed: int = 7, build: bool = True) -> dict[str, float]:
    """Generate and store ``cards`` card holders (and build features) in a child.

    Returns:
        Wall seconds to generate and to validate and write, the child's CPU
        seconds, the event count, and peak resident memory in MiB (the largest of
        the children measured so far, so measure sizes in increasing order).
    """
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu_before = before.ru_utime + before.ru_stime
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    with tempfile.TemporaryDirectory(prefix="bench-warehouse-") as directory:
        child = context.Process(
            target=_generate_and_write, args=(cards, seed, directory, build, queue)
        )
        child.start()
        result = queue.get()
        child.join()
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    result.update(
        cards=cards,
        peak_rss_mib=usage.ru_maxrss / 1024,
        cpu_s=usage.ru_utime + usage.ru_stime - cpu_before,
    )
    return result


def report(result: dict[str, float]) -> str:
    """One line per measured size."""
    line = (
        f"{result['cards']:>9,} cards: generate {result['generate_s']:7.1f} s, "
        f"validate+write {result['write_s']:6.1f} s, {result['events']:>11,} events"
    )
    if "features_s" in result:
        line += (
            f", feature tables {result['features_s']:6.1f} s, "
            f"apply {result['apply_s']:5.1f} s, "
            f"materialize {result['materialize_s']:6.1f} s"
        )
    return line + (
        f"; CPU {result['cpu_s']:7.1f} s, peak RSS {result['peak_rss_mib']:8.0f} MiB"
    )


def main() -> None:
    """Measure the sizes asked for and print one line each (and JSON with --json)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small CI-size run")
    parser.add_argument("--cards", type=int, nargs="*", help="sizes to measure")
    parser.add_argument("--json", action="store_true", help="print JSON lines too")
    parser.add_argument(
        "--no-build",
        action="store_true",
        help="measure the warehouse alone, without feature tables and stores",
    )
    args = parser.parse_args()

    sizes = args.cards or (
        [QUICK_CARDS] if args.quick else [DEFAULT_CARDS, LARGE_CARDS]
    )
    for cards in sizes:
        result = measure_generate(cards, build=not args.no_build)
        print(report(result), flush=True)
        if args.json:
            print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()

"""Full retrain of both models: generate (or reuse) a warehouse, build the feature
tables, then train, evaluate, log and register the needs and offer models.

Prints a table of the wall time, the CPU time (every thread of this process; less
sensitive than wall time to other jobs on the machine) and the peak resident
memory of every stage: the feature tables, built once with every snapshot
training joins at, then each stage that :func:`training.pipeline.train` reports. A
stage's peak is the kernel's high-water mark of this process (``VmHWM``), reset
at the start of the stage; DuckDB and LightGBM work in this process, so their
memory is counted. Resetting the mark also resets this process's ``ru_maxrss``,
so the run's peak is the highest stage peak. ``--impressions`` sets the
generator's offer impressions per card and month (2.5 gives about 47 events per
card, the default here) when a warehouse is generated. ``kill -USR1 <pid>``
prints where a long stage is.

Run from the repository root: ``python -m benchmarks.bench_retrain --help``.
"""

from __future__ import annotations

import argparse
import faulthandler
import os
import resource
import signal
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import duckdb

from features.feature_tables import build_feature_tables
from features.generator import IMPRESSIONS_PER_PERIOD, generate, write_generated
from features.settings import Settings
from features.warehouse import Warehouse
from training.config import TrainingConfig
from training.pipeline import train, training_snapshots

EVENT_TABLES = ("service_events", "offer_events", "push_events")
STATUS = Path("/proc/self/status")
CLEAR_REFS = Path("/proc/self/clear_refs")
MIB_PER_KIB = 1024
# About 47 events per card: the event volume of the retrain budget.
BUDGET_IMPRESSIONS = 2.5


def peak_rss_mib() -> float:
    """Peak resident memory of this process and its waited-for children."""
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return max(own, children) / MIB_PER_KIB


def _status_mib(field_name: str) -> float | None:
    """A ``Vm*`` field of this process in MiB, or None where /proc is missing."""
    try:
        for line in STATUS.read_text().splitlines():
            if line.startswith(f"{field_name}:"):
                return int(line.split()[1]) / MIB_PER_KIB
    except OSError:
        return None
    return None


def cpu_seconds() -> float:
    """User and system CPU time of this process, every thread included."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _reset_high_water_mark() -> bool:
    """Reset the kernel's peak RSS of this process (Linux 4.0 and later)."""
    try:
        CLEAR_REFS.write_text("5")
    except OSError:
        return False
    return True


@dataclass
class StageMeter:
    """Wall time and peak resident memory of consecutive named stages."""

    rows: list[tuple[str, float, float, float | None, float | None]] = field(
        default_factory=list
    )
    _name: str | None = None
    _started: float = 0.0
    _cpu_started: float = 0.0
    _exact: bool = True

    def start(self, name: str) -> None:
        """Close the running stage (if any) and open ``name``."""
        self.stop()
        print(f"{time.strftime('%H:%M:%S')} {name}", flush=True)
        self._exact = _reset_high_water_mark()
        self._name = name
        self._started = time.perf_counter()
        self._cpu_started = cpu_seconds()

    def stop(self) -> None:
        """Close the running stage."""
        if self._name is None:
            return
        seconds = time.perf_counter() - self._started
        cpu = cpu_seconds() - self._cpu_started
        peak = _status_mib("VmHWM") if self._exact else None
        self.rows.append((self._name, seconds, cpu, peak, _status_mib("VmRSS")))
        self._name = None

    def total(self, skip: tuple[str, ...] = ()) -> float:
        """Seconds of every stage not named in ``skip``."""
        return sum(row[1] for row in self.rows if row[0] not in skip)

    def peak_mib(self) -> float:
        """The highest stage peak, or the process's ``ru_maxrss`` if higher."""
        stage_peaks = [row[3] for row in self.rows if row[3] is not None]
        return max([*stage_peaks, peak_rss_mib()])

    def print_table(self) -> None:
        """One line per stage: wall and CPU seconds, share, peak and end RSS."""
        whole = self.total() or 1.0
        header = ("seconds", "cpu s", "share", "peak MiB", "end MiB")
        print(f"  {'stage':<40} " + " ".join(f"{h:>8}" for h in header))
        for name, seconds, cpu, peak, end in self.rows:
            peak_text = f"{peak:8,.0f}" if peak is not None else f"{'n/a':>8}"
            end_text = f"{end:8,.0f}" if end is not None else f"{'n/a':>8}"
            print(
                f"  {name:<40} {seconds:8.1f} {cpu:8.1f} {seconds / whole:8.1%} "
                f"{peak_text} {end_text}"
            )


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
        "--impressions",
        type=float,
        default=BUDGET_IMPRESSIONS,
        help="offer impressions per card and month when a warehouse is generated: "
        f"{BUDGET_IMPRESSIONS} (the default) gives about 47 events per card, the "
        "volume the retrain budget is set for; the generator's own default is "
        f"{IMPRESSIONS_PER_PERIOD}",
    )
    parser.add_argument(
        "--data-dir",
        type=Path,
        help="reuse the warehouse in DATA_DIR/warehouse (features and models are "
        "written beside it); a fresh temporary folder when omitted",
    )
    parser.add_argument("--quick", action="store_true", help="2,000 cards")
    args = parser.parse_args()
    # `kill -USR1 <pid>` prints where the run is, for a long stage.
    faulthandler.register(signal.SIGUSR1, all_threads=False)
    if args.quick:
        args.cards = 2_000

    data_dir = args.data_dir or Path(tempfile.mkdtemp(prefix="bench-retrain-"))
    os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{(data_dir / 'mlflow.db')}"
    secret = os.environ.get("PRECISION_PSEUDONYM_SECRET", "bench-retrain-secret-0")
    settings = Settings(data_dir=data_dir, pseudonym_secret=secret)
    warehouse = Warehouse(settings.warehouse_dir)
    config = TrainingConfig()
    meter = StageMeter()

    if not (warehouse.directory / "card_holders.parquet").exists():
        meter.start("generate")
        generated = generate(
            cards=args.cards,
            seed=args.seed,
            impressions_per_period=args.impressions,
        )
        write_generated(generated, warehouse)
        del generated
    meta = warehouse.meta()
    cards = meta.get("cards", args.cards)
    impressions = meta.get("impressions_per_period", args.impressions)
    events = event_count(warehouse)

    # Every snapshot training joins to, so training does not rebuild the tables.
    meter.start("build features")
    build_feature_tables(
        warehouse,
        settings.secret_bytes,
        settings.feature_dir,
        training_snapshots(warehouse, config),
    )
    result = train(settings, config, progress=meter.start)
    meter.stop()

    print(
        f"data folder {data_dir}: {cards:,} cards, {events:,} events "
        f"({events / max(cards, 1):.1f} per card), impressions per period "
        f"{impressions}"
    )
    meter.print_table()
    retrain = meter.total(skip=("generate",))
    cpu = sum(row[2] for row in meter.rows if row[0] != "generate")
    print(
        f"retrain (features + training): {retrain / 60:.1f} min wall, "
        f"{cpu / 60:.1f} min CPU; peak RSS "
        f"{meter.peak_mib():,.0f} MiB; run {result.run_id}"
    )


if __name__ == "__main__":
    main()

"""ALS training time: the offer model's ALS stage against Spark MLlib ALS.

Both trainers get the same seeded card x offer matrix (with a planted low-rank taste)
and the same settings; the script times the fit of each, prints the ratio, and checks
that both reach comparable recall@10 on entries held out of the training matrix, so
that faster does not mean different.

How the settings map:

* rank / factors, iterations / maxIter and regularization / regParam take the same
  values. Spark scales regParam by each row's number of ratings (ALS-WR); implicit
  adds it unscaled, so the same number regularises Spark more. The quality check
  shows what that costs.
* Confidence: Spark uses ``1 + alpha * r`` for an observed entry ``r``. Our stage
  (implicit) uses the stored weight itself as the confidence, scaled by its own
  alpha. We therefore give our stage the weights ``1 + alpha * r`` with its alpha set
  to 1, and Spark the raw ``r`` with ``alpha``: both solve the same objective.
* Solver: implicit runs three conjugate-gradient steps per row and sweep; Spark
  solves each row exactly (Cholesky). Threads: implicit uses both cores; Spark runs in
  ``local[2]``.
* What is timed: our ``ALSRecommender.fit`` on the CSR matrix; Spark's ``ALS.fit``
  on a cached DataFrame plus the count of both factor tables. Building the inputs,
  starting the JVM and reading the factors back are not timed.

Run from the repository root: ``python -m benchmarks.bench_als --help``.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import statistics
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import typer
from scipy import sparse

from benchmarks.synthetic_interactions import (
    SyntheticInteractions,
    hold_out,
    make_card_offers,
)
from features.logs import configure_logging
from training.ranking_metrics import recall_at_k
from training.recommenders import ALSRecommender

logger = logging.getLogger(__name__)

TOP_K = 10
LOOPBACK = "127.0.0.1"
FULL_SIZE = {"cards": 200_000, "offers": 2_000, "interactions": 5_000_000}
QUICK_SIZE = {"cards": 3_000, "offers": 300, "interactions": 60_000}
FULL_MODEL = {"factors": 64, "iterations": 15, "repeats": 3, "evaluated_cards": 10_000}
QUICK_MODEL = {"factors": 16, "iterations": 5, "repeats": 3, "evaluated_cards": 1_000}

app = typer.Typer(add_completion=False)


@dataclass
class Settings:
    """One benchmark configuration, shared by both trainers."""

    cards: int
    offers: int
    interactions: int
    factors: int
    iterations: int
    regularization: float
    alpha: float
    repeats: int
    spark_repeats: int
    evaluated_cards: int
    seed: int
    spark_memory: str


@dataclass
class TrainerResult:
    """Fit times and held-out quality of one trainer."""

    name: str
    fit_seconds: list[float] = field(default_factory=list)
    cpu_seconds: list[float] = field(default_factory=list)
    recall_at_10: float | None = None
    skipped: str | None = None

    @property
    def median_seconds(self) -> float | None:
        """Median fit time, or None when the trainer did not run."""
        return statistics.median(self.fit_seconds) if self.fit_seconds else None


def spark_unavailable() -> str | None:
    """Why Spark cannot run here, or None when pyspark and Java are both present."""
    try:
        import pyspark  # noqa: F401
    except ImportError:
        return "pyspark is not installed (install the extra: uv sync --extra spark)"
    if shutil.which("java") is None and not os.environ.get("JAVA_HOME"):
        return "Java is not installed (Spark needs a Java 17 or 21 runtime)"
    return None


def train_ours(
    train: sparse.csr_matrix, settings: Settings
) -> tuple[list[float], list[float], ALSRecommender]:
    """Fit our ALS stage ``settings.repeats`` times.

    Returns:
        Wall-clock seconds and process CPU seconds of each fit, and the last model.
        CPU seconds show how much of the machine a fit used when others share it.
    """
    confidence = train.copy()
    confidence.data = 1.0 + settings.alpha * confidence.data

    times, cpu_times = [], []
    for repeat in range(settings.repeats):
        model = ALSRecommender(
            factors=settings.factors,
            regularization=settings.regularization,
            alpha=1.0,
            iterations=settings.iterations,
            random_state=settings.seed + repeat,
        )
        started, cpu_started = time.perf_counter(), time.process_time()
        model.fit(confidence)
        times.append(time.perf_counter() - started)
        cpu_times.append(time.process_time() - cpu_started)
        logger.info(
            "our ALS fit %d: %.2f s (%.1f CPU s)", repeat + 1, times[-1], cpu_times[-1]
        )
    return times, cpu_times, model


def train_spark(
    train: sparse.csr_matrix, settings: Settings
) -> tuple[list[float], np.ndarray, np.ndarray]:
    """Fit Spark MLlib ALS in local[2]; return the times and the last factors."""
    os.environ["SPARK_LOCAL_IP"] = LOOPBACK
    session = _spark_session(settings.spark_memory)
    workdir = Path(tempfile.mkdtemp(prefix="bench-als-"))
    try:
        ratings = _spark_ratings(session, train, workdir)
        times = []
        for repeat in range(settings.spark_repeats):
            started = time.perf_counter()
            model = _spark_als(settings, repeat).fit(ratings)
            model.userFactors.count()
            model.itemFactors.count()
            times.append(time.perf_counter() - started)
            logger.info("Spark ALS fit %d: %.2f s", repeat + 1, times[-1])

        card_factors = _dense_factors(model.userFactors, train.shape[0], settings)
        offer_factors = _dense_factors(model.itemFactors, train.shape[1], settings)
        return times, card_factors, offer_factors
    finally:
        session.stop()
        shutil.rmtree(workdir, ignore_errors=True)


def recall_from_factors(
    card_factors: np.ndarray,
    offer_factors: np.ndarray,
    train: sparse.csr_matrix,
    held_out: sparse.csr_matrix,
) -> float:
    """recall@10 of dot-product scores on held-out entries, seen offers excluded."""
    cards = np.flatnonzero(np.diff(held_out.indptr))
    scores = card_factors[cards] @ offer_factors.T
    return _recall_of_scores(scores, cards, train, held_out)


def popularity_recall(train: sparse.csr_matrix, held_out: sparse.csr_matrix) -> float:
    """recall@10 of the most popular offers, seen offers excluded (a floor)."""
    cards = np.flatnonzero(np.diff(held_out.indptr))
    popularity = np.asarray((train > 0).sum(axis=0), dtype=np.float32).ravel()
    scores = np.broadcast_to(popularity, (cards.size, train.shape[1])).copy()
    return _recall_of_scores(scores, cards, train, held_out)


def recommend_recall(
    model: ALSRecommender, train: sparse.csr_matrix, held_out: sparse.csr_matrix
) -> float:
    """recall@10 through the product's own ``recommend`` (must equal the factors')."""
    cards = np.flatnonzero(np.diff(held_out.indptr))
    recommended, _ = model.recommend(cards, train, TOP_K)
    return recall_at_k(recommended, held_out[cards], TOP_K)


def oracle_recall(
    data: SyntheticInteractions,
    train: sparse.csr_matrix,
    held_out: sparse.csr_matrix,
) -> float:
    """recall@10 of the planted appeal itself, seen offers excluded (a ceiling)."""
    cards = np.flatnonzero(np.diff(held_out.indptr))
    return _recall_of_scores(data.appeal(cards), cards, train, held_out)


def run(settings: Settings, with_spark: bool) -> dict[str, Any]:
    """Generate the data, train both sides, and collect every figure."""
    started = time.perf_counter()
    data = make_card_offers(
        settings.cards, settings.offers, settings.interactions, seed=settings.seed
    )
    train, held_out = hold_out(
        data.card_offers, settings.evaluated_cards, seed=settings.seed + 1
    )
    logger.info("generated the matrix in %.1f s", time.perf_counter() - started)

    ours = TrainerResult("ours (ALSRecommender)")
    ours.fit_seconds, ours.cpu_seconds, model = train_ours(train, settings)
    ours.recall_at_10 = recall_from_factors(
        model.user_factors_, model.item_factors_, train, held_out
    )

    spark = TrainerResult("Spark MLlib ALS local[2]")
    spark.skipped = spark_unavailable() if with_spark else "not asked (--with-spark)"
    if spark.skipped is None:
        spark.fit_seconds, card_factors, offer_factors = train_spark(train, settings)
        spark.recall_at_10 = recall_from_factors(
            card_factors, offer_factors, train, held_out
        )

    references = {
        "popularity": popularity_recall(train, held_out),
        "planted_oracle": oracle_recall(data, train, held_out),
        "ours_through_recommend": recommend_recall(model, train, held_out),
    }
    return _report(settings, ours, spark, references)


@app.command()
def main(
    cards: Annotated[int | None, typer.Option(help="Card holders (rows).")] = None,
    offers: Annotated[int | None, typer.Option(help="Offers (columns).")] = None,
    interactions: Annotated[
        int | None, typer.Option(help="Distinct card x offer entries.")
    ] = None,
    factors: Annotated[int | None, typer.Option(help="Rank of both models.")] = None,
    iterations: Annotated[int | None, typer.Option(help="ALS sweeps.")] = None,
    regularization: Annotated[
        float, typer.Option(help="L2 penalty (Spark regParam).")
    ] = 0.05,
    alpha: Annotated[float, typer.Option(help="Confidence 1 + alpha * count.")] = 1.0,
    repeats: Annotated[int | None, typer.Option(help="Fits of our ALS.")] = None,
    spark_repeats: Annotated[int, typer.Option(help="Fits of Spark ALS.")] = 1,
    evaluated_cards: Annotated[
        int | None, typer.Option(help="Cards with held-out entries.")
    ] = None,
    seed: Annotated[int, typer.Option(help="Seed of data and models.")] = 42,
    spark_memory: Annotated[
        str, typer.Option(help="Spark driver memory (local mode).")
    ] = "6g",
    quick: Annotated[
        bool, typer.Option(help="Tiny sizes (well under 30 s); Spark off.")
    ] = False,
    with_spark: Annotated[
        bool | None,
        typer.Option(help="Train Spark too (default: on, off with --quick)."),
    ] = None,
    json_path: Annotated[
        Path | None, typer.Option("--json", help="Also write the figures here.")
    ] = None,
    verbose: Annotated[bool, typer.Option(help="Log at debug level.")] = False,
) -> None:
    """Time our ALS stage against Spark MLlib ALS on the same seeded matrix.

    Default sizes: 200,000 cards x 2,000 offers, 5,000,000 entries, 64 factors, 15
    iterations. The Spark side needs the optional extra (uv sync --extra spark) and
    a Java 17 or 21 runtime (java on PATH or JAVA_HOME); without them it is skipped
    with the reason. Spark runs in local[2], bound to 127.0.0.1, UI off.
    """
    configure_logging(verbose)
    size = QUICK_SIZE if quick else FULL_SIZE
    model = QUICK_MODEL if quick else FULL_MODEL
    settings = Settings(
        cards=cards or size["cards"],
        offers=offers or size["offers"],
        interactions=interactions or size["interactions"],
        factors=factors or model["factors"],
        iterations=iterations or model["iterations"],
        regularization=regularization,
        alpha=alpha,
        repeats=repeats or model["repeats"],
        spark_repeats=spark_repeats,
        evaluated_cards=evaluated_cards or model["evaluated_cards"],
        seed=seed,
        spark_memory=spark_memory,
    )
    spark_wanted = (not quick) if with_spark is None else with_spark

    report = run(settings, spark_wanted)
    _echo_table(report)
    if json_path is not None:
        json_path.write_text(json.dumps(report, indent=2) + "\n")


def _spark_session(memory: str) -> Any:
    """A local[2] Spark session bound to the loopback address, UI off."""
    from pyspark.sql import SparkSession

    session = (
        SparkSession.builder.master("local[2]")
        .appName("bench-als")
        .config("spark.ui.enabled", "false")
        .config("spark.ui.showConsoleProgress", "false")
        .config("spark.driver.host", LOOPBACK)
        .config("spark.driver.bindAddress", LOOPBACK)
        .config("spark.driver.memory", memory)
        .getOrCreate()
    )
    session.sparkContext.setLogLevel("ERROR")
    return session


def _spark_ratings(session: Any, train: sparse.csr_matrix, workdir: Path) -> Any:
    """The training entries as a cached Spark DataFrame (card, offer, count)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    coo = train.tocoo()
    table = pa.table(
        {
            "card": coo.row.astype(np.int32),
            "offer": coo.col.astype(np.int32),
            "count": coo.data.astype(np.float32),
        }
    )
    path = workdir / "ratings.parquet"
    pq.write_table(table, path)

    ratings = session.read.parquet(str(path)).cache()
    ratings.count()
    return ratings


def _spark_als(settings: Settings, repeat: int) -> Any:
    """Spark's implicit-feedback ALS with the benchmark's settings."""
    from pyspark.ml.recommendation import ALS

    return ALS(
        rank=settings.factors,
        maxIter=settings.iterations,
        regParam=settings.regularization,
        alpha=settings.alpha,
        implicitPrefs=True,
        userCol="card",
        itemCol="offer",
        ratingCol="count",
        seed=settings.seed + repeat,
    )


def _dense_factors(frame: Any, rows: int, settings: Settings) -> np.ndarray:
    """A Spark factor table as a dense array; rows Spark never saw stay zero."""
    pandas_frame = frame.toPandas()
    dense = np.zeros((rows, settings.factors), dtype=np.float32)
    if len(pandas_frame):
        dense[pandas_frame["id"].to_numpy()] = np.stack(pandas_frame["features"])
    return dense


def _recall_of_scores(
    scores: np.ndarray,
    cards: np.ndarray,
    train: sparse.csr_matrix,
    held_out: sparse.csr_matrix,
) -> float:
    """recall@10 of per-card scores once the offers seen in training are masked."""
    seen = train[cards]
    seen_rows = np.repeat(np.arange(cards.size), np.diff(seen.indptr))
    scores[seen_rows, seen.indices] = -np.inf

    top = np.argpartition(-scores, TOP_K, axis=1)[:, :TOP_K]
    order = np.argsort(-np.take_along_axis(scores, top, axis=1), axis=1)
    recommended = np.take_along_axis(top, order, axis=1)
    return recall_at_k(recommended, held_out[cards], TOP_K)


def _report(
    settings: Settings,
    ours: TrainerResult,
    spark: TrainerResult,
    references: dict[str, float],
) -> dict[str, Any]:
    """Every figure of the run, ready for JSON."""
    ratio = None
    if ours.median_seconds and spark.median_seconds:
        ratio = spark.median_seconds / ours.median_seconds

    def side(result: TrainerResult) -> dict[str, Any]:
        times = result.fit_seconds
        return {
            "name": result.name,
            "fit_seconds": times,
            "cpu_seconds": result.cpu_seconds,
            "median_seconds": result.median_seconds,
            "min_seconds": min(times) if times else None,
            "max_seconds": max(times) if times else None,
            "recall_at_10": result.recall_at_10,
            "skipped": result.skipped,
        }

    return {
        "settings": asdict(settings),
        "ours": side(ours),
        "spark": side(spark),
        "reference_recall_at_10": references,
        "spark_over_ours": ratio,
        "cpu_count": os.cpu_count(),
        "python": sys.version.split()[0],
    }


def _echo_table(report: dict[str, Any]) -> None:
    """A compact table of fit times, spread and held-out recall."""
    settings = report["settings"]
    typer.echo(
        f"ALS training, {settings['cards']:,} cards x {settings['offers']:,} offers, "
        f"{settings['interactions']:,} entries, {settings['factors']} factors, "
        f"{settings['iterations']} iterations, regularization "
        f"{settings['regularization']}, alpha {settings['alpha']}"
    )
    typer.echo(
        f"{'trainer':<26} {'fits':>4} {'median s':>9} {'min-max s':>15} "
        f"{'recall@10':>9}"
    )
    for key in ("ours", "spark"):
        side = report[key]
        if side["skipped"]:
            typer.echo(f"{side['name']:<26} skipped: {side['skipped']}")
            continue
        spread = f"{side['min_seconds']:.2f}-{side['max_seconds']:.2f}"
        typer.echo(
            f"{side['name']:<26} {len(side['fit_seconds']):>4} "
            f"{side['median_seconds']:>9.2f} {spread:>15} {side['recall_at_10']:>9.3f}"
        )
    references = report["reference_recall_at_10"]
    for label, key in (
        ("most popular", "popularity"),
        ("planted oracle", "planted_oracle"),
    ):
        typer.echo(f"{label:<26} {'':>4} {'':>9} {'':>15} {references[key]:>9.3f}")
    if report["spark_over_ours"] is not None:
        typer.echo(f"Spark / ours (median fit time): {report['spark_over_ours']:.1f}x")


if __name__ == "__main__":
    app()

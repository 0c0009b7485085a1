"""``precision train``, ``promote`` and ``score``."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from features.logs import configure_logging


class ModelChoice(StrEnum):
    """Which registered model a command acts on."""

    both = "both"
    needs = "needs-model"
    offers = "offer-model"


ConfigOption = Annotated[
    Path | None,
    typer.Option("--config", "-c", help="YAML training configuration (optional)."),
]
VerboseOption = Annotated[bool, typer.Option("--verbose", "-v", help="Debug logs.")]


def register_training_commands(app: typer.Typer) -> None:
    """Add the training commands to the root command line."""
    app.command("train")(train_command)
    app.command("promote")(promote_command)
    app.command("score")(score_command)


def train_command(
    config: ConfigOption = None,
    seed: Annotated[int | None, typer.Option(help="Override the seed.")] = None,
    verbose: VerboseOption = False,
) -> None:
    """Train both models, evaluate on the holdout, log and register them in MLflow."""
    from rich.console import Console

    from features.settings import Settings
    from training.config import load_config
    from training.pipeline import train

    configure_logging(verbose)
    console = Console(stderr=True)
    settings = Settings()
    training_config = load_config(config, seed=seed)
    with console.status("training") as status:
        result = train(
            settings, training_config, progress=lambda m: status.update(f"{m} ...")
        )
    typer.echo(format_report(result.metrics, training_config.k))
    typer.echo(
        f"run {result.run_id}; registered "
        + ", ".join(f"{name} v{v}" for name, v in result.versions.items())
    )


OFFER_BASELINES = ("most_popular", "als_alone")


def format_report(metrics: dict[str, float], k: int) -> str:
    """A compact holdout report: model, baselines, oracle and the gap to it."""
    rows = [
        (
            "needs macro ROC-AUC",
            "needs",
            "macro.roc_auc",
            ("baseline_prior", "baseline_logistic"),
        ),
        (
            "needs macro Brier",
            "needs",
            "macro.brier",
            ("baseline_prior", "baseline_logistic"),
        ),
        *(
            (f"offers {title}@{k}", "offers", f"{name}_at_{k}", OFFER_BASELINES)
            for title, name in (
                ("NDCG", "ndcg"),
                ("recall", "recall"),
                ("hit rate", "hit_rate"),
            )
        ),
    ]
    lines = [
        f"{'metric':<22}{'model':>8}{'base 1':>8}{'base 2':>8}{'oracle':>8}{'gap':>8}"
    ]
    for title, family, name, baselines in rows:
        model = metrics.get(f"{family}.{name}")
        oracle = metrics.get(f"{family}.oracle.{name}")
        values = [metrics.get(f"{family}.{b}.{name}") for b in baselines]
        gap = None if model is None or oracle is None else oracle - model
        cells = [model, *values, oracle, gap]
        lines.append(f"{title:<22}" + "".join(_cell(value) for value in cells))
    alone = _cell(metrics.get(f"offers.candidates_alone.ndcg_at_{k}")).strip()
    lines.append("base 1/2: needs prior per post / logistic; offers most popular / ALS")
    lines.append(f"offer candidate stage alone (EASE): NDCG@{k} {alone}")
    return "\n".join(lines)


def _cell(value: float | None) -> str:
    return f"{'-':>8}" if value is None else f"{value:>8.3f}"


def promote_command(
    model: Annotated[
        ModelChoice, typer.Option("--model", help="Which model to promote.")
    ] = ModelChoice.both,
    version: Annotated[
        str | None, typer.Option(help="Version to promote; default the newest.")
    ] = None,
    tolerance: Annotated[
        float | None,
        typer.Option(
            min=0.0, help="Allowed drop of the primary metric vs the champion."
        ),
    ] = None,
    config: ConfigOption = None,
    verbose: VerboseOption = False,
) -> None:
    """Move the 'champion' alias to a version that is not worse on the same holdout."""
    from features.settings import Settings
    from training import tracking
    from training.config import load_config

    configure_logging(verbose)
    settings = Settings()
    allowed = (
        tolerance
        if tolerance is not None
        else (load_config(config).promotion_tolerance)
    )
    names = tracking.MODEL_NAMES if model is ModelChoice.both else (model.value,)
    if version is not None and len(names) > 1:
        raise typer.BadParameter("--version needs --model needs-model or offer-model")
    refused = False
    for name in names:
        decision = tracking.promote(name, settings, version=version, tolerance=allowed)
        verb = "promoted" if decision.promoted else "kept champion"
        typer.echo(f"{name} v{decision.version}: {verb} ({decision.reason})")
        refused |= not decision.promoted and decision.reason != "already champion"
    if refused:
        raise typer.Exit(code=1)


def score_command(config: ConfigOption = None, verbose: VerboseOption = False) -> None:
    """Score every card with the champions; write data/scores/*.parquet."""
    from features.settings import Settings
    from training.config import load_config
    from training.scoring import score_all

    configure_logging(verbose)
    files = score_all(Settings(), load_config(config))
    typer.echo(
        f"scored {files.cards} cards (needs v{files.needs_version}, offers "
        f"v{files.offers_version}): {files.propensities}, {files.top_offers}"
    )

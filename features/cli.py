"""``precision warehouse ...``: generate, import, validate and inspect the warehouse."""

from __future__ import annotations

import logging
import os
import secrets
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from features.logs import configure_logging
from features.settings import SECRET_FILE_NAME, Settings

if TYPE_CHECKING:
    from features.warehouse import Warehouse

logger = logging.getLogger(__name__)

warehouse_app = typer.Typer(
    help="Generate, import, validate and inspect the card-keyed warehouse.",
    no_args_is_help=True,
)

VerboseOption = Annotated[
    bool, typer.Option("--verbose", "-v", help="Log timings at debug level.")
]


class Source(StrEnum):
    """Real data sets the warehouse can import."""

    movielens = "movielens"
    telco = "telco"


def _warehouse() -> Warehouse:
    """The warehouse in the configured data folder."""
    from features.warehouse import Warehouse

    return Warehouse(Settings().warehouse_dir)


@warehouse_app.command()
def generate(
    cards: Annotated[
        int, typer.Option(min=10, help="Number of card holders to generate.")
    ] = 20_000,
    seed: Annotated[
        int, typer.Option(help="Seed; the same seed gives the same data.")
    ] = 7,
    as_of: Annotated[
        str,
        typer.Option(
            help="UTC time the data ends (ISO 8601); the holdout is its last 30 days."
        ),
    ] = "2026-11-01T00:00:00Z",
    impressions: Annotated[
        float,
        typer.Option(
            min=0,
            max=100,
            help=(
                "Mean offer impressions per card and month; the default 0.5 gives "
                "about 31 events per card, 2.5 about 50."
            ),
        ),
    ] = 0.5,
    verbose: VerboseOption = False,
) -> None:
    """Generate a synthetic warehouse with planted structure and its oracle files.

    Replaces the warehouse in PRECISION_DATA_DIR/warehouse.
    """
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    from features.generator import generate as generate_warehouse
    from features.generator import write_generated

    configure_logging(verbose)
    warehouse = _warehouse()
    columns = (SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn())
    with Progress(*columns, transient=False) as progress:
        task = progress.add_task(f"generating {cards:,} card holders", total=None)

        def show(stage: str) -> None:
            progress.update(task, description=f"generating {cards:,} cards: {stage}")

        generated = generate_warehouse(
            cards=cards,
            seed=seed,
            as_of=as_of,
            progress=show,
            impressions_per_period=impressions,
        )
        show("validating and writing")
        write_generated(generated, warehouse)
        progress.update(task, description=f"generated {cards:,} card holders")
    _echo_summary(warehouse)


@warehouse_app.command("import")
def import_data(
    source: Annotated[Source, typer.Argument(help="Which real data set to import.")],
    path: Annotated[
        Path | None,
        typer.Option(
            help=(
                "Folder of MovieLens-100k, or the Telco CSV (or its folder); "
                "defaults to ../shared/data."
            )
        ),
    ] = None,
    verbose: VerboseOption = False,
) -> None:
    """Import MovieLens-100k or the IBM Telco customers into the warehouse.

    Replaces the warehouse in PRECISION_DATA_DIR/warehouse; synthetic oracle files
    are removed because they would not describe the imported data.
    """
    from features import importers

    configure_logging(verbose)
    if source is Source.movielens:
        tables, meta = importers.import_movielens(path or importers.MOVIELENS_DIR)
    else:
        tables, meta = importers.import_telco(path or importers.TELCO_FILE)
    warehouse = _warehouse()
    importers.write_imported(tables, meta, warehouse)
    _echo_summary(warehouse)


@warehouse_app.command()
def validate(verbose: VerboseOption = False) -> None:
    """Check every stored table against the schema rules and cross-table references.

    Exits with status 1 and names the file, column, rule and rows when a rule fails.
    """
    from features.errors import WarehouseValidationError

    configure_logging(verbose)
    warehouse = _warehouse()
    if not warehouse.stored_tables():
        typer.echo(
            f"invalid: no warehouse tables in {warehouse.directory}; run 'precision "
            "warehouse generate' or 'precision warehouse import' first",
            err=True,
        )
        raise typer.Exit(1)
    try:
        counts = warehouse.validate()
    except WarehouseValidationError as error:
        typer.echo(f"invalid: {error}", err=True)
        raise typer.Exit(1) from error
    typer.echo(f"valid: {len(counts)} tables in {warehouse.directory}")


@warehouse_app.command()
def show(verbose: VerboseOption = False) -> None:
    """Print row counts, time ranges and the metadata of the stored warehouse."""
    configure_logging(verbose)
    _echo_summary(_warehouse())


def _echo_summary(warehouse: Warehouse) -> None:
    """Row counts and time range per table, then the metadata."""
    from rich.console import Console
    from rich.table import Table

    from features.schema import TABLES

    if not warehouse.stored_tables():
        typer.echo(
            f"no warehouse in {warehouse.directory}; run 'precision warehouse "
            "generate' or 'precision warehouse import movielens'"
        )
        raise typer.Exit(1)
    connection = warehouse.connect()
    summary = Table(title=f"warehouse {warehouse.directory}")
    for heading in ("table", "rows", "first", "last"):
        summary.add_column(heading, justify="right" if heading == "rows" else "left")
    for table in TABLES:
        if table.name not in warehouse.stored_tables():
            continue
        times = [c.name for c in table.columns if c.kind == "timestamp"]
        column = "event_time" if "event_time" in times else next(iter(times), None)
        span = f"min({column}), max({column})" if column else "NULL, NULL"
        query = f"SELECT count(*), {span} FROM {table.name}"
        rows, first, last = connection.execute(query).fetchone() or (0, None, None)
        summary.add_row(table.name, f"{rows:,}", str(first or ""), str(last or ""))
    console = Console()
    console.print(summary)
    meta = warehouse.meta()
    shown = {k: v for k, v in meta.items() if k != "rows"}
    console.print(
        f"fingerprint {warehouse.fingerprint()}  "
        + "  ".join(f"{k}={v}" for k, v in shown.items())
    )


@warehouse_app.command("init-secret")
def init_secret(verbose: VerboseOption = False) -> None:
    """Create the pseudonym secret file (<data_dir>/.pseudonym-secret, mode 0600).

    Leaves an existing file untouched; PRECISION_PSEUDONYM_SECRET overrides the file.
    """
    configure_logging(verbose)
    settings = Settings()
    path = settings.data_dir / SECRET_FILE_NAME
    if path.exists():
        typer.echo(f"secret already exists: {path}")
        return
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
        handle.write(secrets.token_hex(32) + "\n")
    logger.info("created pseudonym secret %s", path)
    typer.echo(f"created secret: {path}")

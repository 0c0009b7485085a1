"""``precision features ...``: build feature tables, apply Feast, materialize."""

from __future__ import annotations

import time

import typer

features_app = typer.Typer(
    help="Build feature tables and the Feast stores.", no_args_is_help=True
)


@features_app.command("build")
def build(
    snapshots: int = typer.Option(
        12, min=1, help="Monthly snapshots ending at the warehouse's as_of."
    ),
    engine: str = typer.Option(
        "fast", help="Materialization: 'fast' (bulk) or 'feast' (stock)."
    ),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Log timings."),
) -> None:
    """Build the feature tables, apply the Feast repo and fill the online store."""
    from rich.console import Console

    from features.feature_tables import build_feature_tables, default_snapshots
    from features.logs import configure_logging
    from features.settings import Settings
    from features.warehouse import Warehouse

    configure_logging(verbose)
    console = Console(stderr=True)
    settings = Settings()
    warehouse = Warehouse(settings.warehouse_dir)
    started = time.perf_counter()

    with console.status("building feature tables with DuckDB"):
        stamps = default_snapshots(warehouse.as_of(), snapshots)
        paths = build_feature_tables(
            warehouse, settings.secret_bytes, settings.feature_dir, stamps
        )
    console.print(f"feature tables: {len(paths)} in {settings.feature_dir}")

    with console.status("importing Feast and applying the feature repo"):
        from features.store import apply, materialize

        apply(settings)
    console.print(f"feature repo applied ({settings.feast_dir})")

    written = materialize(settings, progress=True, engine=engine)
    total = sum(written.values())
    elapsed = time.perf_counter() - started
    typer.echo(
        f"online store ({settings.online_store}) holds {total} keys over "
        f"{len(written)} views; done in {elapsed:.1f} s"
    )


@features_app.command("show")
def show() -> None:
    """List the feature views with their row, key and feature counts."""
    import pyarrow.parquet as pq
    from rich.console import Console
    from rich.table import Table

    from features.feature_tables import VIEW_KEYS
    from features.settings import Settings

    settings = Settings()
    table = Table(title=f"Feature views in {settings.feature_dir}")
    for column in ("view", "key", "features", "rows", "latest snapshot"):
        table.add_column(column)
    for view, key in VIEW_KEYS.items():
        path = settings.feature_dir / f"{view}.parquet"
        if not path.exists():
            table.add_row(f"{view}_fv", key, "-", "not built", "-")
            continue
        data = pq.read_table(path, columns=["event_timestamp"])
        features = len(pq.read_schema(path).names) - 2
        latest = str(data.column(0).to_pandas().max())
        table.add_row(f"{view}_fv", key, str(features), f"{data.num_rows:,}", latest)
    Console().print(table)

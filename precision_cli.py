"""The one command line for every job: ``precision --help`` lists them.

Sub-commands live beside the code they drive; heavy libraries (Feast, MLflow,
LightGBM, BentoML) are imported inside the commands so that ``--help`` stays fast.
"""

from __future__ import annotations

import typer

from features.cli import warehouse_app
from features.store_cli import features_app
from serving.cli import register_serving_commands
from training.cli import register_training_commands

app = typer.Typer(
    help=(
        "Precision outreach for overseas compatriot card holders: warehouse, "
        "features, models and the recommendation service."
    ),
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
)
app.add_typer(warehouse_app, name="warehouse")
app.add_typer(features_app, name="features")
register_training_commands(app)
register_serving_commands(app)


def main() -> None:
    """Run the command line; a product error prints one line, not a traceback."""
    from features.errors import PrecisionError

    try:
        app(standalone_mode=True)
    except PrecisionError as error:
        typer.secho(f"error: {error}", fg="red", err=True)
        raise SystemExit(2) from error


if __name__ == "__main__":
    main()

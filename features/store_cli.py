"""``precision features ...``: build feature tables, apply Feast, materialize."""

from __future__ import annotations

import typer

features_app = typer.Typer(help="Build feature tables and the Feast stores.")

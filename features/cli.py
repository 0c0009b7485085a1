"""``precision warehouse ...`` and ``precision init``: generate, import, validate."""

from __future__ import annotations

import typer

warehouse_app = typer.Typer(help="Generate, import and validate the warehouse.")

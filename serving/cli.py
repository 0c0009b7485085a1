"""``precision serve``, ``demo`` and ``keys``."""

from __future__ import annotations

import typer


def register_serving_commands(app: typer.Typer) -> None:
    """Add the serving commands to the root command line."""

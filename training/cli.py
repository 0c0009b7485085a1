"""``precision train``, ``promote`` and ``score``."""

from __future__ import annotations

import typer


def register_training_commands(app: typer.Typer) -> None:
    """Add the training commands to the root command line."""

"""Logging set-up for command-line entry points and the service start-up only."""

from __future__ import annotations

import logging

LOG_FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"


def configure_logging(verbose: bool = False) -> None:
    """Send the product's log records to standard error.

    Args:
        verbose: log at debug level (timings) instead of info (stage boundaries).
    """
    level = logging.DEBUG if verbose else logging.INFO
    logging.basicConfig(level=level, format=LOG_FORMAT, datefmt="%H:%M:%S")
    for noisy in ("feast", "mlflow", "alembic", "urllib3", "bentoml", "numexpr"):
        logging.getLogger(noisy).setLevel(max(level, logging.WARNING))

"""Instants in UTC: the one rule every module applies to a single timestamp."""

from __future__ import annotations

from typing import Any

import pandas as pd


def utc_timestamp(value: Any) -> pd.Timestamp:
    """A timestamp in UTC; naive input is taken as UTC, other zones are converted.

    Args:
        value: anything ``pandas.Timestamp`` accepts (a string, a ``datetime``, a
            timestamp).

    Returns:
        The same instant as an aware UTC timestamp.
    """
    stamp = pd.Timestamp(value)
    if stamp.tzinfo is None:
        return stamp.tz_localize("UTC")
    return stamp.tz_convert("UTC")

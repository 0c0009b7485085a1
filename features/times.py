"""Instants in UTC: the one rule every module applies to a single timestamp."""

from __future__ import annotations

from typing import Any

import pandas as pd

from features.errors import InputError


def utc_timestamp(value: Any) -> pd.Timestamp:
    """A timestamp in UTC; naive input is taken as UTC, other zones are converted.

    Args:
        value: anything ``pandas.Timestamp`` accepts (a string, a ``datetime``, a
            timestamp).

    Returns:
        The same instant as an aware UTC timestamp.

    Raises:
        InputError: when the value is not a time (``"yesterday"``, empty, None).
    """
    try:
        stamp = pd.Timestamp(value)
    except (ValueError, TypeError) as error:
        raise InputError(
            f"time {str(value)[:80]!r}: expected an ISO 8601 time such as "
            "2026-11-01T00:00:00Z"
        ) from error
    if pd.isna(stamp):
        raise InputError(
            f"time {str(value)[:80]!r}: expected an ISO 8601 time such as "
            "2026-11-01T00:00:00Z, got an empty value"
        )
    if stamp.tzinfo is None:
        return stamp.tz_localize("UTC")
    return stamp.tz_convert("UTC")

"""Checks that every warehouse load passes before anything is written.

Tables are first normalised (card numbers as 10-digit strings, timestamps in UTC,
integers, booleans and floats in their pandas types), then checked against the rules
declared in :mod:`features.schema`. The first broken rule raises
:class:`~features.errors.WarehouseValidationError` naming the file, the column, the
rule and the first offending rows.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from pathlib import Path

import numpy as np
import pandas as pd

from features.cards import CARD_DIGITS, canonical_card_number
from features.errors import InputError, WarehouseValidationError
from features.schema import CARD_NUMBER, TABLES, TABLES_BY_NAME, Column, Table

logger = logging.getLogger(__name__)

MAX_REPORTED_ROWS = 5
# Timestamps that describe the future by nature; every other one must be in the past.
FUTURE_ALLOWED = frozenset({("card_holders", "expires_at"), ("offers", "valid_to")})
# Pairs of columns of one row where the first must not exceed the second.
ORDERED_COLUMNS: dict[str, tuple[tuple[str, str], ...]] = {
    "card_holders": (("issued_at", "expires_at"),),
    "offers": (("valid_from", "valid_to"), ("min_age", "max_age")),
}
# Known keys of a referenced column, e.g. ``"posts.post_id" -> {"P01", ...}``.
KeyLookup = Callable[[str], "pd.Index | None"]


def table_spec(name: str) -> Table:
    """The schema of table ``name``.

    Raises:
        WarehouseValidationError: when the name is not a warehouse table.
    """
    if name not in TABLES_BY_NAME:
        raise WarehouseValidationError(
            f"{name}.parquet",
            None,
            "known_table",
            f"expected one of {sorted(TABLES_BY_NAME)}, got {name!r}; "
            "rename the table or add it to features/schema.py",
        )
    return TABLES_BY_NAME[name]


def normalize_table(table: Table, frame: pd.DataFrame) -> pd.DataFrame:
    """Return a copy of ``frame`` with every schema column in its canonical type.

    Card numbers become 10-digit strings (integers that lost their leading zeros are
    padded back); naive timestamps are taken as UTC and other zones converted to UTC.

    Raises:
        WarehouseValidationError: when a column cannot be read as its declared type.
    """
    normalized = frame.copy()
    for column in table.columns:
        if column.name in normalized.columns:
            normalized[column.name] = _normalize_column(
                table, column, normalized[column.name]
            )
    return normalized


def _normalize_column(table: Table, column: Column, values: pd.Series) -> pd.Series:
    """Cast one column to its schema kind, or refuse it with a type error."""
    try:
        if column.name == CARD_NUMBER:
            return _normalize_card_numbers(values)
        if column.kind == "timestamp":
            return to_utc(values)
        if column.kind == "int":
            return _normalize_ints(values, column.nullable)
        if column.kind == "float":
            return _normalize_floats(values)
        if column.kind == "bool":
            return _normalize_bools(values, column.nullable)
        return _normalize_strings(values)
    except (ValueError, TypeError, InputError) as error:
        raise WarehouseValidationError(
            table.file_name,
            column.name,
            "type",
            f"expected {column.kind} values, got dtype {values.dtype} ({error}); "
            "fix the values or the column type in the source",
        ) from error


def to_utc(values: pd.Series) -> pd.Series:
    """Timestamps as ``datetime64[ns, UTC]``; naive input is taken as UTC.

    Aware values in any zone (also mixed zones in one object column) are converted to
    the same instant in UTC.
    """
    if isinstance(values.dtype, pd.DatetimeTZDtype):
        return values.dt.tz_convert("UTC").astype("datetime64[ns, UTC]")
    if pd.api.types.is_datetime64_dtype(values.dtype):
        return values.dt.tz_localize("UTC").astype("datetime64[ns, UTC]")
    if pd.api.types.is_numeric_dtype(values.dtype) and not values.isna().all():
        raise TypeError("numbers are not timestamps")
    if values.dtype == object:
        _refuse_numbers_among_times(values)
        if _has_mixed_awareness(values):
            values = values.map(_as_aware)
    converted = pd.to_datetime(values, utc=True, format="mixed")
    return converted.astype("datetime64[ns, UTC]")


def _refuse_numbers_among_times(values: pd.Series) -> None:
    """Numbers in a column of times would silently become epoch offsets."""
    inferred = pd.api.types.infer_dtype(values, skipna=True)
    if inferred in ("datetime", "datetime64", "date", "string", "empty"):
        return
    is_number = values.map(
        lambda v: isinstance(v, int | float | np.number) and not pd.isna(v)
    )
    if is_number.any():
        raise TypeError("numbers are not timestamps")


def _has_mixed_awareness(values: pd.Series) -> bool:
    """Whether an object column holds both naive and aware timestamps."""
    stamps = [v for v in values.dropna().head(10_000) if isinstance(v, pd.Timestamp)]
    kinds = {stamp.tzinfo is None for stamp in stamps}
    return len(kinds) > 1


def _as_aware(value: object) -> object:
    """A naive timestamp taken as UTC; anything else unchanged."""
    if isinstance(value, pd.Timestamp) and value.tzinfo is None:
        return value.tz_localize("UTC")
    return value


def _normalize_card_numbers(values: pd.Series) -> pd.Series:
    """Card numbers as strings; integers get their leading zeros back."""
    if pd.api.types.is_bool_dtype(values.dtype) or pd.api.types.is_float_dtype(
        values.dtype
    ):
        raise TypeError("card numbers must be strings of digits or integers")
    if pd.api.types.is_integer_dtype(values.dtype):
        if values.isna().any():
            raise TypeError("missing card numbers")
        if (values < 0).any() or (values >= 10**CARD_DIGITS).any():
            raise InputError(f"card numbers must have at most {CARD_DIGITS} digits")
        return values.astype("int64").astype(str).str.zfill(CARD_DIGITS).astype(object)
    if isinstance(values.dtype, pd.StringDtype):
        return values
    inferred = pd.api.types.infer_dtype(values, skipna=True)
    if inferred in ("string", "empty"):
        return values.astype(object)
    return values.map(lambda v: v if v is None else canonical_card_number(v))


def _normalize_ints(values: pd.Series, nullable: bool) -> pd.Series:
    """Whole numbers as int64, or nullable Int64 when missing values are allowed."""
    if pd.api.types.is_bool_dtype(values.dtype):
        raise TypeError("booleans are not integers")
    numbers = pd.to_numeric(values, errors="raise")
    if pd.api.types.is_float_dtype(numbers.dtype):
        finite = numbers.dropna()
        if not np.all(np.equal(np.mod(finite, 1), 0)):
            raise ValueError("fractional values in an integer column")
    if nullable or numbers.isna().any():
        return numbers.astype("Int64")
    return numbers.astype("int64")


def _normalize_floats(values: pd.Series) -> pd.Series:
    """Numbers as float64."""
    if pd.api.types.is_bool_dtype(values.dtype):
        raise TypeError("booleans are not numbers")
    return pd.to_numeric(values, errors="raise").astype("float64")


def _normalize_bools(values: pd.Series, nullable: bool) -> pd.Series:
    """True/false values as bool (or nullable boolean)."""
    if pd.api.types.is_bool_dtype(values.dtype):
        return values.astype("boolean" if nullable else bool)
    if values.dtype == object:
        spelled = values.map(
            lambda v: v if not isinstance(v, str) else _BOOL_WORDS.get(v.lower(), v)
        )
        if spelled.dropna().map(lambda v: isinstance(v, bool | np.bool_)).all():
            return spelled.astype("boolean")
    if pd.api.types.is_integer_dtype(values.dtype) and values.isin([0, 1]).all():
        return values.astype(bool)
    raise TypeError("expected true/false values")


_BOOL_WORDS = {"true": True, "false": False, "yes": True, "no": False}


def _normalize_strings(values: pd.Series) -> pd.Series:
    """Text as Python strings (missing values kept as None); string dtypes kept."""
    if isinstance(values.dtype, pd.StringDtype):
        return values
    inferred = pd.api.types.infer_dtype(values, skipna=True)
    if inferred not in ("string", "empty"):
        raise TypeError(f"expected text, found {inferred} values")
    return values.astype(object).where(values.notna(), None)


def validate_table(
    table: Table, frame: pd.DataFrame, now: pd.Timestamp | None = None
) -> None:
    """Check one normalised table against its schema rules (not references).

    Args:
        table: the schema of the table.
        frame: the table, already passed through :func:`normalize_table`.
        now: timestamps after this instant are refused; the current time if None.

    Raises:
        WarehouseValidationError: on the first broken rule.
    """
    now = now if now is not None else pd.Timestamp.now(tz="UTC")
    _check_columns(table, frame)
    for column in table.columns:
        if column.name in frame.columns:
            _check_column(table, column, frame, now)
    _check_order(table, frame)
    _check_unique_key(table, frame)


def _check_order(table: Table, frame: pd.DataFrame) -> None:
    """Start before end, minimum before maximum, within each row."""
    for first, second in ORDERED_COLUMNS.get(table.name, ()):
        if first not in frame or second not in frame:
            continue
        both = frame[first].notna() & frame[second].notna()
        bad = both & (frame[first].where(both) > frame[second].where(both))
        detail = f"expected {first} <= {second}"
        _refuse(table, table.column(second), frame, bad.fillna(False), "order", detail)


def _check_columns(table: Table, frame: pd.DataFrame) -> None:
    """Required columns present, and no column the schema does not know."""
    known = {c.name for c in table.columns}
    missing = [c.name for c in table.columns if c.required and c.name not in frame]
    if missing:
        raise WarehouseValidationError(
            table.file_name,
            missing[0],
            "required_column",
            f"expected columns {sorted(known)}, missing {missing}; add the column",
        )
    unknown = [name for name in frame.columns if name not in known]
    if unknown:
        raise WarehouseValidationError(
            table.file_name,
            str(unknown[0]),
            "unknown_column",
            f"expected only {sorted(known)}, got extra columns {unknown}; drop them "
            "or add them to features/schema.py",
        )


def _check_column(
    table: Table, column: Column, frame: pd.DataFrame, now: pd.Timestamp
) -> None:
    """Nullability, allowed values, range, pattern and time rules of one column."""
    values = frame[column.name]
    present = values.notna()

    if not column.nullable:
        _refuse(table, column, frame, ~present, "not_null", "expected a value")
    if column.allowed is not None:
        bad = present & ~values.isin(column.allowed)
        _refuse(
            table, column, frame, bad, "allowed", f"expected one of {column.allowed}"
        )
    if column.min_value is not None:
        bad = present & (values.fillna(column.min_value) < column.min_value)
        _refuse(table, column, frame, bad, "range", f"expected >= {column.min_value}")
    if column.max_value is not None:
        bad = present & (values.fillna(column.max_value) > column.max_value)
        _refuse(table, column, frame, bad, "range", f"expected <= {column.max_value}")
    if column.pattern is not None:
        text = (
            values if isinstance(values.dtype, pd.StringDtype) else values.astype(str)
        )
        matches = text.str.fullmatch(column.pattern)
        bad = present & ~matches.fillna(False).astype(bool)
        detail = f"expected text matching {column.pattern!r}"
        _refuse(table, column, frame, bad, "pattern", detail)
    if column.kind == "timestamp" and (table.name, column.name) not in FUTURE_ALLOWED:
        bad = present & (values > now)
        detail = f"expected times not after now ({now.isoformat()})"
        _refuse(table, column, frame, bad, "not_future", detail)


def _check_unique_key(table: Table, frame: pd.DataFrame) -> None:
    """No two rows share the table's key."""
    duplicated = frame.duplicated(subset=list(table.key), keep=False)
    if duplicated.any():
        key = ", ".join(table.key)
        _refuse(
            table,
            table.column(table.key[0]),
            frame,
            duplicated,
            "unique_key",
            f"expected one row per ({key})",
        )


def validate_references(
    tables: Mapping[str, pd.DataFrame], lookup: KeyLookup | None = None
) -> None:
    """Check that every referencing value exists in the table it points at.

    Args:
        tables: normalised tables by name.
        lookup: gives the known keys of ``"table.column"`` when that table is not in
            ``tables`` (e.g. read from the stored warehouse); None means unknown.

    Raises:
        WarehouseValidationError: on the first dangling reference.
    """
    for table in TABLES:
        frame = tables.get(table.name)
        if frame is None:
            continue
        for column in table.columns:
            if column.references is None or column.name not in frame:
                continue
            known = _known_keys(column.references, tables, lookup)
            values = frame[column.name]
            bad = values.notna() & ~values.isin(known)
            detail = (
                f"expected every value to exist in {column.references}; write "
                f"the referenced rows first or together with these"
            )
            _refuse(table, column, frame, bad, "reference", detail)


def _known_keys(
    reference: str, tables: Mapping[str, pd.DataFrame], lookup: KeyLookup | None
) -> pd.Index:
    """Key values of ``"table.column"`` from the batch, else from the lookup."""
    table_name, column_name = reference.split(".")
    if table_name in tables:
        return pd.Index(tables[table_name][column_name].dropna().unique())
    stored = lookup(reference) if lookup is not None else None
    return stored if stored is not None else pd.Index([])


def _refuse(
    table: Table,
    column: Column,
    frame: pd.DataFrame,
    bad: pd.Series,
    rule: str,
    expected: str,
) -> None:
    """Raise when ``bad`` marks any row, showing the first few offending rows."""
    bad = bad.fillna(True).astype(bool) if bad.dtype != bool else bad
    count = int(bad.sum())
    if count == 0:
        return
    positions = np.flatnonzero(bad.to_numpy())[:MAX_REPORTED_ROWS]
    sample = frame[column.name].iloc[positions]
    arrived = ", ".join(repr(_plain(v)) for v in sample) if not table.identity else ""
    detail = f"{expected}; {count} row(s) break it"
    detail += f" (values {arrived})" if arrived else ""
    detail += "; correct the source and load again"
    raise WarehouseValidationError(
        table.file_name,
        column.name,
        rule,
        detail,
        _describe_rows(table, frame, positions),
    )


def _plain(value: object) -> object:
    """A value as a plain Python object for messages."""
    return value.item() if isinstance(value, np.generic) else value


def _describe_rows(table: Table, frame: pd.DataFrame, positions: np.ndarray) -> str:
    """The offending rows as text; identity rows show only their positions."""
    if table.identity:
        return "rows at positions " + ", ".join(str(p) for p in positions)
    shown = frame.iloc[positions].copy()
    shown.index = pd.Index([f"row {p}" for p in positions])
    return shown.to_string()


def validate_tables(
    tables: Mapping[str, pd.DataFrame],
    lookup: KeyLookup | None = None,
    now: pd.Timestamp | None = None,
) -> dict[str, pd.DataFrame]:
    """Normalise and check a batch of tables, references across them included.

    Args:
        tables: frames by table name.
        lookup: known keys of tables outside the batch (see
            :func:`validate_references`).
        now: timestamps after this instant are refused; the current time if None.

    Returns:
        The normalised tables, ready to be written.

    Raises:
        WarehouseValidationError: on the first broken rule.
    """
    normalized: dict[str, pd.DataFrame] = {}
    for name, frame in tables.items():
        table = table_spec(name)
        normalized[name] = normalize_table(table, frame)
        validate_table(table, normalized[name], now)
        logger.debug("table %s passed its rules (%d rows)", name, len(frame))

    validate_references(normalized, lookup)
    return normalized


def load_table_file(path: Path, table_name: str | None = None) -> pd.DataFrame:
    """Read a CSV or parquet file as a normalised warehouse table.

    Card numbers that arrive as integers (a CSV reader drops their leading zeros)
    are padded back to ten digits rather than refused.

    Args:
        path: a ``.csv`` or ``.parquet`` file.
        table_name: the warehouse table; the file's stem when None.

    Raises:
        WarehouseValidationError: when the file breaks a per-table rule.
    """
    table = table_spec(table_name or path.stem)
    if path.suffix.lower() == ".csv":
        frame = pd.read_csv(path)
    elif path.suffix.lower() == ".parquet":
        frame = pd.read_parquet(path)
    else:
        raise WarehouseValidationError(
            path.name,
            None,
            "file_format",
            f"expected a .csv or .parquet file, got {path.suffix!r}; convert it",
        )
    normalized = normalize_table(table, frame)
    validate_table(table, normalized)
    return normalized

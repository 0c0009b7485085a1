"""Each validation rule refuses a bad file, names it, and leaves the store as it was."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pytest

from features.errors import WarehouseValidationError
from features.generator import GeneratedWarehouse, generate, write_generated
from features.schema import CARD_HOLDERS
from features.validation import load_table_file, normalize_table, to_utc
from features.warehouse import Warehouse

Tables = dict[str, pd.DataFrame]


@pytest.fixture(scope="module")
def tiny() -> GeneratedWarehouse:
    """A very small generated warehouse to break in many ways."""
    return generate(cards=60, seed=5)


@pytest.fixture(scope="module")
def stored_once(
    tiny: GeneratedWarehouse, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """The tiny data written once; tests work on copies."""
    directory = tmp_path_factory.mktemp("tiny") / "warehouse"
    write_generated(tiny, Warehouse(directory))
    return directory


@pytest.fixture
def stored(stored_once: Path, tmp_path: Path) -> Warehouse:
    """A fresh copy of the stored tiny warehouse."""
    return Warehouse(Path(shutil.copytree(stored_once, tmp_path / "warehouse")))


def _copy(tiny: GeneratedWarehouse) -> Tables:
    return {name: frame.copy() for name, frame in tiny.tables.items()}


def _set(table: str, column: str, value: object, row: int = 0) -> Callable:
    def breaker(tables: Tables) -> None:
        frame = tables[table]
        frame[column] = frame[column].astype(object)
        frame.iloc[row, frame.columns.get_loc(column)] = value

    return breaker


def _drop_column(table: str, column: str) -> Callable:
    def breaker(tables: Tables) -> None:
        tables[table] = tables[table].drop(columns=[column])

    return breaker


def _add_column(table: str, column: str) -> Callable:
    def breaker(tables: Tables) -> None:
        tables[table][column] = 1

    return breaker


def _duplicate_first_row(table: str) -> Callable:
    def breaker(tables: Tables) -> None:
        frame = tables[table]
        tables[table] = pd.concat([frame, frame.iloc[[0]]], ignore_index=True)

    return breaker


FUTURE = pd.Timestamp.now(tz="UTC") + pd.Timedelta(days=3)

BROKEN_FILES = [
    pytest.param(
        _drop_column("card_holders", "birth_year"),
        r"card_holders\.parquet, column 'birth_year': rule 'required_column'",
        id="required-column-missing",
    ),
    pytest.param(
        _add_column("offers", "secret_margin"),
        r"offers\.parquet, column 'secret_margin': rule 'unknown_column'",
        id="unknown-column",
    ),
    pytest.param(
        _set("card_holders", "birth_year", "nineteen-eighty"),
        r"card_holders\.parquet, column 'birth_year': rule 'type'",
        id="int-column-with-text",
    ),
    pytest.param(
        _set("offers", "valid_from", 12.5),
        r"offers\.parquet, column 'valid_from': rule 'type'",
        id="timestamp-column-with-number",
    ),
    pytest.param(
        _set("card_holders", "occupation", None),
        r"card_holders\.parquet, column 'occupation': rule 'not_null'",
        id="missing-value",
    ),
    pytest.param(
        _duplicate_first_row("offers"),
        r"offers\.parquet, column 'offer_id': rule 'unique_key'",
        id="duplicate-key",
    ),
    pytest.param(
        _set("service_events", "card_number", "9999999999"),
        r"service_events\.parquet, column 'card_number': rule 'reference'",
        id="event-for-unknown-card",
    ),
    pytest.param(
        _set("offer_events", "offer_id", "O9999"),
        r"offer_events\.parquet, column 'offer_id': rule 'reference'",
        id="event-for-unknown-offer",
    ),
    pytest.param(
        _set("service_events", "post_id", "P99"),
        r"service_events\.parquet, column 'post_id': rule 'reference'",
        id="event-at-unknown-post",
    ),
    pytest.param(
        _set("service_events", "need_id", "astrology"),
        r"service_events\.parquet, column 'need_id': rule 'reference'",
        id="event-for-unknown-need",
    ),
    pytest.param(
        _set("push_events", "event_time", FUTURE),
        r"push_events\.parquet, column 'event_time': rule 'not_future'",
        id="event-in-the-future",
    ),
    pytest.param(
        _set("card_holders", "card_status", "lost"),
        r"card_holders\.parquet, column 'card_status': rule 'allowed'",
        id="value-not-allowed",
    ),
    pytest.param(
        _set("offers", "discount_pct", 140.0),
        r"offers\.parquet, column 'discount_pct': rule 'range'.*<= 100",
        id="value-above-range",
    ),
    pytest.param(
        _set("card_holders", "birth_year", 1850),
        r"card_holders\.parquet, column 'birth_year': rule 'range'.*>= 1900",
        id="value-below-range",
    ),
    pytest.param(
        _set("card_holders", "card_number", "12345-ABCD"),
        r"card_holders\.parquet, column 'card_number': rule 'pattern'",
        id="card-number-with-letters",
    ),
    pytest.param(
        _set("card_holders", "card_number", "12345"),
        r"card_holders\.parquet, column 'card_number': rule 'pattern'",
        id="card-number-text-too-short",
    ),
    pytest.param(
        _set("posts", "country", "Japan"),
        r"posts\.parquet, column 'country': rule 'pattern'",
        id="country-not-two-letters",
    ),
    pytest.param(
        _set("offers", "valid_from", pd.Timestamp("2030-01-01", tz="UTC")),
        r"offers\.parquet, column 'valid_from': rule 'not_future'",
        id="offer-starting-in-the-future",
    ),
]


@pytest.mark.parametrize(("breaker", "message"), BROKEN_FILES)
def test_write_refuses_bad_file_and_keeps_store_unchanged(
    stored: Warehouse,
    tiny: GeneratedWarehouse,
    breaker: Callable,
    message: str,
) -> None:
    tables = _copy(tiny)
    breaker(tables)
    before = _file_bytes(stored)
    fingerprint = stored.fingerprint()

    with pytest.raises(WarehouseValidationError, match=message):
        stored.write_tables(tables, {"note": "refused"})

    assert _file_bytes(stored) == before
    assert stored.fingerprint() == fingerprint


def _file_bytes(warehouse: Warehouse) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(warehouse.directory.iterdir())}


def test_error_names_first_offending_rows(tiny: GeneratedWarehouse) -> None:
    tables = _copy(tiny)
    for row in range(7):
        _set("card_holders", "gender", "?", row=row)(tables)

    with pytest.raises(WarehouseValidationError) as caught:
        Warehouse(Path("/nonexistent")).write_tables(tables)

    error = caught.value
    assert (error.file, error.column, error.rule) == (
        "card_holders.parquet",
        "gender",
        "allowed",
    )
    assert "7 row(s)" in error.detail
    assert [line.split()[:2] for line in error.rows.splitlines()[1:]] == [
        ["row", str(i)] for i in range(5)
    ]


def test_identity_errors_show_positions_not_personal_data(
    tiny: GeneratedWarehouse,
) -> None:
    tables = _copy(tiny)
    tables["identity"] = tables["identity"].copy()
    name = tables["identity"]["name"].iloc[3]
    _set("identity", "name", None, row=3)(tables)
    _set("identity", "email", "someone@example.org", row=1)(tables)

    with pytest.raises(WarehouseValidationError, match="rule 'not_null'") as caught:
        Warehouse(Path("/nonexistent")).write_tables(tables)

    assert "someone@example.org" not in str(caught.value)
    assert str(name) not in str(caught.value)
    assert "positions 3" in caught.value.rows


def test_subset_write_checks_references_against_stored_tables(
    stored: Warehouse, tiny: GeneratedWarehouse
) -> None:
    events = tiny.tables["service_events"].copy()
    events.loc[0, "card_number"] = "0000000000"

    with pytest.raises(WarehouseValidationError, match="rule 'reference'"):
        stored.write_tables({"service_events": events})

    stored.write_tables({"service_events": tiny.tables["service_events"].head(10)})
    assert len(stored.read_table("service_events")) == 10


def test_subset_write_refuses_dropping_cards_that_events_point_at(
    stored: Warehouse, tiny: GeneratedWarehouse
) -> None:
    fewer_cards = tiny.tables["card_holders"].iloc[1:]
    before = _file_bytes(stored)

    with pytest.raises(WarehouseValidationError, match="would be lost"):
        stored.write_tables({"card_holders": fewer_cards})

    assert _file_bytes(stored) == before


def test_refused_write_leaves_no_temporary_files(
    stored: Warehouse, tiny: GeneratedWarehouse
) -> None:
    tables = _copy(tiny)
    _set("offers", "region", "mars")(tables)

    with pytest.raises(WarehouseValidationError):
        stored.write_tables(tables)

    assert not [p for p in stored.directory.iterdir() if p.name.startswith(".")]


INSTANT = pd.Timestamp("2025-03-01T12:00:00Z")
SPELLINGS = [
    pytest.param(pd.Series([pd.Timestamp("2025-03-01 12:00:00")]), id="naive"),
    pytest.param(pd.Series([INSTANT]), id="utc"),
    pytest.param(
        pd.Series([INSTANT.tz_convert("Asia/Taipei")]),
        id="taipei",
    ),
    pytest.param(
        pd.Series([INSTANT.tz_convert("America/Sao_Paulo")]),
        id="sao-paulo",
    ),
    pytest.param(pd.Series(["2025-03-01T20:00:00+08:00"]), id="iso-text-with-offset"),
    pytest.param(pd.Series(["2025-03-01 12:00:00"]), id="iso-text-naive"),
]


@pytest.mark.parametrize("spelling", SPELLINGS)
def test_timestamps_of_the_same_instant_normalize_to_one_utc_value(
    spelling: pd.Series,
) -> None:
    normalized = to_utc(spelling)

    assert str(normalized.dtype) == "datetime64[ns, UTC]"
    assert normalized.iloc[0] == INSTANT


def test_mixed_zones_in_one_column_become_utc() -> None:
    mixed = pd.Series(
        [pd.Timestamp("2025-03-01 12:00:00"), INSTANT.tz_convert("Europe/Berlin")],
        dtype=object,
    )

    assert list(to_utc(mixed)) == [INSTANT, INSTANT]


def test_stored_events_read_back_in_utc_whatever_zone_they_arrived_in(
    stored: Warehouse, tiny: GeneratedWarehouse
) -> None:
    events = tiny.tables["push_events"].copy()
    events["event_time"] = events["event_time"].dt.tz_convert("Asia/Tokyo")
    stored.write_tables({"push_events": events})

    read = stored.read_table("push_events")

    assert str(read["event_time"].dtype) == "datetime64[ns, UTC]"
    assert read["event_time"].equals(tiny.tables["push_events"]["event_time"])


@pytest.mark.parametrize(
    "suffix",
    [pytest.param(".csv", id="csv"), pytest.param(".parquet", id="parquet")],
)
def test_card_numbers_that_lost_leading_zeros_are_padded_back(
    tmp_path: Path, tiny: GeneratedWarehouse, suffix: str
) -> None:
    holders = tiny.tables["card_holders"].copy()
    holders["card_number"] = pd.Series(
        ["0000012345", *holders["card_number"].iloc[1:]], dtype=object
    )
    as_numbers = holders.assign(card_number=holders["card_number"].astype("int64"))
    path = tmp_path / f"card_holders{suffix}"
    if suffix == ".csv":
        as_numbers.to_csv(path, index=False)
    else:
        as_numbers.to_parquet(path, index=False)

    loaded = load_table_file(path)

    assert loaded["card_number"].iloc[0] == "0000012345"
    assert list(loaded["card_number"]) == list(holders["card_number"])


@pytest.mark.parametrize(
    "raw",
    [
        pytest.param(12345, id="int"),
        pytest.param("0000012345", id="string"),
    ],
)
def test_card_number_as_int_or_string_is_the_same_card(
    tiny: GeneratedWarehouse, raw: object
) -> None:
    holders = tiny.tables["card_holders"].head(1).copy()
    holders["card_number"] = pd.Series([raw], dtype=object)

    normalized = normalize_table(CARD_HOLDERS, holders)

    assert normalized["card_number"].iloc[0] == "0000012345"


def test_card_number_as_decimal_is_refused(tiny: GeneratedWarehouse) -> None:
    holders = tiny.tables["card_holders"].copy()
    holders["card_number"] = holders["card_number"].astype("int64").astype(float)

    with pytest.raises(WarehouseValidationError, match=r"card_number': rule 'type'"):
        normalize_table(CARD_HOLDERS, holders)


def test_card_number_too_long_is_refused(tiny: GeneratedWarehouse) -> None:
    tables = _copy(tiny)
    tables["card_holders"]["card_number"] = pd.Series(
        [12345678901, *range(1, len(tables["card_holders"]))], dtype="int64"
    )

    with pytest.raises(WarehouseValidationError, match=r"rule 'type'.*at most 10"):
        Warehouse(Path("/nonexistent")).write_tables(
            {"card_holders": tables["card_holders"]}
        )


def test_validate_command_names_a_stored_file_broken_behind_its_back(
    stored: Warehouse, monkeypatch: pytest.MonkeyPatch
) -> None:
    from typer.testing import CliRunner

    from features.cli import warehouse_app

    monkeypatch.setenv("PRECISION_DATA_DIR", str(stored.directory.parent))
    runner = CliRunner()
    assert runner.invoke(warehouse_app, ["validate"]).exit_code == 0
    offers = pd.read_parquet(stored.path("offers"))
    offers.loc[2, "region"] = "atlantis"
    offers.to_parquet(stored.path("offers"), index=False)

    result = runner.invoke(warehouse_app, ["validate"])

    assert result.exit_code == 1
    assert "offers.parquet, column 'region': rule 'allowed'" in result.output


def test_init_secret_creates_a_private_secret_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from typer.testing import CliRunner

    from features.cli import warehouse_app
    from features.settings import Settings

    monkeypatch.setenv("PRECISION_DATA_DIR", str(tmp_path))
    monkeypatch.delenv("PRECISION_PSEUDONYM_SECRET", raising=False)
    runner = CliRunner()

    first = runner.invoke(warehouse_app, ["init-secret"])
    secret = (tmp_path / ".pseudonym-secret").read_text()
    second = runner.invoke(warehouse_app, ["init-secret"])

    assert (first.exit_code, second.exit_code) == (0, 0)
    assert (tmp_path / ".pseudonym-secret").stat().st_mode & 0o777 == 0o600
    assert (tmp_path / ".pseudonym-secret").read_text() == secret
    assert len(bytes.fromhex(secret.strip())) == 32
    assert Settings().secret_bytes == secret.strip().encode()


def test_failure_while_writing_aside_leaves_store_and_folder_as_they_were(
    stored: Warehouse, tiny: GeneratedWarehouse, monkeypatch: pytest.MonkeyPatch
) -> None:
    before = _file_bytes(stored)
    real_to_parquet = pd.DataFrame.to_parquet
    written: list[object] = []

    def fail_on_third_file(frame: pd.DataFrame, path: object, **options: object):
        written.append(path)
        if len(written) == 3:
            raise OSError("disk full")
        return real_to_parquet(frame, path, **options)

    monkeypatch.setattr(pd.DataFrame, "to_parquet", fail_on_third_file)

    with pytest.raises(OSError, match="disk full"):
        stored.write_tables(_copy(tiny))

    assert _file_bytes(stored) == before

"""Real public data loads into the warehouse schema and passes validation."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from features.importers import (
    REDEMPTION_MIN_RATING,
    TELCO_SERVICES,
    import_movielens,
    import_telco,
    write_imported,
)
from features.schema import ORACLE_NEEDS_FILE
from features.warehouse import Warehouse


@pytest.fixture(scope="module")
def movielens_dir(shared_data_dir: Path) -> Path:
    path = shared_data_dir / "movielens-100k"
    if not (path / "u.data").exists():
        pytest.skip(f"MovieLens-100k is absent from {path}")
    return path


@pytest.fixture(scope="module")
def telco_file(shared_data_dir: Path) -> Path:
    path = shared_data_dir / "telco-customer-churn-ibm" / "Telco-Customer-Churn.csv"
    if not path.exists():
        pytest.skip(f"the IBM Telco customer file is absent: {path}")
    return path


@pytest.fixture(scope="module")
def movielens_tables(movielens_dir: Path) -> tuple[dict[str, pd.DataFrame], dict]:
    return import_movielens(movielens_dir)


@pytest.fixture(scope="module")
def movielens(
    movielens_tables: tuple[dict[str, pd.DataFrame], dict],
    tmp_path_factory: pytest.TempPathFactory,
) -> Warehouse:
    warehouse = Warehouse(tmp_path_factory.mktemp("movielens") / "warehouse")
    write_imported(*movielens_tables, warehouse)
    return warehouse


@pytest.fixture(scope="module")
def telco(telco_file: Path, tmp_path_factory: pytest.TempPathFactory) -> Warehouse:
    warehouse = Warehouse(tmp_path_factory.mktemp("telco") / "warehouse")
    write_imported(*import_telco(telco_file), warehouse)
    return warehouse


def test_movielens_passes_validation_with_every_user_film_and_rating(
    movielens: Warehouse, movielens_dir: Path
) -> None:
    ratings = pd.read_csv(movielens_dir / "u.data", sep="\t", header=None)

    counts = movielens.validate()

    assert counts["card_holders"] == 943
    assert counts["offers"] == 1682
    liked = int((ratings[2] >= REDEMPTION_MIN_RATING).sum())
    assert counts["offer_events"] == len(ratings) + liked
    assert movielens.meta()["source"] == "movielens-100k"


def test_movielens_users_keep_their_leading_zeros_and_demographics(
    movielens: Warehouse,
) -> None:
    holders = movielens.read_table("card_holders").set_index("card_number")

    first = holders.loc["0000000001"]

    assert (first["gender"], first["occupation"]) == ("M", "technician")
    assert first["birth_year"] in (1973, 1974)  # 24 years old when rating in 1997
    assert holders.index.str.fullmatch(r"[0-9]{10}").all()


def test_movielens_ratings_keep_their_times(
    movielens: Warehouse, movielens_dir: Path
) -> None:
    events = movielens.read_table("offer_events")
    clicks = events[events["kind"] == "click"]
    first = pd.read_csv(movielens_dir / "u.data", sep="\t", header=None).iloc[0]

    match = clicks[
        (clicks["card_number"] == f"{first[0]:010d}")
        & (clicks["offer_id"] == f"M{first[1]:04d}")
    ]

    assert match["event_time"].iloc[0] == pd.Timestamp(first[3], unit="s", tz="UTC")
    assert movielens.as_of() > events["event_time"].max()


def test_movielens_films_have_their_first_genre_as_category(
    movielens: Warehouse,
) -> None:
    offers = movielens.read_table("offers").set_index("offer_id")

    assert offers.loc["M0001", "title"] == "Toy Story (1995)"
    assert offers.loc["M0001", "category"] == "animation"
    assert offers["region"].eq("global").all()


def test_telco_passes_validation_with_services_as_needs(telco: Warehouse) -> None:
    counts = telco.validate()
    needs = telco.read_table("need_categories")

    assert counts["card_holders"] == 7043
    assert set(needs["need_id"]) == set(TELCO_SERVICES)
    assert counts["service_events"] > counts["card_holders"]


def test_telco_services_are_dated_within_tenure(
    telco: Warehouse, telco_file: Path
) -> None:
    events = telco.read_table("service_events")
    holders = telco.read_table("card_holders").set_index("card_number")
    customers = pd.read_csv(telco_file)

    issued = holders["issued_at"].reindex(events["card_number"]).to_numpy()
    taken = events.groupby("need_id").size()

    assert (events["event_time"].to_numpy() >= issued).all()
    assert (events["event_time"] <= telco.as_of()).all()
    assert taken["phone_service"] == (customers["PhoneService"] == "Yes").sum()
    assert taken["streaming_tv"] == (customers["StreamingTV"] == "Yes").sum()


def test_telco_seniors_are_born_before_others(telco: Warehouse) -> None:
    holders = telco.read_table("card_holders")

    assert holders["birth_year"].min() >= telco.as_of().year - 81
    assert holders["gender"].isin(["F", "M"]).all()


def test_import_replaces_a_synthetic_warehouse_and_its_oracle(
    movielens_tables: tuple[dict[str, pd.DataFrame], dict],
    small_generated,
    tmp_path: Path,
) -> None:
    from features.generator import write_generated

    warehouse = Warehouse(tmp_path / "warehouse")
    write_generated(small_generated, warehouse)

    write_imported(*movielens_tables, warehouse)

    assert not (warehouse.directory / ORACLE_NEEDS_FILE).exists()
    assert "seed" not in warehouse.meta()
    assert len(warehouse.read_table("card_holders")) == 943

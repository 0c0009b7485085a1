"""Fixtures shared by every test layer."""

from __future__ import annotations

from pathlib import Path

import pytest

from features.generator import GeneratedWarehouse, generate, write_generated
from features.warehouse import Warehouse

SMALL_WAREHOUSE_CARDS = 400
SMALL_WAREHOUSE_SEED = 11
SHARED_DATA_DIR = Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.fixture(scope="session")
def small_generated() -> GeneratedWarehouse:
    """A small synthetic warehouse in memory (400 cards, fixed seed)."""
    return generate(cards=SMALL_WAREHOUSE_CARDS, seed=SMALL_WAREHOUSE_SEED)


@pytest.fixture(scope="session")
def small_warehouse(
    small_generated: GeneratedWarehouse, tmp_path_factory: pytest.TempPathFactory
) -> Warehouse:
    """A small stored warehouse with oracle files; treat it as read-only."""
    warehouse = Warehouse(tmp_path_factory.mktemp("data") / "warehouse")
    write_generated(small_generated, warehouse)
    return warehouse


@pytest.fixture(scope="session")
def shared_data_dir() -> Path:
    """The folder of real public data sets beside the project."""
    if not SHARED_DATA_DIR.is_dir():
        pytest.skip(f"real data folder {SHARED_DATA_DIR} is absent")
    return SHARED_DATA_DIR

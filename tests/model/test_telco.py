"""The Telco check in its quick setting: both models, every service, same run."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from benchmarks.bench_telco import FEATURE_SETS, SERVICES, main, service_taken

TELCO_CSV = Path("telco-customer-churn-ibm") / "Telco-Customer-Churn.csv"


@pytest.fixture(scope="module")
def telco_csv(shared_data_dir: Path) -> Path:
    path = shared_data_dir / TELCO_CSV
    if not path.is_file():
        pytest.skip(f"IBM Telco data is absent: expected {path}")
    return path


@pytest.fixture(scope="module")
def quick_run(
    telco_csv: Path, tmp_path_factory: pytest.TempPathFactory
) -> tuple[pd.DataFrame, dict[str, object]]:
    json_path = tmp_path_factory.mktemp("telco") / "telco.json"
    table = main(["--quick", "--path", str(telco_csv), "--json", str(json_path)])
    return table, json.loads(json_path.read_text(encoding="utf-8"))


@pytest.mark.slow
def test_quick_run_scores_every_service_for_both_models(
    quick_run: tuple[pd.DataFrame, dict[str, object]],
) -> None:
    table, _ = quick_run
    expected = [(fs, s) for fs in FEATURE_SETS for s in [*SERVICES, "macro"]]

    assert list(table.index) == expected
    auc = table[["needs_model_roc_auc", "logistic_roc_auc"]].to_numpy()
    assert np.isfinite(auc).all()
    assert (table["needs_model_seconds"] > 0).all()


@pytest.mark.slow
def test_both_models_find_the_services_well_above_chance(
    quick_run: tuple[pd.DataFrame, dict[str, object]],
) -> None:
    table, _ = quick_run

    for feature_set in FEATURE_SETS:
        macro = table.loc[(feature_set, "macro")]
        assert macro["needs_model_roc_auc"] > 0.75, feature_set
        assert macro["logistic_roc_auc"] > 0.75, feature_set


@pytest.mark.slow
def test_needs_model_propensities_are_calibrated_on_telco(
    quick_run: tuple[pd.DataFrame, dict[str, object]],
) -> None:
    table, _ = quick_run
    without_charges = table.loc["without_charges"].drop(index="macro")

    # A calibrated propensity never does much worse than the service's base rate.
    base_rate_brier = without_charges["positive_rate"] * (
        1 - without_charges["positive_rate"]
    )
    assert (without_charges["needs_model_brier"] < base_rate_brier).all()


@pytest.mark.slow
def test_figures_are_written_as_json(
    quick_run: tuple[pd.DataFrame, dict[str, object]],
) -> None:
    _, figures = quick_run

    table = figures["table"]
    assert isinstance(table, dict)
    assert "without_charges/macro" in table
    assert set(table["published/macro"]) >= {"needs_model_roc_auc", "logistic_roc_auc"}


def test_internet_counts_as_taken_for_any_kind_of_line() -> None:
    customers = pd.DataFrame({"InternetService": ["DSL", "Fiber optic", "No"]})

    assert service_taken(customers, "InternetService").tolist() == [1, 1, 0]

"""One trained run on the small warehouse, shared by the model tests."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from features.feature_tables import build_feature_tables
from features.settings import Settings
from features.warehouse import Warehouse
from training.config import TrainingConfig

TEST_SECRET = "model-tests-secret-0123456789"


def small_config(**overrides) -> TrainingConfig:
    """Few trees: the model layer stays fast."""
    values = {
        "seed": 5,
        "needs": {"n_estimators": 40, "num_leaves": 7},
        "offers": {
            "ranker_n_estimators": 60,
            "ranker_num_leaves": 7,
            "ranker_min_child_samples": 20,
        },
    }
    values.update(overrides)
    return TrainingConfig.model_validate(values)


def weak_config() -> TrainingConfig:
    """One tree per model whose leaves need more rows than exist: flat scores."""
    return small_config(
        needs={"n_estimators": 1, "min_child_samples": 1_000_000},
        offers={"ranker_n_estimators": 1},
    )


@dataclass
class ModelWorkspace:
    """A data folder with the small warehouse, its features and a tracking store."""

    settings: Settings
    tracking_uri: str


@pytest.fixture(scope="session")
def model_workspace(
    small_warehouse: Warehouse, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ModelWorkspace]:
    """Copy the small warehouse, build its features, point MLflow at a temp store."""
    data_dir = tmp_path_factory.mktemp("model-data")
    shutil.copytree(small_warehouse.directory, data_dir / "warehouse")
    settings = Settings(data_dir=data_dir, pseudonym_secret=TEST_SECRET)
    build_feature_tables(
        Warehouse(settings.warehouse_dir), settings.secret_bytes, settings.feature_dir
    )
    uri = f"sqlite:///{(data_dir / 'mlflow.db').resolve()}"
    previous = os.environ.get("MLFLOW_TRACKING_URI")
    os.environ["MLFLOW_TRACKING_URI"] = uri
    yield ModelWorkspace(settings=settings, tracking_uri=uri)
    if previous is None:
        os.environ.pop("MLFLOW_TRACKING_URI", None)
    else:
        os.environ["MLFLOW_TRACKING_URI"] = previous


@pytest.fixture(scope="session")
def trained_run(model_workspace: ModelWorkspace):
    """The first training run of the session (registers version 1 of both)."""
    from training.pipeline import train

    return train(model_workspace.settings, small_config())


@pytest.fixture(scope="session")
def repeated_evaluation(model_workspace: ModelWorkspace, trained_run):
    """The same configuration and data fitted and evaluated again (not logged)."""
    from training.pipeline import fit_and_evaluate

    return fit_and_evaluate(model_workspace.settings, small_config())


@pytest.fixture(scope="session")
def weak_run(model_workspace: ModelWorkspace, trained_run):
    """A deliberately weak run after the first (registers version 2 of both)."""
    from training.pipeline import train

    return train(model_workspace.settings, weak_config())


def data_folder(workspace: ModelWorkspace) -> Path:
    return workspace.settings.data_dir


@pytest.fixture(scope="session")
def make_config():
    """Build a small training configuration with overrides."""
    return small_config


@pytest.fixture(scope="session")
def make_weak_config():
    """Build the deliberately weak training configuration."""
    return weak_config

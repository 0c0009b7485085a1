"""The notebook a data scientist opens first runs on the small data."""

from __future__ import annotations

import os
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

pytestmark = pytest.mark.slow

NOTEBOOK = (
    Path(__file__).resolve().parents[2] / "notebooks" / "explore_latest_run.ipynb"
)


def test_explore_notebook_runs_against_the_latest_run(
    trained_run, model_workspace, monkeypatch
):
    monkeypatch.setenv("PRECISION_DATA_DIR", str(model_workspace.settings.data_dir))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", model_workspace.tracking_uri)
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    client = NotebookClient(
        notebook,
        timeout=300,
        kernel_name="python3",
        resources={"metadata": {"path": str(NOTEBOOK.parents[1])}},
    )
    client.execute(env=dict(os.environ))

    outputs = "".join(
        str(output.get("text", "")) + str(output.get("data", {}).get("text/plain", ""))
        for cell in notebook.cells
        if cell.cell_type == "code"
        for output in cell.get("outputs", [])
    )
    assert trained_run.run_id in outputs
    assert "needs-model" in outputs
    images = [
        output
        for cell in notebook.cells
        if cell.cell_type == "code"
        for output in cell.get("outputs", [])
        if "image/png" in output.get("data", {})
    ]
    assert images

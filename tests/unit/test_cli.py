"""The command line refuses bad options up front and reports product errors briefly."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from precision_cli import app

PROJECT_ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    ("args", "option"),
    [
        pytest.param(["serve", "--port", "99999"], "--port", id="port-too-high"),
        pytest.param(["demo", "--port", "0"], "--port", id="port-zero"),
        pytest.param(["promote", "--tolerance", "-1"], "--tolerance", id="tolerance"),
    ],
)
def test_an_option_out_of_range_is_refused_naming_it(
    args: list[str], option: str
) -> None:
    """A port of 99999 once wrapped round to another port without a word."""
    result = CliRunner().invoke(app, args)

    assert result.exit_code == 2
    assert option in result.output


def test_a_product_error_prints_one_line_not_a_traceback(tmp_path) -> None:
    """Errors a user can fix once came inside 30-line tracebacks."""
    done = subprocess.run(
        [sys.executable, "-c", "import precision_cli; precision_cli.main()", "promote"],
        cwd=PROJECT_ROOT,
        env={"PRECISION_DATA_DIR": str(tmp_path), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )

    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    assert "error: expected a registered model 'needs-model'" in done.stderr


@pytest.mark.parametrize("value", ["yesterday", "2026-13-45", ""])
def test_a_time_that_is_not_one_is_refused_naming_the_value(value: str) -> None:
    """``--as-of yesterday`` once ended in pandas' own parse error."""
    from features.errors import InputError
    from features.times import utc_timestamp

    with pytest.raises(InputError, match=r"expected an ISO 8601 time"):
        utc_timestamp(value)


def test_validating_an_empty_warehouse_fails_and_says_what_to_run(tmp_path) -> None:
    """An empty folder once passed as 'valid: 0 tables' with exit status 0."""
    result = CliRunner().invoke(
        app, ["warehouse", "validate"], env={"PRECISION_DATA_DIR": str(tmp_path)}
    )

    assert result.exit_code == 1
    assert "no warehouse tables" in result.output
    assert "precision warehouse generate" in result.output

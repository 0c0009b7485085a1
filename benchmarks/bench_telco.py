"""The needs model on real data: which services did an IBM Telco customer take?

Each of the nine add-on services (phone, multiple lines, internet, online security,
online backup, device protection, tech support, streaming TV, streaming movies)
stands in for a need category. For each one, both the needs model and the logistic
regression baseline predict whether a customer took it from the customer's
demographics, account facts and the other eight services (the service itself is
left out), on a seeded split stratified by that service. Both models see the same
rows and the same features in the same run; the script prints ROC-AUC per service,
the macro average, Brier scores and the time each model took.

Two feature sets run side by side. ``published`` uses every column as published;
there the monthly and total charges are close to a sum of the prices of the
services taken, so the service left out can be worked out by arithmetic, which a
linear model does exactly. ``without_charges`` drops both charges and asks the
harder question: who takes a service, given who they are and what else they took.

The needs model runs with one fixed small-data setting, chosen before looking at
the test part: up to 1,000 trees, stopped early on the calibration slice carved
from the training part (never on the test part).

Run ``python -m benchmarks.bench_telco`` (``--quick`` for the reduced CI setting,
``--path`` for another copy of the CSV, ``--json PATH`` to keep the figures).
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.model_selection import train_test_split

from training.baselines import LogisticNeedsBaseline
from training.needs import NeedsModel
from training.needs_metrics import brier, roc_auc

logger = logging.getLogger(__name__)

DEFAULT_CSV = (
    Path(__file__).resolve().parents[2]
    / "shared"
    / "data"
    / "telco-customer-churn-ibm"
    / "Telco-Customer-Churn.csv"
)
# Service column -> how a customer counts as having taken it.
SERVICES = {
    "PhoneService": "Yes",
    "MultipleLines": "Yes",
    "InternetService": "any",
    "OnlineSecurity": "Yes",
    "OnlineBackup": "Yes",
    "DeviceProtection": "Yes",
    "TechSupport": "Yes",
    "StreamingTV": "Yes",
    "StreamingMovies": "Yes",
}
DEMOGRAPHICS = ("gender", "SeniorCitizen", "Partner", "Dependents")
ACCOUNT = (
    "tenure",
    "Contract",
    "PaperlessBilling",
    "PaymentMethod",
    "MonthlyCharges",
    "TotalCharges",
)
CHARGES = ("MonthlyCharges", "TotalCharges")
FEATURE_SETS: dict[str, tuple[str, ...]] = {
    "published": (),
    "without_charges": CHARGES,
}
EARLY_STOPPING_ROUNDS = 50
FULL_TREES = 1000
QUICK_ROWS = 2000
QUICK_TREES = 150


@dataclass(frozen=True)
class TelcoSettings:
    """One run of the check.

    Attributes:
        path: the Telco customer CSV.
        seed: seed of the split and of both models.
        test_size: share of customers held out.
        rows: customers used (a seeded sample); None for all.
        n_estimators: boosting rounds of the needs model at most.
    """

    path: Path = DEFAULT_CSV
    seed: int = 42
    test_size: float = 0.25
    rows: int | None = None
    n_estimators: int = FULL_TREES


def load_customers(path: Path, rows: int | None = None, seed: int = 42) -> pd.DataFrame:
    """Read the Telco CSV, with total charges as numbers (blank means missing)."""
    customers = pd.read_csv(path, dtype={"customerID": str})
    customers["TotalCharges"] = pd.to_numeric(
        customers["TotalCharges"], errors="coerce"
    )
    if rows is not None and rows < len(customers):
        customers = customers.sample(n=rows, random_state=seed)
    return customers.reset_index(drop=True)


def service_taken(customers: pd.DataFrame, service: str) -> pd.Series:
    """Whether each customer took the service, as 0/1."""
    values = customers[service].astype(str)
    taken = values != "No" if SERVICES[service] == "any" else values == "Yes"
    return taken.astype(int).rename(service)


def features_without(
    customers: pd.DataFrame, service: str, dropped: tuple[str, ...] = ()
) -> pd.DataFrame:
    """Demographics, account facts and every service except ``service``.

    Args:
        customers: the Telco customers.
        service: the service to leave out.
        dropped: further columns to leave out (for example the charges).
    """
    others = [name for name in SERVICES if name != service]
    columns = [c for c in (*DEMOGRAPHICS, *ACCOUNT, *others) if c not in dropped]
    features = customers[columns].copy()
    features["SeniorCitizen"] = features["SeniorCitizen"].astype(float)
    return features


def evaluate_service(
    customers: pd.DataFrame,
    service: str,
    settings: TelcoSettings,
    dropped: tuple[str, ...] = (),
) -> dict[str, float]:
    """Fit both models for one service and score them on the held-out customers."""
    X = features_without(customers, service, dropped)
    y = service_taken(customers, service)
    X_train, X_test, y_train, y_test = train_test_split(
        X, y, test_size=settings.test_size, random_state=settings.seed, stratify=y
    )
    Y_train = y_train.to_frame()

    models = {
        "needs_model": NeedsModel(
            n_estimators=settings.n_estimators,
            early_stopping_rounds=EARLY_STOPPING_ROUNDS,
            random_state=settings.seed,
        ),
        "logistic": LogisticNeedsBaseline(),
    }
    row: dict[str, float] = {"positive_rate": float(y.mean())}
    for name, model in models.items():
        started = time.perf_counter()
        scores = model.fit(X_train, Y_train).predict_proba(X_test)[service]
        row[f"{name}_seconds"] = time.perf_counter() - started
        row[f"{name}_roc_auc"] = roc_auc(y_test, scores)
        row[f"{name}_brier"] = brier(y_test, scores)
    return row


def run_telco_check(settings: TelcoSettings) -> pd.DataFrame:
    """ROC-AUC and Brier score per service for both models, plus macro rows.

    Returns:
        Indexed by (feature set, service), with a ``"macro"`` service per feature
        set (mean over services; seconds are summed); columns are
        ``positive_rate`` and, for ``needs_model`` and ``logistic``,
        ``_roc_auc``, ``_brier`` and ``_seconds``.
    """
    customers = load_customers(settings.path, settings.rows, settings.seed)
    logger.info("evaluating %d services on %d customers", len(SERVICES), len(customers))
    tables = {
        name: _feature_set_table(customers, settings, dropped)
        for name, dropped in FEATURE_SETS.items()
    }
    table = pd.concat(tables, names=["feature_set", "service"])
    return table


def _feature_set_table(
    customers: pd.DataFrame, settings: TelcoSettings, dropped: tuple[str, ...]
) -> pd.DataFrame:
    table = pd.DataFrame(
        {
            service: evaluate_service(customers, service, settings, dropped)
            for service in SERVICES
        }
    ).T

    macro = table.mean()
    seconds = [c for c in table.columns if c.endswith("_seconds")]
    macro[seconds] = table[seconds].sum()
    table.loc["macro"] = macro
    return table


def format_table(table: pd.DataFrame, settings: TelcoSettings) -> str:
    """The comparison as plain text, one block per feature set."""
    lines = [
        f"IBM Telco: predict each service from the others "
        f"({settings.rows or 'all'} customers, test {settings.test_size:.0%}, "
        f"seed {settings.seed}, needs model up to {settings.n_estimators} trees "
        f"with early stopping)"
    ]
    for feature_set, block in table.groupby(level="feature_set", sort=False):
        lines += [
            "",
            f"features: {feature_set}",
            f"{'service':<18}{'rate':>7}{'needs AUC':>11}{'logit AUC':>11}"
            f"{'needs Brier':>13}{'logit Brier':>13}",
        ]
        for (_, service), row in block.iterrows():
            lines.append(
                f"{service!s:<18}{row['positive_rate']:>7.3f}"
                f"{row['needs_model_roc_auc']:>11.4f}{row['logistic_roc_auc']:>11.4f}"
                f"{row['needs_model_brier']:>13.4f}{row['logistic_brier']:>13.4f}"
            )
        macro = block.loc[(feature_set, "macro")]
        lines.append(
            f"time: needs model {macro['needs_model_seconds']:.1f} s, logistic "
            f"regression {macro['logistic_seconds']:.1f} s (fit + predict, all "
            "services)"
        )
    return "\n".join(lines)


def parse_settings(argv: list[str] | None = None) -> tuple[TelcoSettings, Path | None]:
    """Settings and the optional JSON output path from the command line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--path", type=Path, default=DEFAULT_CSV, help="Telco CSV")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--test-size", type=float, default=0.25)
    parser.add_argument(
        "--quick",
        action="store_true",
        help=f"{QUICK_ROWS} customers and {QUICK_TREES} trees (CI setting)",
    )
    parser.add_argument("--json", type=Path, default=None, help="write figures here")
    args = parser.parse_args(argv)
    settings = TelcoSettings(
        path=args.path,
        seed=args.seed,
        test_size=args.test_size,
        rows=QUICK_ROWS if args.quick else None,
        n_estimators=QUICK_TREES if args.quick else FULL_TREES,
    )
    return settings, args.json


def main(argv: list[str] | None = None) -> pd.DataFrame:
    """Run the check and print the table."""
    settings, json_path = parse_settings(argv)
    if not settings.path.is_file():
        raise SystemExit(
            f"expected the IBM Telco CSV at {settings.path}, found nothing; "
            "pass --path to a copy of Telco-Customer-Churn.csv"
        )
    table = run_telco_check(settings)
    print(format_table(table, settings))
    if json_path is not None:
        figures = {"settings": {**vars(settings), "path": str(settings.path)}}
        flat = table.copy()
        flat.index = [f"{a}/{b}" for a, b in flat.index]
        figures["table"] = json.loads(flat.to_json(orient="index"))
        json_path.write_text(json.dumps(figures, indent=2), encoding="utf-8")
    return table


if __name__ == "__main__":
    np.seterr(all="ignore")
    main()

"""MLflow tracking, the model registry and the promotion gate.

The tracking store defaults to SQLite in the data folder (``Settings.mlflow_uri``)
with artifacts under ``<data_dir>/mlartifacts``; ``MLFLOW_TRACKING_URI`` points both
elsewhere. Models are logged as pyfunc models wrapping the fitted objects, and
registered as :data:`NEEDS_MODEL` and :data:`OFFER_MODEL`.

The alias :data:`CHAMPION` moves only through :func:`promote`: a version becomes
champion when its run finished and its primary holdout metric is not worse than the
champion's on the same holdout (same warehouse fingerprint and window), within a
tolerance. Each decision is written to the version's tags and to the log.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlflow
import mlflow.pyfunc
import pandas as pd
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException
from mlflow.models import infer_signature

from features.errors import NotFoundError, NotReadyError
from features.settings import Settings

logger = logging.getLogger(__name__)

EXPERIMENT_NAME = "precision-outreach"
NEEDS_MODEL = "needs-model"
OFFER_MODEL = "offer-model"
MODEL_NAMES = (NEEDS_MODEL, OFFER_MODEL)
CHAMPION = "champion"
PRIMARY_METRICS = {NEEDS_MODEL: "needs.macro.roc_auc", OFFER_MODEL: "offers.ndcg_at_10"}

# Run tags that define "the same holdout".
TAG_FINGERPRINT = "data.fingerprint"
TAG_HOLDOUT = "holdout.window"
TAG_RUN_COMPLETE = "run.complete"
TAG_DECISION = "promotion.decision"
TAG_REASON = "promotion.reason"
# Metrics of the current champion re-evaluated inside a candidate run.
CHAMPION_EVAL_PREFIX = "champion_eval."


def tracking_uri(settings: Settings) -> str:
    """``MLFLOW_TRACKING_URI`` when set, else SQLite in the data folder."""
    return os.environ.get("MLFLOW_TRACKING_URI") or settings.mlflow_uri


def artifact_root(settings: Settings) -> str:
    """Where runs of the default experiment keep their artifacts."""
    return (settings.data_dir / "mlartifacts").resolve().as_uri()


def use_tracking(settings: Settings) -> MlflowClient:
    """Point MLflow at the product's tracking store and return a client.

    Creates the data folder (for the SQLite file) and the experiment on first use.
    """
    uri = tracking_uri(settings)
    if uri.startswith("sqlite:///"):
        Path(uri.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)

    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    if client.get_experiment_by_name(EXPERIMENT_NAME) is None:
        client.create_experiment(
            EXPERIMENT_NAME, artifact_location=artifact_root(settings)
        )
    mlflow.set_experiment(EXPERIMENT_NAME)
    return client


class FittedModelWrapper(mlflow.pyfunc.PythonModel):
    """A pyfunc model holding one fitted product model.

    ``predict`` returns the offer model's ``predict_frame`` output, or the needs
    model's propensities as ``p_<need_id>`` columns. Callers that need the full API
    unwrap it with ``unwrap_python_model().fitted``.

    Args:
        fitted: a fitted :class:`~training.needs.NeedsModel` or
            :class:`~training.offers.OfferModel`.
    """

    def __init__(self, fitted: Any) -> None:
        self.fitted = fitted

    # Untyped on purpose: MLflow reads type hints as an input schema.
    def predict(self, context, model_input, params=None):
        """Score a frame with the wrapped model."""
        return predict_frame(self.fitted, pd.DataFrame(model_input))


def predict_frame(fitted: Any, frame: pd.DataFrame) -> pd.DataFrame:
    """The pyfunc output of a fitted product model for one input frame."""
    if hasattr(fitted, "predict_frame"):
        return fitted.predict_frame(frame)
    return fitted.predict_proba(frame).add_prefix("p_").reset_index(drop=True)


def pip_requirements() -> list[str]:
    """Pinned requirements of the pyfunc models, read from the installed packages."""
    from importlib.metadata import PackageNotFoundError, version

    pinned = []
    for package in (
        "mlflow",
        "lightgbm",
        "implicit",
        "scikit-learn",
        "pandas",
        "numpy",
    ):
        try:
            pinned.append(f"{package}=={version(package)}")
        except PackageNotFoundError:  # pragma: no cover - every one is a dependency
            pinned.append(package)
    return pinned


def log_fitted_model(
    fitted: Any, artifact_name: str, input_example: pd.DataFrame
) -> str:
    """Log ``fitted`` as a pyfunc model of the active run with a signature.

    Args:
        fitted: the product model; must offer ``predict_frame``.
        artifact_name: the model's name within the run.
        input_example: a few rows of model input (pseudonymised; no card numbers).

    Returns:
        The URI of the logged model.
    """
    output = predict_frame(fitted, input_example)
    signature = infer_signature(input_example, output)
    info = mlflow.pyfunc.log_model(
        name=artifact_name,
        python_model=FittedModelWrapper(fitted),
        signature=signature,
        input_example=input_example,
        pip_requirements=pip_requirements(),
    )
    return info.model_uri


def register(model_uri: str, model_name: str, run_id: str) -> str:
    """Register a logged model under ``model_name``; returns the new version."""
    version = mlflow.register_model(model_uri, model_name, tags={"run_id": run_id})
    logger.info(
        "registered %s version %s from run %s", model_name, version.version, run_id
    )
    return str(version.version)


@dataclass(frozen=True)
class PromotionDecision:
    """Outcome of one promotion attempt."""

    model_name: str
    version: str
    promoted: bool
    reason: str
    candidate_metric: float | None = None
    champion_version: str | None = None
    champion_metric: float | None = None


def promote(
    model_name: str,
    settings: Settings,
    version: str | None = None,
    tolerance: float = 0.005,
) -> PromotionDecision:
    """Move the ``champion`` alias to a version that is not worse than the champion.

    Args:
        model_name: :data:`NEEDS_MODEL` or :data:`OFFER_MODEL`.
        settings: locate the tracking store.
        version: the candidate; default the newest version whose run completed.
        tolerance: how far below the champion's primary metric the candidate may be.

    Returns:
        The decision; the alias moved only when ``promoted`` is true.

    Raises:
        NotFoundError: when the model or the version is not registered.
    """
    client = use_tracking(settings)
    candidate = _candidate_version(client, model_name, version)
    decision = _decide(client, model_name, candidate, tolerance)

    if decision.promoted:
        client.set_registered_model_alias(model_name, CHAMPION, decision.version)
    client.set_model_version_tag(
        model_name,
        decision.version,
        TAG_DECISION,
        "promoted" if decision.promoted else "refused",
    )
    client.set_model_version_tag(
        model_name, decision.version, TAG_REASON, decision.reason
    )
    run_id = client.get_model_version(model_name, decision.version).run_id
    if run_id:
        client.set_tag(
            run_id,
            f"{TAG_DECISION}.{model_name}",
            f"{'promoted' if decision.promoted else 'refused'}: {decision.reason}",
        )
    logger.info(
        "%s version %s %s: %s",
        model_name,
        decision.version,
        "promoted to champion" if decision.promoted else "not promoted",
        decision.reason,
    )
    return decision


def _candidate_version(client: MlflowClient, model_name: str, version: str | None):
    """The model version to consider for promotion."""
    versions = _versions(client, model_name)
    if version is not None:
        chosen = [v for v in versions if str(v.version) == str(version)]
        if not chosen:
            raise NotFoundError(
                f"expected a registered version of {model_name}; got {version!r}, "
                f"known: {[v.version for v in versions]}; pass one of those"
            )
        return chosen[0]

    complete = [v for v in versions if _run_complete(client, v.run_id)]
    if not complete:
        raise NotFoundError(
            f"expected a version of {model_name} from a completed training run; "
            "found none; run 'precision train' first"
        )
    return max(complete, key=lambda v: int(v.version))


def _versions(client: MlflowClient, model_name: str) -> list:
    """Every registered version of a model."""
    versions = list(client.search_model_versions(f"name = '{model_name}'"))
    if not versions:
        raise NotFoundError(
            f"expected a registered model {model_name!r}; it has no versions in "
            "the tracking store; run 'precision train' first"
        )
    return versions


def _run_complete(client: MlflowClient, run_id: str | None) -> bool:
    """Whether a run finished and marked itself complete."""
    if not run_id:
        return False
    run = client.get_run(run_id)
    return (
        run.info.status == "FINISHED" and run.data.tags.get(TAG_RUN_COMPLETE) == "true"
    )


def _decide(
    client: MlflowClient, model_name: str, candidate: Any, tolerance: float
) -> PromotionDecision:
    """Compare a candidate version with the champion on the same holdout."""
    version = str(candidate.version)
    metric = PRIMARY_METRICS[model_name]
    if not _run_complete(client, candidate.run_id):
        return PromotionDecision(
            model_name, version, False, "its training run failed or did not finish"
        )
    candidate_run = client.get_run(candidate.run_id)
    candidate_value = candidate_run.data.metrics.get(metric)
    if candidate_value is None:
        return PromotionDecision(
            model_name, version, False, f"its run logged no {metric}"
        )

    champion = _champion_or_none(client, model_name)
    if champion is None:
        return PromotionDecision(
            model_name, version, True, "first version to be promoted", candidate_value
        )
    if str(champion.version) == version:
        return PromotionDecision(
            model_name,
            version,
            False,
            "already champion",
            candidate_value,
            version,
            candidate_value,
        )

    champion_value, basis = _champion_metric(client, candidate_run, champion, metric)
    if champion_value is None:
        return PromotionDecision(
            model_name,
            version,
            False,
            f"champion version {champion.version} was evaluated on another holdout "
            "(different data fingerprint or window); retrain so both are compared on "
            "the same holdout",
            candidate_value,
            str(champion.version),
        )

    promoted = candidate_value >= champion_value - tolerance
    comparison = ">=" if promoted else "<"
    reason = (
        f"{metric} {candidate_value:.4f} {comparison} champion v{champion.version} "
        f"{champion_value:.4f} - tolerance {tolerance:g} ({basis})"
    )
    return PromotionDecision(
        model_name,
        version,
        promoted,
        reason,
        candidate_value,
        str(champion.version),
        champion_value,
    )


def _champion_or_none(client: MlflowClient, model_name: str):
    """The champion version, or ``None`` when no version holds the alias."""
    try:
        return client.get_model_version_by_alias(model_name, CHAMPION)
    except MlflowException:
        return None


def _champion_metric(
    client: MlflowClient, candidate_run: Any, champion: Any, metric: str
) -> tuple[float | None, str]:
    """The champion's metric on the candidate's holdout, and where it came from."""
    tags = candidate_run.data.tags
    champion_run = client.get_run(champion.run_id) if champion.run_id else None
    if champion_run is not None and all(
        champion_run.data.tags.get(tag) == tags.get(tag) and tags.get(tag)
        for tag in (TAG_FINGERPRINT, TAG_HOLDOUT)
    ):
        return champion_run.data.metrics.get(metric), "same holdout and data"

    evaluated_version = tags.get(f"{CHAMPION_EVAL_PREFIX}{champion.name}.version")
    if evaluated_version == str(champion.version):
        value = candidate_run.data.metrics.get(f"{CHAMPION_EVAL_PREFIX}{metric}")
        return value, "champion re-evaluated on the candidate's holdout"
    return None, ""


def load_champion(model_name: str, settings: Settings) -> tuple[Any, str]:
    """Load the fitted object behind the ``champion`` alias.

    Args:
        model_name: :data:`NEEDS_MODEL` or :data:`OFFER_MODEL`.
        settings: locate the tracking store.

    Returns:
        The fitted :class:`~training.needs.NeedsModel` or
        :class:`~training.offers.OfferModel` and its registry version.

    Raises:
        NotReadyError: when no version is champion yet.
    """
    client = use_tracking(settings)
    champion = _champion_or_none(client, model_name)
    if champion is None:
        raise NotReadyError(
            f"expected a champion version of {model_name}; none is set in "
            f"{tracking_uri(settings)}; run 'precision train' then 'precision promote'"
        )
    loaded = mlflow.pyfunc.load_model(f"models:/{model_name}@{CHAMPION}")
    return loaded.unwrap_python_model().fitted, str(champion.version)


def champion_version(model_name: str, settings: Settings) -> str | None:
    """The version holding the ``champion`` alias, or ``None``."""
    champion = _champion_or_none(use_tracking(settings), model_name)
    return None if champion is None else str(champion.version)

"""Typed training configuration, read from an optional YAML file.

Every value has a default that trains both models on the demo warehouse in well
under a minute. A YAML file overrides any subset; unknown keys are refused so that a
typo fails loudly instead of being ignored. The flattened configuration is logged as
MLflow parameters on every training run.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Literal

import pandas as pd
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from features.errors import ConfigurationError
from features.schema import OFFER_EVENT_KINDS

NEEDS_SERVICE = "needs_v1"
OFFERS_SERVICE = "offers_v1"


class _Strict(BaseModel):
    """A config section that refuses unknown keys."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class WindowConfig(_Strict):
    """The time-based split: train before the cut-off, evaluate after it."""

    cutoff: datetime | None = Field(
        default=None,
        description="Start of the holdout; default: the warehouse's as_of minus "
        "horizon_days.",
    )
    horizon_days: int = Field(default=30, ge=1, le=365)
    label_windows: int = Field(
        default=3,
        ge=1,
        le=24,
        description="Monthly label windows before the cut-off used to train the "
        "needs model.",
    )

    def resolve_cutoff(self, as_of: pd.Timestamp) -> pd.Timestamp:
        """The cut-off as a UTC timestamp, defaulting to ``as_of - horizon``."""
        if self.cutoff is None:
            return as_of - pd.Timedelta(days=self.horizon_days)
        stamp = pd.Timestamp(self.cutoff)
        return (
            stamp.tz_localize("UTC")
            if stamp.tzinfo is None
            else stamp.tz_convert("UTC")
        )

    @property
    def horizon(self) -> timedelta:
        """Length of one label window."""
        return timedelta(days=self.horizon_days)


class NeedsConfig(_Strict):
    """Hyperparameters of the needs model (LightGBM per need, then calibration)."""

    # Chosen on the last label window before the cut-off: shallow trees with many
    # rows per leaf, and Platt scaling, which keeps the ranking that isotonic
    # calibration flattens into ties (macro ROC-AUC 0.762 against 0.753).
    n_estimators: int = Field(default=200, ge=1)
    learning_rate: float = Field(default=0.05, gt=0, le=1)
    num_leaves: int = Field(default=4, ge=2)
    min_child_samples: int = Field(default=200, ge=1)
    calibration: Literal["isotonic", "sigmoid"] = "sigmoid"


class OffersConfig(_Strict):
    """Hyperparameters of the offer model: candidate stage and re-ranker."""

    candidate_model: Literal["als", "ease"] = "ease"
    event_weights: dict[str, float] = Field(
        default_factory=lambda: {"impression": 0.0, "click": 1.0, "redemption": 2.0}
    )
    als_factors: int = Field(default=32, ge=1)
    als_iterations: int = Field(default=15, ge=1)
    als_regularization: float = Field(default=0.05, ge=0)
    als_alpha: float = Field(default=2.0, gt=0)
    ease_lambda: float = Field(default=200.0, gt=0)
    n_candidates: int = Field(default=80, ge=1)
    min_history: int = Field(
        default=3,
        ge=0,
        description="Cards with fewer interactions get popular and segment offers "
        "topped up to n_candidates.",
    )
    ranker_windows: int = Field(
        default=3,
        ge=1,
        description="Monthly label windows before the cut-off whose candidates the "
        "re-ranker learns from (at most window.label_windows).",
    )
    ranker_n_estimators: int = Field(default=300, ge=1)
    ranker_learning_rate: float = Field(default=0.05, gt=0, le=1)
    ranker_num_leaves: int = Field(default=15, ge=2)
    ranker_min_child_samples: int = Field(default=50, ge=1)

    @field_validator("event_weights")
    @classmethod
    def _known_kinds(cls, weights: dict[str, float]) -> dict[str, float]:
        unknown = sorted(set(weights) - set(OFFER_EVENT_KINDS))
        if unknown:
            raise ValueError(
                f"event_weights expects kinds {list(OFFER_EVENT_KINDS)}; got "
                f"{unknown}; remove or rename them"
            )
        if any(weight < 0 for weight in weights.values()):
            raise ValueError("event_weights must be non-negative; fix the values")
        return weights


class SamplingConfig(_Strict):
    """Seeded samples that bound a run's time and memory on a large membership.

    Each cap lies above what the demo warehouse reaches (20,000 cards, so at most
    60,000 needs training rows over three label windows and about 3,300 engaged
    card holders per window), so nothing is sampled there. A sample is drawn with
    the run's seed, and the sizes before and after are logged as MLflow
    parameters (``sampled.<what>.available`` and ``.used``).
    """

    ranker_cards: int | None = Field(
        default=10_000,
        ge=1,
        description="Card holders per re-ranker window whose candidates the "
        "re-ranker learns from, drawn from those who engaged in the window and are "
        "among the needs model's training cards, whose out-of-fold propensities "
        "exist (None: all).",
    )
    holdout_cards: int | None = Field(
        default=200_000,
        ge=1,
        description="Card holders of the holdout on whom the needs model and its "
        "baselines are scored; the offer evaluation draws from them (None: all).",
    )
    evaluation_cards: int | None = Field(
        default=20_000,
        ge=1,
        description="Card holders with an engagement in the holdout on whom the "
        "offer model and its baselines are scored (None: all).",
    )
    baseline_rows: int | None = Field(
        default=60_000,
        ge=1,
        description="Training rows the logistic-regression needs baseline is "
        "fitted on (None: all).",
    )


class TrainingConfig(_Strict):
    """Everything a training run depends on besides the data."""

    seed: int = 42
    k: int = Field(default=10, ge=1, le=100)
    promotion_tolerance: float = Field(
        default=0.005,
        ge=0,
        description="How much lower the candidate's primary metric may be than the "
        "champion's on the same holdout and still be promoted.",
    )
    max_training_cards: int | None = Field(
        default=50_000,
        ge=1,
        description="Sample at most this many cards per label window of the needs "
        "model; the out-of-fold propensities of the re-ranker windows come from "
        "the same cards (None: all).",
    )
    sampling: SamplingConfig = Field(default_factory=SamplingConfig)
    window: WindowConfig = Field(default_factory=WindowConfig)
    needs: NeedsConfig = Field(default_factory=NeedsConfig)
    offers: OffersConfig = Field(default_factory=OffersConfig)

    def flat_params(self) -> dict[str, str]:
        """The configuration as flat ``section.key`` strings for MLflow params."""
        return {key: str(value) for key, value in _flatten(self.model_dump()).items()}


def load_config(path: Path | None = None, **overrides: Any) -> TrainingConfig:
    """Read the training configuration.

    Args:
        path: a YAML file with any subset of the fields; ``None`` for defaults.
        **overrides: top-level fields set on top of the file (e.g. ``seed=7``).

    Returns:
        The validated configuration.

    Raises:
        ConfigurationError: when the file is missing, not YAML or has a bad field.
    """
    values: dict[str, Any] = {}
    if path is not None:
        values = _read_yaml(Path(path))
    values.update({key: value for key, value in overrides.items() if value is not None})
    try:
        return TrainingConfig.model_validate(values)
    except ValidationError as error:
        source = str(path) if path else "the defaults"
        raise ConfigurationError(
            f"training configuration from {source} is invalid; expected the fields "
            f"of TrainingConfig; got:\n{error}\nfix or remove the named fields"
        ) from error


def _read_yaml(path: Path) -> dict[str, Any]:
    """The mapping stored in a YAML file."""
    if not path.exists():
        raise ConfigurationError(
            f"training configuration {path} does not exist; pass an existing YAML "
            "file or leave the option out for the defaults"
        )
    try:
        loaded = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as error:
        raise ConfigurationError(
            f"{path} is not valid YAML ({error}); fix the syntax"
        ) from error
    if not isinstance(loaded, dict):
        raise ConfigurationError(
            f"{path} must hold a mapping of fields; got {type(loaded).__name__}; "
            "write 'key: value' lines"
        )
    return loaded


def _flatten(values: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested dictionaries as one level with dotted keys."""
    flat: dict[str, Any] = {}
    for key, value in values.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(_flatten(value, prefix=f"{name}."))
        else:
            flat[name] = value
    return flat

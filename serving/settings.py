"""Typed settings of the service; reading them has no side effects."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from features.settings import Settings


class ServingSettings(BaseSettings):
    """How the service runs, whom it lets in and what it may reveal.

    Every field can be set from the environment with the ``PRECISION_SERVING_``
    prefix, for example ``PRECISION_SERVING_K_ANONYMITY=20``. The data folder and
    the pseudonym secret come from :class:`features.settings.Settings`.
    """

    model_config = SettingsConfigDict(env_prefix="PRECISION_SERVING_", extra="forbid")

    api_keys_file: Path | None = Field(
        default=None,
        description="Hashed API keys with roles; <data_dir>/api_keys.json when unset.",
    )
    max_cards: int = Field(
        default=1000, ge=1, le=100_000, description="Most cards in one request."
    )
    max_k: int = Field(default=50, ge=1, le=500, description="Most offers per card.")
    k_anonymity: int = Field(
        default=10,
        ge=2,
        description="Smallest group a segment preview may show as a number.",
    )
    feature_cache_seconds: float = Field(
        default=30.0,
        ge=0.0,
        description=(
            "How long online features of a card may be reused before the online "
            "store is read again; 0 turns the cache off."
        ),
    )
    feature_cache_size: int = Field(
        default=200_000, ge=0, description="Most cards kept in the feature cache."
    )
    n_candidates: int = Field(
        default=100, ge=1, le=2000, description="Offer candidates per card."
    )
    offers_at: str | None = Field(
        default=None,
        description=(
            "When offers are checked for validity: an ISO time, 'now' for the wall "
            "clock, or unset for the time the warehouse data ends (as batch "
            "scoring does)."
        ),
    )
    request_timeout: float = Field(
        default=5.0,
        gt=0.0,
        description=(
            "Seconds before BentoML gives up on a request; BentoML keeps each "
            "request's objects alive until this timer fires, so short is cheap."
        ),
    )
    freeze_gc: bool = Field(
        default=True,
        description=(
            "Move the objects alive after start-up out of the garbage collector's "
            "reach and raise its thresholds, which removes most latency spikes."
        ),
    )
    host: str = Field(default="127.0.0.1", description="Address the service binds.")
    port: int = Field(default=3000, ge=1, le=65535, description="Port of the service.")

    def keys_path(self, settings: Settings) -> Path:
        """The API key file, inside the data folder unless configured."""
        if self.api_keys_file is not None:
            return self.api_keys_file
        return settings.data_dir / "api_keys.json"
